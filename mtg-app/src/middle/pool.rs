//! The middle-proxy connection pool: per endpoint, connections made on demand (one dial at a
//! time per endpoint), the least-loaded live one chosen for each new client, at most
//! [`MAX_CONNECTIONS`] connections of [`MAX_CLIENTS`] clients each, and an exponential backoff
//! after failed attempts (during which the endpoint is skipped at once). Over all endpoints,
//! at most [`DIALS_PER_SECOND`] dials start per second; handshakes failing on several endpoints
//! in a row ask the bootstrap for the proxy secret again ([`MiddlePool::refetch_wanted`]).
//!
//! A new snapshot retires what it makes stale ([`MiddlePool::retire_stale`]): connections made
//! with another secret, and every connection to an endpoint no longer listed, take no new
//! clients and close when their last client leaves. Nothing is cut.
//!
//! The pool itself holds no sockets: connections own their tasks (spawned on the runtime
//! passed in) and are shared as `Arc`s, so one pool type serves either runtime.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mtg_proto::middle::ProxySecret;
use rand::Rng;
use tracing::{info, warn};

use super::MiddleSnapshot;
use super::conn::{ClientSlot, ConnectError, IDLE_PING, MiddleConn};
use super::dial_guard::{DIALS_PER_SECOND, DialRate, HandshakeFailures};
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// Most connections per middle-proxy endpoint.
pub const MAX_CONNECTIONS: usize = 8;
/// Most clients per connection.
pub const MAX_CLIENTS: usize = 300;
/// First delay after a failed attempt.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Why no client slot was had from an endpoint.
#[derive(Debug)]
pub enum PoolError {
    /// The endpoint failed recently and waits out its backoff.
    Backoff,
    /// Every connection is full and no more may be made.
    Full,
    /// [`DIALS_PER_SECOND`] dials already started this second.
    DialRate,
    /// The attempt failed.
    Connect(ConnectError),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backoff => f.write_str("in backoff after a failed attempt"),
            Self::Full => write!(f, "{MAX_CONNECTIONS} connections of {MAX_CLIENTS} clients all full"),
            Self::DialRate => write!(f, "{DIALS_PER_SECOND} middle-proxy dials already started this second"),
            Self::Connect(e) => e.fmt(f),
        }
    }
}

impl PoolError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::Full => "full",
            Self::DialRate => "dial_rate",
            Self::Connect(e) => e.label(),
        }
    }
}

/// Exponential backoff with jitter: ×1.5..2 per failure, ±20 %, capped, reset on success.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    until: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delay: BACKOFF_START, until: None }
    }
}

