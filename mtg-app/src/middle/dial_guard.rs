//! The pool's guards against storms and stale secrets, kept apart from the pool so they can be
//! tested with explicit times:
//! - [`DialRate`]: a global cap on middle-proxy dials per second, whatever the number of
//!   endpoints (each endpoint also dials one at a time and backs off on its own).
//! - [`HandshakeFailures`]: handshakes failing on several endpoints in a row usually mean our
//!   proxy secret is stale (spec §10), so the pool asks the bootstrap to fetch it again now,
//!   at most once per [`REFETCH_EVERY`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most dials started in one second, over all endpoints.
pub const DIALS_PER_SECOND: u32 = 16;
/// Distinct endpoints whose handshakes failed in a row before a refetch is asked for.
pub const REFETCH_AFTER_ENDPOINTS: usize = 2;
/// Least time between two refetches asked for by failing handshakes.
pub const REFETCH_EVERY: Duration = Duration::from_secs(300);

/// Dials started in the current one-second window.
#[derive(Debug, Default)]
pub struct DialRate {
    window: Option<Instant>,
    started: u32,
}

impl DialRate {
    /// Whether a dial may start at `now`; counts it when it may.
    pub fn try_start(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.started = 0;
            }
        }
        if self.started >= DIALS_PER_SECOND {
            return false;
        }
        self.started += 1;
        true
    }
}

/// The endpoints whose handshakes failed since the last good one.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    failed: HashSet<SocketAddr>,
    last_refetch: Option<Instant>,
}

impl HandshakeFailures {
    /// A handshake with `endpoint` failed at `now`: `true` when a refetch of the proxy secret
    /// should start now (enough distinct endpoints failed and none was asked for recently).
    pub fn failed(&mut self, endpoint: SocketAddr, now: Instant) -> bool {
        self.failed.insert(endpoint);
        let recent = self.last_refetch.is_some_and(|at| now.saturating_duration_since(at) < REFETCH_EVERY);
        if self.failed.len() < REFETCH_AFTER_ENDPOINTS || recent {
            return false;
        }
        self.last_refetch = Some(now);
        self.failed.clear();
        true
    }

    /// A handshake succeeded: the secret works, the streak ends.
    pub fn succeeded(&mut self) {
        self.failed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn dials_are_capped_per_second_window() {
        let mut rate = DialRate::default();
        let t0 = Instant::now();
        for _ in 0..DIALS_PER_SECOND {
            assert!(rate.try_start(t0));
        }
        assert!(!rate.try_start(t0 + Duration::from_millis(999)));
        assert!(rate.try_start(t0 + Duration::from_secs(1)), "a new window");
        for _ in 1..DIALS_PER_SECOND {
            assert!(rate.try_start(t0 + Duration::from_millis(1500)));
        }
        assert!(!rate.try_start(t0 + Duration::from_millis(1999)));
    }

    #[test]
    fn failures_on_two_endpoints_ask_for_one_refetch_per_period() {
        let mut f = HandshakeFailures::default();
        let t0 = Instant::now();
        assert!(!f.failed(addr(1), t0));
        assert!(!f.failed(addr(1), t0), "the same endpoint again is not a second one");
        assert!(f.failed(addr(2), t0), "two endpoints");
        assert!(!f.failed(addr(1), t0) && !f.failed(addr(2), t0), "a refetch was asked for just now");
        let later = t0 + REFETCH_EVERY;
        assert!(f.failed(addr(3), later), "the streak went on and the period passed");
    }

    #[test]
    fn a_good_handshake_ends_the_streak() {
        let mut f = HandshakeFailures::default();
        let t0 = Instant::now();
        assert!(!f.failed(addr(1), t0));
        f.succeeded();
        assert!(!f.failed(addr(2), t0), "one endpoint since the last good handshake");
        assert!(f.failed(addr(3), t0));
    }
}
