//! `mtg-bench`: the load generator of mtg-multi (see `BENCHMARKS.md`).
//!
//! ```text
//! mtg-bench run --proxy target/release/mtg-multi [--mode bulk,idle,...,middle-bulk,middle-idle]
//!                [--repeat 3] [--fast-mode] [sizes]
//! mtg-bench plain-relay LISTEN TARGET     (the baseline relay; started by `run` itself)
//! ```
//! Loopback only. Prints each mode's figures (medians over the repeats) as a Markdown table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mtg_tests::bench::{self, Mode, Options, ProxySource};

#[derive(Debug, Parser)]
#[command(name = "mtg-bench", about = "Load generator and benchmarks of mtg-multi (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs benchmark modes against a proxy binary and the plain relay.
    Run(RunArgs),
    /// The baseline: a plain-copy TCP relay from LISTEN to TARGET (both loopback).
    PlainRelay {
        /// Where to accept.
        listen: SocketAddr,
        /// Where to relay to.
        target: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The mtg-multi binary to measure (a release build).
    #[arg(long)]
    proxy: PathBuf,
    /// Modes, comma-separated: bulk, idle, handshake, probe, latency, middle-bulk, middle-idle.
    /// The middle modes run each case through a bench middle proxy (the proxy gets an ad tag
    /// and a `[middle-proxy]` table naming it), direct and through the plain relay, in turn.
    #[arg(long, value_delimiter = ',', default_value = "bulk,idle,handshake,probe,latency")]
    mode: Vec<String>,
    /// Runs of each mode; figures are medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seconds of each bulk measurement.
    #[arg(long, default_value_t = 3.0)]
    bulk_secs: f64,
    /// Seconds of load before each bulk measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Stream counts of the bulk cases, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    streams: Vec<usize>,
    /// Sessions held open in the idle mode.
    #[arg(long, default_value_t = 8000)]
    idle_sessions: usize,
    /// User counts of the handshake mode, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    users: Vec<usize>,
    /// Most seconds of each handshake case.
    #[arg(long, default_value_t = 3.0)]
    handshake_secs: f64,
    /// Most handshakes of each handshake case.
    #[arg(long, default_value_t = 20000)]
    handshake_max: usize,
    /// Bad hellos in the probe flood.
    #[arg(long, default_value_t = 20000)]
    probes: usize,
    /// Users of the proxy in the probe flood (each probe names their host, so a probe that
    /// gets a full search costs one HMAC per user).
    #[arg(long, default_value_t = 1)]
    probe_users: usize,
    /// Round trips in the latency mode.
    #[arg(long, default_value_t = 5000)]
    pings: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Milliseconds to wait before reading memory.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// Bytes of each bulk packet in the middle modes (whole words, 64 to 1044480).
    #[arg(long, default_value_t = 32 * 1024)]
    middle_packet: usize,
    /// A `rate-limit` for every user of the measured proxy (`[secret-limits-default]`), e.g.
    /// "100mib": the figures are then those of a limited user. Unset: unlimited.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Runs the measured proxy with `fast-mode = true` (DC->client bytes pass without
    /// cryptography), so the same cases measure fast mode.
    #[arg(long)]
    fast_mode: bool,
    /// Runs the measured proxy with `[network] zero-copy = false` (downloads that pass
    /// unchanged are copied instead of spliced).
    #[arg(long)]
    no_zero_copy: bool,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn run(args: RunArgs) -> Result<(), String> {
    let modes = args
        .mode
        .iter()
        .map(|m| {
            Mode::parse(m).ok_or_else(|| {
                let known: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode {m:?} ({})", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !args.proxy.is_file() {
        return Err(format!("--proxy {}: no such file", args.proxy.display()));
    }
    let nofile =
        bench::proc_stats::raise_nofile_limit().map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let bench = std::env::current_exe().map_err(|e| format!("locating mtg-bench itself: {e}"))?;
    let options = Options {
        proxy: ProxySource::Binary(args.proxy.clone()),
        bench,
        bulk_secs: args.bulk_secs,
        warmup_secs: args.warmup_secs,
        streams: args.streams,
        idle_sessions: args.idle_sessions,
        handshake_users: args.users,
        handshake_secs: args.handshake_secs,
        handshake_max: args.handshake_max,
        probes: args.probes,
        probe_users: args.probe_users,
        pings: args.pings,
        concurrency: args.concurrency,
        settle: Duration::from_millis(args.settle_ms),
        middle_packet: args.middle_packet,
        rate_limit: args.rate_limit,
        fast_mode: args.fast_mode,
        zero_copy: !args.no_zero_copy,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    println!(
        "proxy: {}{}{}; open-file limit {nofile}; medians of {} runs\n",
        args.proxy.display(),
        if args.fast_mode { " (fast-mode = true)" } else { "" },
        if args.no_zero_copy { " (zero-copy = false)" } else { "" },
        args.repeat.max(1)
    );
    let mut all = Vec::new();
    for mode in modes {
        let figures = runtime
            .block_on(bench::run_repeated(mode, &options, args.repeat))
            .map_err(|e| format!("mode {}: {e}", mode.name()))?;
        println!("## {}\n\n{}", mode.name(), bench::table(&figures));
        all.extend(figures);
    }
    println!("## all\n\n{}", bench::table(&all));
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::PlainRelay { listen, target } => {
            bench::plain_relay::run(listen, target).map_err(|e| format!("plain relay: {e}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtg-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
