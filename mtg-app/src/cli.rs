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

/// The one stderr line (without the `mtg-multi: ` prefix) for a command-line error: clap's
/// message and tips on one line, without the usage block; a missing verb names the verbs.
pub fn error_line(error: &clap::Error) -> String {
    use clap::CommandFactory;
    if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let verbs: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect();
        return format!("a command is required: one of {} (try --help)", verbs.join(", "));
    }
    let text = error.render().to_string();
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .filter(|p| {
            let p = p.trim_start();
            !p.is_empty() && !p.starts_with("Usage:") && !p.starts_with("For more information")
        })
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let line = paragraphs.join("; ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (try --help)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, error_line};

    fn line(args: &[&str]) -> String {
        let error = Cli::try_parse_from(std::iter::once("mtg-multi").chain(args.iter().copied()))
            .expect_err("a usage error");
        error_line(&error)
    }

    #[test]
    fn usage_errors_become_one_line_naming_the_problem() {
        assert_eq!(
            line(&["run"]),
            "the following required arguments were not provided: <CONFIG> (try --help)"
        );
        assert_eq!(line(&["run", "a", "b"]), "unexpected argument 'b' found (try --help)");
        assert_eq!(
            line(&[]),
            "a command is required: one of run, access, simple-run, generate-secret (try --help)"
        );
        assert_eq!(line(&["rn"]), "unrecognized subcommand 'rn' (try --help)");
        assert_eq!(
            line(&["run", "--foo"]),
            "unexpected argument '--foo' found; tip: to pass '--foo' as a value, use '-- --foo' (try --help)"
        );
    }
}
