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
    /// Print share links (tg:// and t.me) for every user as JSON.
    Access {
        /// Public IPv4 for the links (else `public-ipv4`).
        #[arg(short = 'i', long)]
        ipv4: Option<std::net::Ipv4Addr>,
        /// Public IPv6 for the links (else `public-ipv6`).
        #[arg(short = 'I', long)]
        ipv6: Option<std::net::Ipv6Addr>,
        /// Port for the links (else the first `bind-to` port).
        #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// Links carry the hex secret instead of base64url.
        #[arg(short = 'x', long)]
        hex: bool,
        /// Also draw every link as a QR code in the terminal.
        #[arg(long)]
        qr: bool,
        /// Path to the config file.
        config: PathBuf,
    },
    /// Run one secret without a config file (mtg's flags and defaults).
    SimpleRun(crate::simple_run::SimpleRun),
    /// Print a new random FakeTLS (ee) secret for a fronting hostname.
    GenerateSecret {
        /// Print hex instead of base64url.
        #[arg(short = 'x', long)]
        hex: bool,
        /// The hostname clients will send as SNI (the fronting website).
        hostname: String,
    },
}
