//! The command line: verbs and flags as mtg's (`run`, `generate-secret`, `access`, `doctor`,
//! `simple-run`, `--version`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mtg-multi: an MTProto proxy for Telegram with many named users, FakeTLS and domain fronting.
#[derive(Debug, Parser)]
#[command(name = "mtg-multi", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a TOML config file.
    Run {
        /// Path to the config file.
        config: PathBuf,
    },
    /// Print a new random FakeTLS (ee) secret for a fronting hostname.
    GenerateSecret {
        /// Print hex instead of base64url.
        #[arg(short = 'x', long)]
        hex: bool,
        /// The hostname clients will send as SNI (the fronting website).
        hostname: String,
    },
}
