//! The token-bucket arithmetic of `rate-limit`, with time passed in (nanoseconds on any
//! monotonic clock), so it can be tested without one.
//!
//! A bucket is one atomic: the "theoretical arrival time" (`tat`) at which everything granted
//! so far is paid for at the rate (GCRA). A request reserves bytes by moving `tat` forward by
//! their time at the rate and may go ahead once `tat` is at most one burst (0.5 s) ahead of the
//! clock; later requests queue behind it, so the user's sessions take turns in the order they
//! asked (fair: none can starve another) and all of them together never get more than
//! `rate × elapsed + burst`. Bytes reserved and not used are given back.

use std::sync::atomic::{AtomicU64, Ordering};

/// The burst: how far ahead of the clock grants may run, half a second of the rate (a full
/// bucket after a pause lets a user's next 0.5 s of traffic through at once).
pub const BURST_NS: u64 = 500_000_000;
/// The most one reservation takes, as a share of one second of the rate (1/50: 20 ms), so
/// sessions take turns in small steps.
const QUANTA_PER_SECOND: u64 = 50;
/// The least a reservation takes (unless the rate itself is smaller): reads of a few bytes
/// cost more than they move.
const MIN_QUANTUM: u64 = 1024;
/// What a direction that found nothing to read last time reserves when it would have to
/// wait: it holds no larger place in the queue while it may still have nothing to read.
pub const PROBE: u64 = 64;

/// Bytes a request may move and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Bytes reserved (at least 1).
    pub bytes: u64,
    /// When they may move, in the caller's clock (nanoseconds).
    pub ready_at: u64,
    /// The rate they were reserved at, bytes per second.
    pub rate: u64,
}

/// One direction of one user's rate limit.
#[derive(Debug, Default)]
pub struct RateBucket {
    tat: AtomicU64,
}

