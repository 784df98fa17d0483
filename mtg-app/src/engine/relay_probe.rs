//! Test-only access to the engine's relay: **not part of the API** (hidden from the docs, no
//! stability promise, nothing in the proxy uses it).
//!
//! `tests/relay_alloc.rs` counts the relay's allocations with a counting global allocator.
//! That needs `unsafe`, which this crate forbids, so the test is an integration test of its
//! own and reaches the relay only through this module: the relay wired as `session.rs` and
//! `fronting.rs` wire it (user and metric counters, revocation watch, shaping), over streams
//! of the caller's choosing, with an idle timeout of an hour.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use mtg_proto::doppel::Weibull;
use mtg_proto::{ClientToDc, DcToClient, FastDcToClient};

use super::relay::{Downlink, Plain, Pump, Relay, Transform};
use super::shaper::Shaped;
use crate::config::SecretLimits;
use crate::metrics::Metrics;
use crate::runtime::Selected;
use crate::users::accounting::UserStats;
use crate::users::gate::UserGate;

/// Long enough that the idle timer never fires in a test.
const IDLE: Duration = Duration::from_secs(3600);

/// A relay as the proxy runs it, on [`Selected`]'s timers. Resolves to why it ended (as the
/// proxy logs it).
pub struct Probe<S> {
    relay: Wired<S>,
    /// Holds the revocation watch of a Telegram relay open (it closes with its last sender).
    _gate: Option<Arc<UserGate>>,
}

#[expect(clippy::large_enum_variant, reason = "one per test; a session's relay is not boxed either")]
enum Wired<S> {
    Telegram(Relay<Selected, S, Pump<ClientToDc>, Pump<Shaped<Selected>>>),
    Fronting(Relay<Selected, S, Pump<Plain>, Pump<Plain>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Probe<S> {
    /// A Telegram session's relay: `up` from `client` to `dc`, `down` back, shaped as a
    /// FakeTLS session with `[defense.doppelganger]` `drs` and (when `Some`) pacing by these
    /// delays. Counted into a user's and two metric counters and revocable, as `session.rs`
    /// wires it. Call inside the runtime (its timers).
    pub fn telegram(
        client: S,
        dc: S,
        up: ClientToDc,
        down: DcToClient,
        drs: bool,
        pacing: Option<Weibull>,
    ) -> Self {
        Self::telegram_limited(client, dc, up, down, drs, pacing, None)
    }

    /// [`Self::telegram`] in fast mode: `down` passes the DC's bytes as they are (framed in
    /// records for FakeTLS), shaped as a FakeTLS session would be.
    pub fn telegram_fast(
        client: S,
        dc: S,
        up: ClientToDc,
        down: FastDcToClient,
        drs: bool,
        pacing: Option<Weibull>,
    ) -> Self {
        Self::wire(client, dc, up, down.into(), drs, pacing, None)
    }

    /// [`Self::telegram`] for a user with `rate-limit = rate` (bytes per second), its waits
    /// counted into a metric as `session.rs` wires it.
    pub fn telegram_limited(
        client: S,
        dc: S,
        up: ClientToDc,
        down: DcToClient,
        drs: bool,
        pacing: Option<Weibull>,
        rate: Option<u64>,
    ) -> Self {
        Self::wire(client, dc, up, down.into(), drs, pacing, rate)
    }

    fn wire(
        client: S,
        dc: S,
        up: ClientToDc,
        down: Downlink,
        drs: bool,
        pacing: Option<Weibull>,
        rate: Option<u64>,
    ) -> Self {
        let gate = Arc::new(UserGate::default());
        let stats = Arc::new(UserStats::default());
        stats.set_limits(&SecretLimits { rate_limit: rate, ..SecretLimits::default() });
        let mut admitted =
            stats.try_admit(None, IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0, gate.clone()).expect("no cap");
        let metrics = Metrics::new("probe");
        if rate.is_some() {
            admitted = admitted.with_rate_meter(metrics.user_rate_limited("probe"));
        }
        let (_, user_traffic) = metrics.user_connection("probe");
        let (_, dc_traffic) = metrics.telegram_connection(IpAddr::V4(Ipv4Addr::LOCALHOST), 2);
        let down = Shaped::<Selected>::new(down, drs, pacing);
        let relay = Relay::new(client, dc, Pump::new(up, &[]), Pump::new(down, &[]), IDLE)
            .counting(admitted)
            .metered(user_traffic)
            .metered(dc_traffic)
            .revocable(gate.watch());
        Self { relay: Wired::Telegram(relay), _gate: Some(gate) }
    }

    /// A fronted connection's relay: bytes pass unchanged both ways, metered as `fronting.rs`
    /// wires it. Call inside the runtime (its timers).
    pub fn fronting(client: S, site: S) -> Self {
        let (_, traffic) = Metrics::new("probe").fronting(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let relay = Relay::new(
            client,
            site,
            Pump::new(Plain::default(), &[]),
            Pump::new(Plain::default(), &[]),
            IDLE,
        )
        .metered(traffic);
        Self { relay: Wired::Fronting(relay), _gate: None }
    }

    /// Payload bytes moved so far: (from the client, to the client).
    pub fn bytes(&self) -> (u64, u64) {
        match &self.relay {
            Wired::Telegram(r) => (r.up.transform.bytes(), r.down.transform.bytes()),
            Wired::Fronting(r) => (r.up.transform.bytes(), r.down.transform.bytes()),
        }
    }

    /// Records to the client that waited for the pacing timer.
    pub fn paced_records(&self) -> u64 {
        match &self.relay {
            Wired::Telegram(r) => r.down.transform.paced_records(),
            Wired::Fronting(_) => 0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Probe<S> {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
        let end = match &mut self.get_mut().relay {
            Wired::Telegram(r) => Pin::new(r).poll(cx),
            Wired::Fronting(r) => Pin::new(r).poll(cx),
        };
        end.map(|end| end.to_string())
    }
}

impl<S> std::fmt::Debug for Probe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.relay {
            Wired::Telegram(_) => "telegram",
            Wired::Fronting(_) => "fronting",
        };
        f.debug_struct("Probe").field("relay", &kind).finish_non_exhaustive()
    }
}
