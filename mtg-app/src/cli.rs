//! The command line: verbs and flags as mtg's (`run`, `generate-secret`, `access`, `doctor`,
//! `simple-run`, `-v`/`--version`), plus `healthcheck`, and `completions` and `manpage`
//! generated from these definitions.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// The version `--version` prints: the crate version, and the commit when the build knew it
/// (from git, or `MTG_MULTI_COMMIT` at build time).
pub const VERSION: &str = env!("MTG_MULTI_VERSION");

/// mtg-multi: an MTProto proxy for Telegram with many named users, FakeTLS and domain fronting.
#[derive(Debug, Parser)]
#[command(name = "mtg-multi", version = VERSION, long_about = None, disable_version_flag = true)]
pub struct Cli {
    /// Print the version (and the git commit it was built from, when known).
    #[arg(short = 'V', long, short_alias = 'v', action = clap::ArgAction::Version)]
    pub version: Option<bool>,
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
    /// Check a config: clock, Telegram DCs, fronting site, SNI/DNS match (exit 1 on a failure).
    Doctor {
        /// Skip the direct DC probes (accepted for mtg compatibility).
        #[arg(long)]
        skip_native_check: bool,
        /// Path to the config file.
        config: PathBuf,
    },
    /// Check that the proxy serving a config is up (for a container HEALTHCHECK): every
    /// bind-to address accepts, and the API (when set) answers GET /stats. Exit 1 if not.
    Healthcheck {
        /// Seconds to wait for each connection and answer.
        #[arg(short = 't', long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Path to the config file.
        config: PathBuf,
    },
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: mtg-multi(1), or a verb's mtg-multi-VERB(1).
    Manpage {
        /// The verb whose page to print (e.g. `doctor`).
        verb: Option<String>,
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

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "mtg-multi", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete (4.6) mangles the hyphen of `mtg-multi` differently in the verbs'
        // `case` labels than in the state it matches them against, so no verb's flags would
        // complete; the labels are put back in the state's spelling.
        let text = String::from_utf8_lossy(&script).replace("mtg__subcmd__multi__", "mtg__multi__");
        return out.write_all(text.as_bytes());
    }
    out.write_all(&script)
}

/// Writes the man page (roff) of the program, or of one `verb` as `mtg-multi-VERB(1)`, to
/// `out`; an unknown verb is an error naming the verbs.
pub fn manpage(verb: Option<&str>, out: &mut dyn std::io::Write) -> Result<(), String> {
    let program = Cli::command();
    let command = match verb {
        None => program,
        Some(verb) => {
            let Some(sub) = program.find_subcommand(verb) else {
                let verbs: Vec<&str> = program.get_subcommands().map(clap::Command::get_name).collect();
                return Err(format!("no verb {verb:?}; the verbs are {}", verbs.join(", ")));
            };
            let name = format!("mtg-multi-{}", sub.get_name());
            sub.clone().name(name.clone()).bin_name(name.replace("mtg-multi-", "mtg-multi ")).version(VERSION)
        }
    };
    clap_mangen::Man::new(command).render(out).map_err(|e| format!("cannot write the man page: {e}"))
}

/// The one stderr line (without the `mtg-multi: ` prefix) for a command-line error: clap's
/// message and tips on one line, without the usage block; a missing verb names the verbs.
pub fn error_line(error: &clap::Error) -> String {
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
            "a command is required: one of run, access, simple-run, doctor, healthcheck, completions, manpage, generate-secret (try --help)"
        );
        assert_eq!(line(&["rn"]), "unrecognized subcommand 'rn' (try --help)");
        assert_eq!(
            line(&["run", "--foo"]),
            "unexpected argument '--foo' found; tip: to pass '--foo' as a value, use '-- --foo' (try --help)"
        );
    }
}