/// Nanoseconds `bytes` take at `rate` bytes per second, rounded up; saturating.
pub fn ns_for(bytes: u64, rate: u64) -> u64 {
    let ns = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The most one reservation takes at `rate`.
pub fn quantum(rate: u64) -> u64 {
    (rate / QUANTA_PER_SECOND).max(MIN_QUANTUM).min(rate).max(1)
}

impl RateBucket {
    /// Reserves up to `want` bytes (at least 1) at `rate` (> 0) bytes per second, the clock at
    /// `now`. With `probe` (the last read found nothing), only [`PROBE`] bytes are reserved
    /// when the grant could not go ahead at once.
    pub fn reserve(&self, rate: u64, now: u64, want: u64, probe: bool) -> Grant {
        let full = want.clamp(1, quantum(rate));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now);
            let mut bytes = full;
            let mut next = base.saturating_add(ns_for(bytes, rate));
            if probe && next > now.saturating_add(BURST_NS) {
                bytes = full.min(PROBE);
                next = base.saturating_add(ns_for(bytes, rate));
            }
            match self.tat.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Grant { bytes, ready_at: next.saturating_sub(BURST_NS).max(now), rate },
                Err(current) => tat = current,
            }
        }
    }

    /// Settles `grant`: `used` of its bytes moved, the rest go back to the bucket.
    pub fn settle(&self, grant: Grant, used: u64) {
        let back = ns_for(grant.bytes, grant.rate).saturating_sub(ns_for(used.min(grant.bytes), grant.rate));
        if back > 0 {
            let _ = self
                .tat
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |tat| Some(tat.saturating_sub(back)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RATE: u64 = 1 << 20;

    #[test]
    fn a_full_bucket_grants_at_once_then_queues_at_the_rate() {
        let bucket = RateBucket::default();
        let q = quantum(RATE);
        // The burst goes at once.
        let burst = RATE / 2;
        let mut granted = 0;
        while granted < burst {
            let g = bucket.reserve(RATE, 0, 16 * 1024, false);
            assert_eq!(g.ready_at, 0, "within the burst after {granted}");
            granted += g.bytes;
        }
        // Then each grant waits its time at the rate.
        let g = bucket.reserve(RATE, 0, 16 * 1024, false);
        assert!(g.ready_at > 0 && g.ready_at <= ns_for(q + granted - burst, RATE), "{g:?}");
        // Unused bytes go back.
        bucket.settle(g, 0);
        let again = bucket.reserve(RATE, 0, 16 * 1024, false);
        assert_eq!(again.ready_at, g.ready_at);
        // A probe that would wait reserves only a few bytes.
        let probe = bucket.reserve(RATE, 0, 16 * 1024, true);
        assert_eq!(probe.bytes, PROBE);
    }

    #[test]
    fn turns_alternate_between_sessions() {
        let bucket = RateBucket::default();
        // Drain the burst.
        let mut now = 0;
        while bucket.reserve(RATE, now, u64::MAX, false).ready_at == now {}
        // Two sessions asking in turn get grants in the order they asked, one quantum apart.
        let a = bucket.reserve(RATE, now, u64::MAX, false);
        let b = bucket.reserve(RATE, now, u64::MAX, false);
        assert!(a.ready_at < b.ready_at);
        now = a.ready_at;
        let a2 = bucket.reserve(RATE, now, u64::MAX, false);
        assert!(b.ready_at < a2.ready_at, "a asks again after b: b goes first");
    }

    #[derive(Debug, Clone)]
    struct Step {
        advance_ns: u64,
        want: u64,
        use_share: u8,
        probe: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (0u64..200_000_000, 1u64..100_000, 0u8..=4, any::<bool>())
            .prop_map(|(advance_ns, want, use_share, probe)| Step { advance_ns, want, use_share, probe })
    }

    proptest! {
        /// Whatever the requests and however much of each grant is used, the bytes used by the
        /// time each grant is ready never exceed rate × elapsed + burst.
        #[test]
        fn never_more_than_rate_times_time_plus_burst(
            rate in 1u64..50_000_000,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let bucket = RateBucket::default();
            let burst = u128::from(rate) * u128::from(BURST_NS) / 1_000_000_000 + 1;
            let mut now = 0u64;
            let mut used_total: u128 = 0;
            for s in steps {
                now += s.advance_ns;
                let g = bucket.reserve(rate, now, s.want, s.probe);
                prop_assert!(g.bytes >= 1 && g.bytes <= s.want.max(1) && g.ready_at >= now);
                // The grant is used once ready: the clock moves there.
                now = g.ready_at;
                let used = g.bytes * u64::from(s.use_share) / 4;
                bucket.settle(g, used);
                used_total += u128::from(used);
                let allowed = u128::from(rate) * u128::from(now) / 1_000_000_000 + burst + 1;
                prop_assert!(used_total <= allowed, "{used_total} > {allowed} at {now} ns");
            }
        }

        /// A consumer that always asks for more and uses all it gets moves at least
        /// rate × elapsed − burst (− one quantum of rounding).
        #[test]
        fn a_steady_consumer_gets_the_rate(
            rate in 1024u64..50_000_000,
            want in 1u64..100_000,
            steps in 1usize..300,
        ) {
            let bucket = RateBucket::default();
            let mut now = 0u64;
            let mut used: u128 = 0;
            for _ in 0..steps {
                let g = bucket.reserve(rate, now, want, false);
                now = g.ready_at;
                bucket.settle(g, g.bytes);
                used += u128::from(g.bytes);
            }
            let expected = u128::from(rate) * u128::from(now) / 1_000_000_000;
            let burst = u128::from(rate) * u128::from(BURST_NS) / 1_000_000_000 + 1;
            prop_assert!(used + burst + u128::from(quantum(rate)) >= expected, "{used} < {expected}");
            prop_assert!(used <= expected + burst);
        }

        /// Two sessions taking turns share the rate evenly (each within one quantum of half).
        #[test]
        fn two_sessions_share_evenly(rate in 1024u64..50_000_000, rounds in 10usize..200) {
            let bucket = RateBucket::default();
            let mut now = 0u64;
            let mut got = [0u64; 2];
            for _ in 0..rounds {
                for g in got.iter_mut() {
                    let grant = bucket.reserve(rate, now, 16 * 1024, false);
                    now = now.max(grant.ready_at);
                    bucket.settle(grant, grant.bytes);
                    *g += grant.bytes;
                }
            }
            prop_assert!(got[0].abs_diff(got[1]) <= quantum(rate));
        }
    }
}