impl Backoff {
    fn blocked(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    fn failed(&mut self, now: Instant) {
        let mut rng = rand::rng();
        let jitter = rng.random_range(0.8..=1.2);
        self.until = Some(now + self.delay.mul_f64(jitter));
        self.delay = self.delay.mul_f64(rng.random_range(1.5..=2.0)).min(BACKOFF_CAP);
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// One middle proxy's connections.
#[derive(Debug)]
struct Endpoint {
    conns: Mutex<Vec<Arc<MiddleConn>>>,
    backoff: Mutex<Backoff>,
    /// One token: whoever holds it dials; the others wait and then reuse its connection.
    gate: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl Endpoint {
    fn new() -> Self {
        let gate = async_channel::bounded(1);
        let _ = gate.0.try_send(());
        Self { conns: Mutex::default(), backoff: Mutex::default(), gate }
    }

    /// A slot on the least-loaded live connection made with `secret` that has room (others
    /// are retired); `Err(full)` when there is none, `full` telling whether no connection may
    /// be added.
    fn pick(&self, secret: &ProxySecret) -> Result<ClientSlot, bool> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        retire_where(&mut conns, |c| !c.made_with(secret));
        let best = conns
            .iter()
            .map(|c| (c.load(), c))
            .filter(|(load, _)| *load < MAX_CLIENTS)
            .min_by_key(|(load, _)| *load)
            .and_then(|(_, c)| c.open_client());
        best.ok_or(conns.len() >= MAX_CONNECTIONS)
    }

    fn blocked(&self) -> bool {
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner).blocked(Instant::now())
    }

    /// Retires the connections `stale` picks; returns how many.
    fn retire(&self, stale: impl Fn(&MiddleConn) -> bool) -> usize {
        retire_where(&mut self.conns.lock().unwrap_or_else(PoisonError::into_inner), stale)
    }
}

/// Forgets dead connections and retires (and forgets) the ones `stale` picks: they live on
/// through their clients' slots and close with the last one. Returns how many were retired.
fn retire_where(conns: &mut Vec<Arc<MiddleConn>>, stale: impl Fn(&MiddleConn) -> bool) -> usize {
    let mut retired = 0;
    conns.retain(|c| {
        if c.is_dead() {
            return false;
        }
        if stale(c) {
            c.retire();
            retired += 1;
            return false;
        }
        true
    });
    retired
}

/// Gives the dial token back when dropped.
struct Token<'a>(&'a async_channel::Sender<()>);

impl Drop for Token<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Every middle-proxy endpoint's connections.
#[derive(Debug)]
pub struct MiddlePool {
    endpoints: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
    /// Silence before a ping, for connections made from now on (milliseconds).
    idle_ping_ms: AtomicU64,
    dial_rate: Mutex<DialRate>,
    failures: Mutex<HandshakeFailures>,
    /// Holds one token while a refetch of the proxy secret is wanted.
    refetch: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// The secret of the last snapshot seen by [`MiddlePool::retire_stale`].
    secret: Mutex<Option<ProxySecret>>,
}

impl Default for MiddlePool {
    fn default() -> Self {
        Self {
            endpoints: Mutex::default(),
            idle_ping_ms: AtomicU64::new(IDLE_PING.as_millis() as u64),
            dial_rate: Mutex::default(),
            failures: Mutex::default(),
            refetch: async_channel::bounded(1),
            secret: Mutex::default(),
        }
    }
}

impl MiddlePool {
    /// Sets the silence before a ping (and, as long again, before a connection is declared
    /// dead) for connections made from now on; [`IDLE_PING`] by default. For tests.
    pub fn set_idle_ping(&self, idle: Duration) {
        self.idle_ping_ms.store(idle.as_millis() as u64, Ordering::Relaxed);
    }

    fn endpoint(&self, addr: SocketAddr) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(addr).or_insert_with(|| Arc::new(Endpoint::new())).clone()
    }

