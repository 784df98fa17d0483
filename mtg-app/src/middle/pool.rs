//! The middle-proxy connection pool: per endpoint, connections made on demand (one dial at a
//! time per endpoint), the least-loaded live one chosen for each new client, at most
//! [`MAX_CONNECTIONS`] connections of [`MAX_CLIENTS`] clients each, and an exponential backoff
//! after failed attempts (during which the endpoint is skipped at once).
//!
//! The pool itself holds no sockets: connections own their tasks (spawned on the runtime
//! passed in) and are shared as `Arc`s, so one pool type serves either runtime.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mtg_proto::middle::ProxySecret;
use rand::Rng;
use tracing::info;

use super::conn::{ClientSlot, ConnectError, IDLE_PING, MiddleConn};
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
    /// The attempt failed.
    Connect(ConnectError),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backoff => f.write_str("in backoff after a failed attempt"),
            Self::Full => write!(f, "{MAX_CONNECTIONS} connections of {MAX_CLIENTS} clients all full"),
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

    /// A slot on the least-loaded live connection with room; `Err(full)` when there is none,
    /// `full` telling whether no connection may be added.
    fn pick(&self) -> Result<ClientSlot, bool> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.is_dead());
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
}

impl Default for MiddlePool {
    fn default() -> Self {
        Self { endpoints: Mutex::default(), idle_ping_ms: AtomicU64::new(IDLE_PING.as_millis() as u64) }
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

    /// Live connections to `addr` now (for tests and diagnostics).
    pub fn connections(&self, addr: SocketAddr) -> usize {
        let endpoint = self.endpoint(addr);
        let mut conns = endpoint.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.is_dead());
        conns.len()
    }

    /// A client slot on a connection to `addr`: an existing one with room, else a new one
    /// (dialled with `secret` and our public addresses), unless the endpoint is in backoff or
    /// full. The caller bounds the wait.
    pub async fn open_client<R: Runtime>(
        &self,
        runtime: &R,
        addr: SocketAddr,
        secret: &ProxySecret,
        public_v4: Option<Ipv4Addr>,
        public_v6: Option<Ipv6Addr>,
    ) -> Result<ClientSlot, PoolError> {
        let endpoint = self.endpoint(addr);
        match endpoint.pick() {
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
        match endpoint.pick() {
            Ok(slot) => return Ok(slot),
            Err(true) => return Err(PoolError::Full),
            Err(false) => {}
        }
        if endpoint.blocked() {
            return Err(PoolError::Backoff);
        }
        let idle_ping = Duration::from_millis(self.idle_ping_ms.load(Ordering::Relaxed));
        match MiddleConn::connect(runtime, addr, secret, (public_v4, public_v6), idle_ping).await {
            Ok(conn) => {
                endpoint.backoff.lock().unwrap_or_else(PoisonError::into_inner).succeeded();
                let slot = conn.open_client();
                endpoint.conns.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
                slot.ok_or(PoolError::Full)
            }
            Err(e) => {
                info!(endpoint = %addr, error = %e, "middle proxy unreachable");
                endpoint.backoff.lock().unwrap_or_else(PoisonError::into_inner).failed(Instant::now());
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
