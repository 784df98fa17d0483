//! Learning the fronting site's first flight (`[defense.doppelganger] learn-from-fronting`):
//! the proxy sends the site ClientHellos like the ones Telegram clients send (one kind with an
//! X25519MLKEM768 key share, one with X25519 alone), reads what the site answers until it
//! falls silent (it then waits for a Finished that never comes) and hands the observed flights
//! to the core's [`FlightStats`]. Sessions started afterwards shape their fake flight after it.
//!
//! ```text
//! round: for each HelloKind, PROBES_PER_KIND times:
//!        dial site (as fronting does) ─► probe hello ─► read until QUIET ─► ObservedFlight
//! ```
//! The probes go where fronted connections go (`[domain-fronting]`, else the secrets' host,
//! resolved by `[network] dns`), directly: the flight imitated is the one a prober comparing
//! the proxy with the site would see.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::client::write_probe_hello;
use mtg_proto::doppel::{FlightShape, FlightStats, HelloKind};
use mtg_proto::tls::server_flight::ObservedFlight;

use crate::config::Config;
use crate::engine::{upstream, with_timeout};
use crate::resolver::Resolver;
use crate::runtime::Runtime;

/// Probes per kind of hello in one round.
pub const PROBES_PER_KIND: usize = 3;
/// How long the site may stay silent after its last byte before its flight counts as whole.
pub const QUIET: Duration = Duration::from_millis(500);
/// Most bytes of a flight read.
const FLIGHT_LIMIT: usize = 64 * 1024;

/// Where the flight is learned: the address fronted connections go to and the SNI clients send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightTarget {
    /// The host dialled (`[domain-fronting] host`, else the SNI).
    pub dial_host: String,
    /// `[domain-fronting] port`.
    pub port: u16,
    /// The hostname the secrets carry (the first in order when they differ).
    pub sni: String,
}

impl FlightTarget {
    /// The target of `config`: the host of its alphabetically first user with one (the
    /// proxy's default fronting host), or `None` when no secret carries a hostname.
    pub fn from_config(config: &Config) -> Option<Self> {
        let sni = config.users.values().map(|s| s.host()).find(|h| !h.is_empty())?;
        Some(Self::for_host(sni, config))
    }

    /// The target for clients that send `sni`, dialled as `config`'s fronting is.
    pub fn for_host(sni: &str, config: &Config) -> Self {
        let dial_host = config.domain_fronting.host.clone().unwrap_or_else(|| sni.to_owned());
        Self { dial_host, port: config.domain_fronting.port, sni: sni.to_owned() }
    }
}

impl std::fmt::Display for FlightTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} (SNI {})", self.dial_host, self.port, self.sni)
    }
}

/// One probe: a hello of `kind` to the site, its answer read until [`QUIET`] (or `timeout`
/// in all) and parsed.
pub async fn probe<R: Runtime>(
    target: &FlightTarget,
    kind: HelloKind,
    resolver: &Resolver,
    timeout: Duration,
) -> Result<ObservedFlight, String> {
    let (mut stream, addr) = upstream::dial_host::<R>(&target.dial_host, target.port, resolver, timeout)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let mut hello = Vec::with_capacity(2048);
    write_probe_hello(&mut hello, &target.sni, kind, &mut rand::rng());
    let deadline = Instant::now() + timeout;
    match with_timeout::<R, _>(timeout, stream.write_all(&hello)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(format!("sending a ClientHello to {addr}: {e}")),
        None => return Err(format!("sending a ClientHello to {addr} timed out")),
    }
    let mut flight = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if flight.is_empty() { left } else { QUIET.min(left) };
        match with_timeout::<R, _>(wait, stream.read(&mut buf)).await {
            Some(Ok(0)) | None => break,
            Some(Ok(n)) => flight.extend_from_slice(&buf[..n]),
            Some(Err(e)) if flight.is_empty() => return Err(format!("reading {addr}'s answer: {e}")),
            Some(Err(_)) => break,
        }
        if flight.len() >= FLIGHT_LIMIT || left.is_zero() {
            break;
        }
    }
    ObservedFlight::parse(&flight).map_err(|e| format!("{addr} (SNI {}): {e}", target.sni))
}

/// What one round of probes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Flights observed.
    pub observed: usize,
    /// Probes that failed.
    pub failed: usize,
    /// The last failure, for the log.
    pub last_error: Option<String>,
}

/// [`PROBES_PER_KIND`] probes of each kind in turn, each flight added to `stats` by `add`.
pub async fn round<R: Runtime>(
    target: &FlightTarget,
    resolver: &Resolver,
    timeout: Duration,
    mut add: impl FnMut(HelloKind, ObservedFlight),
) -> RoundReport {
    let mut report = RoundReport::default();
    for kind in HelloKind::ALL {
        for _ in 0..PROBES_PER_KIND {
            match probe::<R>(target, kind, resolver, timeout).await {
                Ok(flight) => {
                    report.observed += 1;
                    add(kind, flight);
                }
                Err(e) => {
                    report.failed += 1;
                    report.last_error = Some(e);
                }
            }
        }
    }
    report
}

/// One line per learned kind: `x25519mlkem768: suite 1301, [002b 0033], key share 11ec/1120,
/// CCS, records [23 811 281 53] (1188 bytes on the wire)`.
pub fn describe(stats: &FlightStats) -> Vec<String> {
    HelloKind::ALL
        .iter()
        .filter_map(|&kind| {
            stats.shape(kind).map(|shape| format!("{}: {}", kind.name(), describe_shape(&shape)))
        })
        .collect()
}

/// A shape in words, as `doctor` and the log show it.
pub fn describe_shape(shape: &FlightShape) -> String {
    let mut text = format!("cipher suite {:04x}, extensions [", shape.cipher_suite);
    for (i, ext) in shape.extensions.as_slice().iter().enumerate() {
        let _ = write!(text, "{}{ext:04x}", if i == 0 { "" } else { " " });
    }
    text.push(']');
    if let Some(ks) = shape.key_share {
        let _ = write!(text, ", key share {:04x} ({} bytes)", ks.group, ks.len);
    }
    let _ = write!(text, ", ServerHello {} bytes", shape.server_hello_len + 5);
    text.push_str(if shape.change_cipher_spec { ", ChangeCipherSpec" } else { ", no ChangeCipherSpec" });
    text.push_str(", encrypted records [");
    for (i, &(min, max)) in shape.record_ranges().iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        if min == max {
            let _ = write!(text, "{sep}{min}");
        } else {
            let _ = write!(text, "{sep}{min}-{max}");
        }
    }
    let (lo, hi) = shape.encrypted_wire_len();
    let _ = write!(text, "] ({lo}");
    if hi != lo {
        let _ = write!(text, "-{hi}");
    }
    let _ = write!(text, " bytes with headers; seen {} times)", shape.observations);
    text
}