    /// Live connections to `addr` that take new clients now (for tests and diagnostics).
    pub fn connections(&self, addr: SocketAddr) -> usize {
        let endpoint = self.endpoint(addr);
        let mut conns = endpoint.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.is_dead());
        conns.len()
    }

    /// Retires what `snapshot` makes stale: every connection to an endpoint it no longer
    /// lists, and every connection made with another proxy secret. They take no new clients
    /// and close when their last client leaves. A new secret also ends every endpoint's
    /// backoff: failures with the old one say nothing about the new. Returns how many
    /// connections were retired.
    pub fn retire_stale(&self, snapshot: &MiddleSnapshot) -> usize {
        let rotated = {
            let mut last = self.secret.lock().unwrap_or_else(PoisonError::into_inner);
            let rotated = last.as_ref().is_some_and(|s| *s != snapshot.secret);
            *last = Some(snapshot.secret.clone());
            rotated
        };
        if rotated {
            self.failures.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
        }
        let listed: HashSet<SocketAddr> = [&snapshot.v4, &snapshot.v6]
            .iter()
            .flat_map(|map| map.by_dc.values().flatten().copied())
            .collect();
        let mut map = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        let mut retired = 0;
        map.retain(|addr, endpoint| {
            if listed.contains(addr) {
                retired += endpoint.retire(|c| !c.made_with(&snapshot.secret));
                if rotated {
                    endpoint.backoff.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                }
                true
            } else {
                retired += endpoint.retire(|_| true);
                false
            }
        });
        drop(map);
        if retired > 0 {
            info!(
                connections = retired,
                "middle-proxy connections retired by the new snapshot; they close when their clients leave"
            );
        }
        retired
    }

    /// Resolves when handshakes failing on several endpoints ask for the proxy secret to be
    /// fetched again (at most once per `REFETCH_EVERY`).
    pub async fn refetch_wanted(&self) {
        // The sender lives in `self`, so `recv` cannot fail.
        let _ = self.refetch.1.recv().await;
    }

    /// Counts a failed dial; a handshake failure may ask for a refetch of the secret.
    fn dial_failed(&self, addr: SocketAddr, error: &ConnectError) {
        if !matches!(error, ConnectError::Handshake(_) | ConnectError::HandshakeTimeout) {
            return;
        }
        let refetch =
            self.failures.lock().unwrap_or_else(PoisonError::into_inner).failed(addr, Instant::now());
        if refetch && self.refetch.0.try_send(()).is_ok() {
            warn!("middle-proxy handshakes fail on several endpoints: fetching the proxy secret again");
        }
    }

    /// A client slot on a connection to `addr`: an existing one with room, else a new one
    /// (dialled with `secret` and our `public` addresses, counted in `metrics`), unless the
    /// endpoint is in backoff or full. The caller bounds the wait.
    pub async fn open_client<R: Runtime>(
        &self,
        runtime: &R,
        metrics: &Metrics,
        addr: SocketAddr,
        secret: &ProxySecret,
        public: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ) -> Result<ClientSlot, PoolError> {
        let endpoint = self.endpoint(addr);
        match endpoint.pick(secret) {
            Ok(slot) => return Ok(slot),
            Err(true) => return Err(PoolError::Full),
            Err(false) => {}
        }
        if endpoint.blocked() {
            return Err(PoolError::Backoff);
        }
        // The gate's sender lives in `endpoint`, so `recv` cannot fail.
        let _ = endpoint.gate.1.recv().await;
        let _token = Token(&endpoint.gate.0);
        // Someone else may have dialled (or failed) while we waited.
        match endpoint.pick(secret) {
            Ok(slot) => return Ok(slot),
            Err(true) => return Err(PoolError::Full),
            Err(false) => {}
        }
        if endpoint.blocked() {
            return Err(PoolError::Backoff);
        }
        if !self.dial_rate.lock().unwrap_or_else(PoisonError::into_inner).try_start(Instant::now()) {
            return Err(PoolError::DialRate);
        }
        let idle_ping = Duration::from_millis(self.idle_ping_ms.load(Ordering::Relaxed));
        let dialled = MiddleConn::connect(runtime, addr, secret, public, idle_ping, metrics).await;
        metrics.middle_proxy_dial(dialled.as_ref().map_or_else(ConnectError::label, |_| "ok"));
        match dialled {
            Ok(conn) => {
                endpoint.backoff.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                self.failures.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                let slot = conn.open_client();
                endpoint.conns.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
                slot.ok_or(PoolError::Full)
            }
            Err(e) => {
                info!(endpoint = %addr, error = %e, "middle proxy unreachable");
                endpoint.backoff.lock().unwrap_or_else(PoisonError::into_inner).failed(Instant::now());
                self.dial_failed(addr, &e);
                Err(PoolError::Connect(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let now = Instant::now();
        assert!(!b.blocked(now));
        b.failed(now);
        let first = b.until.expect("set") - now;
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200), "{first:?}");
        assert!(b.blocked(now) && !b.blocked(now + Duration::from_millis(1201)));
        assert!(b.delay >= Duration::from_millis(1500) && b.delay <= Duration::from_secs(2));
        for _ in 0..20 {
            b.failed(now);
        }
        assert_eq!(b.delay, BACKOFF_CAP);
        assert!(b.until.expect("set") - now <= BACKOFF_CAP.mul_f64(1.2));
        b.succeeded();
        assert!(!b.blocked(now) && b.delay == BACKOFF_START);
    }
}
