//! The load generator behind `mtg-bench`: drives sessions through a running proxy with real
//! FakeTLS handshakes and, in the same run, through a plain-copy TCP relay (the baseline),
//! and reports each figure as ours / baseline with the subjects' CPU seconds and memory.
//!
//! ```text
//! client ──records──► subject (proxy | plain relay) ──► far end (sink, source, echo, site)
//!   └ no per-byte crypto: the payload is pre-built, the far end only counts
//! ```
//! * [`wire`]: pre-built records, the record skimmer.
//! * [`client`]: handshakes, sessions, pings, probes.
//! * [`dc`]: the far end.
//! * [`subject`]: starting the proxy (binary or in-process) and the plain relay.
//! * [`plain_relay`]: the baseline relay itself.
//! * [`proc_stats`]: CPU and memory from `/proc`, the open-file limit.
//! * [`middle`]: the bench middle proxy (middle-proxy modes) and its packets.
//! * [`modes`]: bulk, idle, handshake, probe and latency; `middle_modes`: bulk and idle
//!   through a middle proxy, next to direct and the plain relay.
//! * [`figures`]: medians and the Markdown table.

pub mod client;
pub mod dc;
pub mod figures;
pub mod middle;
mod middle_modes;
pub mod modes;
pub mod plain_relay;
pub mod proc_stats;
pub mod subject;
pub mod wire;

pub use figures::{Figure, medians, table};
pub use modes::{Mode, Options};
pub use subject::ProxySource;

/// Runs `mode` `repeat` times and returns the median of each figure.
pub async fn run_repeated(mode: Mode, options: &Options, repeat: usize) -> std::io::Result<Vec<Figure>> {
    let mut runs = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        runs.push(mode.run(options).await?);
    }
    Ok(medians(&runs))
}
