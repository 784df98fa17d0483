//! `mtg-multi run CONFIG`: load the config, set up logging, build the engine's shared state and
//! serve until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use mtg_proto::{NoReplayCheck, ReplayCache, Secret, StableBloomFilter};
use tracing::{error, info, warn};

use crate::config::{Config, LogFormat};
use crate::control::{Control, serve, serve_with_signals};
use crate::engine::{Directory, Settings, Shared};
use crate::ip_lists::IpLists;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Selected};

/// Exit code for a config or usage error.
pub const EXIT_CONFIG: u8 = 2;

/// Logs to stderr: `info` by default, `debug` with `debug = true`; `RUST_LOG` overrides.
/// `format` picks text lines or one JSON object per line (the same fields, flattened).
pub fn init_logging(debug: bool, format: LogFormat) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second init (tests) keeps the first subscriber.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).try_init(),
    };
}

/// The engine's shared state for a config: users in name order, the anti-replay cache, the
/// block/allow lists (loaded by `serve` before it accepts), the metrics and their exporters.
pub fn build_shared(config: &Config, settings: Settings) -> std::sync::Arc<Shared> {
    let users: Vec<(String, Secret)> = config.users.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
    let replay: Box<dyn ReplayCache + Send> = if config.anti_replay.enabled {
        let size = usize::try_from(config.anti_replay.max_size).unwrap_or(usize::MAX);
        Box::new(StableBloomFilter::new(size, config.anti_replay.error_rate, &mut rand::rng()))
    } else {
        Box::new(NoReplayCheck)
    };
    Shared::new(
        settings,
        Directory::new(&users, &config.secret_limits, &config.secret_limits_default, &config.ad_tags()),
        replay,
        Box::new(IpLists::from_config(config)),
        Metrics::from_config(config),
    )
}

/// Loads `usage-state-file` (when configured) into the users' quota counters; a corrupt file
/// is an error naming it.
pub fn restore_usage(config: &Config, control: &Control) -> Result<(), String> {
    if let Some(path) = &config.usage_state_file {
        control.restore_usage(&crate::users::usage_file::load(path)?);
    }
    Ok(())
}

/// Runs the proxy; returns the process exit code.
pub fn run(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => serve_config(loaded, Some(path)),
        Err(e) => {
            eprintln!("mtg-multi: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Serves a loaded config until SIGINT/SIGTERM; `path` (if any) is what reloads re-read.
pub fn serve_config(loaded: crate::config::Loaded, path: Option<&Path>) -> ExitCode {
    let config = loaded.config;
    init_logging(config.debug, config.log_format);
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let hosts: std::collections::BTreeSet<&str> =
        config.users.values().map(Secret::host).filter(|h| !h.is_empty()).collect();
    let user_count = config.users.len();
    let shared =
        Control::new(build_shared(&config, Settings::from_config(&config)), path.map(Path::to_owned));
    if let Err(e) = restore_usage(&config, &shared) {
        error!("{e}");
        eprintln!("mtg-multi: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let cluster = match &config.cluster {
        Some(settings) => match crate::cluster::start(&shared, settings) {
            Ok(cluster) => Some(cluster),
            Err(e) => {
                error!("{e}");
                eprintln!("mtg-multi: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    crate::sni_dns::spawn_startup_check(
        hosts.iter().map(|h| (*h).to_owned()).collect(),
        config.public_ipv4.map(std::net::IpAddr::V4),
        config.public_ipv6.map(std::net::IpAddr::V6),
        config.network.timeout.http,
    );
    let result = Selected::run(|runtime| async move {
        let ready = |ready: &crate::control::Ready| {
            let listen: Vec<String> = ready.listeners.iter().map(ToString::to_string).collect();
            info!(
                users = user_count,
                hosts = ?hosts,
                listen = ?listen,
                api = ?ready.api,
                metrics = ?ready.metrics,
                "serving"
            );
        };
        // Signals are registered here, synchronously, before "serving" is logged: a SIGTERM
        // right after that line must stop the proxy gracefully, a SIGHUP reload it.
        match Selected::signals() {
            Ok(signals) => serve_with_signals(runtime, shared, signals, ready).await,
            Err(e) => {
                error!(error = %e, "cannot watch for signals; stop with SIGKILL");
                serve(runtime, shared, std::future::pending(), ready).await
            }
        }
    });
    if let Some(cluster) = cluster {
        cluster.stop();
    }
    match result {
        Ok(Ok(())) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) | Err(e) => {
            error!(error = %e, "cannot run");
            eprintln!("mtg-multi: {e}");
            ExitCode::FAILURE
        }
    }
}
