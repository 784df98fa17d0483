//! One user's `rate-limit` as live sessions see it: the rate (changed by reloads, read by
//! every limited read), a bucket per direction shared by all of the user's sessions, and the
//! time its sessions spent waiting for the buckets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::rate_bucket::{Grant, RateBucket};

/// A direction of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → Telegram.
    Up,
    /// Telegram → client.
    Down,
}

/// A user's rate limit and its buckets.
#[derive(Debug, Default)]
pub struct UserRate {
    /// Bytes per second each direction; 0 = no limit.
    rate: AtomicU64,
    up: RateBucket,
    down: RateBucket,
    /// Nanoseconds the user's session directions waited for tokens, summed over them.
    limited_ns: AtomicU64,
}

/// The clock of every bucket: nanoseconds since the first reading.
pub fn now_ns() -> u64 {
    let origin = origin();
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `ns` (as [`now_ns`] counts) stands for.
pub fn instant_at(ns: u64) -> Instant {
    origin() + Duration::from_nanos(ns)
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl UserRate {
    /// Takes the rate for live and later sessions (at start and reload); `None` = no limit.
    pub fn set(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// The rate now, bytes per second; `None` = no limit.
    pub fn get(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    fn bucket(&self, direction: Direction) -> &RateBucket {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// Reserves up to `want` bytes in `direction` at `rate`, the clock at `now` ([`now_ns`]);
    /// a grant that has to wait adds its wait to the time spent limited.
    pub fn reserve(&self, direction: Direction, rate: u64, now: u64, want: u64, probe: bool) -> Grant {
        let grant = self.bucket(direction).reserve(rate, now, want, probe);
        if grant.ready_at > now {
            self.limited_ns.fetch_add(grant.ready_at - now, Ordering::Relaxed);
        }
        grant
    }

    /// Settles a grant of `direction`: `used` bytes moved, the rest go back.
    pub fn settle(&self, direction: Direction, grant: Grant, used: u64) {
        self.bucket(direction).settle(grant, used);
    }

    /// Time the user's session directions spent waiting for tokens, summed over them.
    pub fn limited(&self) -> Duration {
        Duration::from_nanos(self.limited_ns.load(Ordering::Relaxed))
    }
}
