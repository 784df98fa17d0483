//! The `mtg-multi` binary.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mtg_app::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap prints them to stdout.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mtg-multi: {}", mtg_app::cli::error_line(&e));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run { config } => mtg_app::run::run(&config),
        Command::SimpleRun(flags) => match mtg_app::config::Config::from_toml_str(&flags.to_config_text()) {
            Ok(loaded) => mtg_app::run::serve_config(loaded, None),
            Err(e) => {
                eprintln!("mtg-multi: {e}");
                ExitCode::from(2)
            }
        },
        Command::Access { ipv4, ipv6, port, hex, qr, config } => {
            let options = mtg_app::access::AccessOptions {
                ipv4: ipv4.map(std::net::IpAddr::V4),
                ipv6: ipv6.map(std::net::IpAddr::V6),
                port,
                hex,
            };
            access(&config, &options, qr)
        }
        Command::Doctor { skip_native_check, config } => {
            let options = mtg_app::doctor::DoctorOptions { skip_native_check, ..Default::default() };
            ExitCode::from(mtg_app::doctor::doctor(&config, &options, &mut std::io::stdout().lock()))
        }
        Command::Healthcheck { timeout, config } => {
            healthcheck(&config, std::time::Duration::from_secs(timeout))
        }
        Command::Completions { shell } => {
            match mtg_app::cli::completions(shell, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mtg-multi: cannot write the completions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Manpage { verb } => {
            match mtg_app::cli::manpage(verb.as_deref(), &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mtg-multi: {e}");
                    ExitCode::from(2)
                }
            }
        }
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

fn healthcheck(path: &std::path::Path, timeout: std::time::Duration) -> ExitCode {
    let loaded = match mtg_app::config::Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("mtg-multi: {e}");
            return ExitCode::from(2);
        }
    };
    let problems = mtg_app::healthcheck::check(&loaded.config, timeout);
    for problem in &problems {
        eprintln!("mtg-multi: unhealthy: {problem}");
    }
    if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn access(path: &std::path::Path, options: &mtg_app::access::AccessOptions, qr: bool) -> ExitCode {
    let loaded = match mtg_app::config::Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("mtg-multi: {e}");
            return ExitCode::from(2);
        }
    };
    let access = match mtg_app::access::access_detecting(&loaded.config, options) {
        Ok(access) => access,
        Err(e) => {
            eprintln!("mtg-multi: {e}");
            return ExitCode::from(2);
        }
    };
    // Serialising plain structs of strings cannot fail.
    println!("{}", serde_json::to_string_pretty(&access).unwrap_or_default());
    if qr {
        for (name, links) in &access.users {
            for l in [&links.ipv4, &links.ipv6].into_iter().flatten() {
                match mtg_app::access::qr_text(&l.tg_url) {
                    Ok(text) => println!("\n{name} ({}):\n{text}", l.ip),
                    Err(e) => eprintln!("mtg-multi: {e}"),
                }
            }
        }
    }
    ExitCode::SUCCESS
}
