//! The `mtg-multi` binary.

use std::process::ExitCode;

use clap::Parser;
use mtg_app::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => mtg_app::run::run(&config),
        Command::GenerateSecret { hex, hostname } => {
            match mtg_app::secrets::generate(&hostname, &mut rand::rng()) {
                Ok(secret) => {
                    println!("{}", if hex { secret.to_hex() } else { secret.to_base64url() });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mtg-multi: invalid hostname {hostname:?}: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
