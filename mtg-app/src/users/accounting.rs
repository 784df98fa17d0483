//! Per-user counters: live connections (admitted sessions), MTProto payload bytes each way,
//! the last admission time. Lock-free; admission against a cap is an atomic reserve, so
//! concurrent handshakes can never push a user over its cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One user's counters.
#[derive(Debug, Default)]
pub struct UserStats {
    connections: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Unix milliseconds of the last admitted connection; 0 = never.
    last_seen_ms: AtomicI64,
    /// Bytes both ways counted against the quota in the current period.
    quota_used: AtomicU64,
    /// The quota period `quota_used` belongs to (months since year 0 for monthly resets).
    quota_period: AtomicU64,
}

/// A snapshot of one user's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserSnapshot {
    /// Live admitted sessions.
    pub connections: u64,
    /// Payload bytes from the client.
    pub bytes_in: u64,
    /// Payload bytes to the client.
    pub bytes_out: u64,
    /// Unix milliseconds of the last admission, if any.
    pub last_seen_ms: Option<i64>,
}

impl UserStats {
    /// Admits a connection unless `cap` is reached: compare-and-swap, so the count never
    /// exceeds the cap whatever runs concurrently. The guard releases the slot on drop.
    pub fn try_admit(self: &Arc<Self>, cap: Option<u64>, now_ms: i64) -> Option<Admitted> {
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if cap.is_some_and(|cap| current >= cap) {
                return None;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
        Some(Admitted(self.clone()))
    }

    /// Adds relayed payload bytes.
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        if bytes_in + bytes_out > 0 {
            self.quota_used.fetch_add(bytes_in + bytes_out, Ordering::Relaxed);
        }
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        }
        if bytes_out > 0 {
            self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
    }

    /// Bytes used against the quota in `period`: starts the period over (from zero) when the
    /// stored one is older.
    pub fn quota_used(&self, period: u64) -> u64 {
        let stored = self.quota_period.load(Ordering::Relaxed);
        if stored < period
            && self.quota_period.compare_exchange(stored, period, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.quota_used.store(0, Ordering::Relaxed);
        }
        self.quota_used.load(Ordering::Relaxed)
    }

    /// Restores persisted quota usage.
    pub fn restore_quota(&self, used: u64, period: u64) {
        self.quota_period.store(period, Ordering::Relaxed);
        self.quota_used.store(used, Ordering::Relaxed);
    }

    /// The persisted form: (bytes used, period).
    pub fn quota_state(&self) -> (u64, u64) {
        (self.quota_used.load(Ordering::Relaxed), self.quota_period.load(Ordering::Relaxed))
    }

    /// Live admitted sessions.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn snapshot(&self) -> UserSnapshot {
        let last = self.last_seen_ms.load(Ordering::Relaxed);
        UserSnapshot {
            connections: self.connections(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            last_seen_ms: (last != 0).then_some(last),
        }
    }
}

/// An admitted session's slot; releases it on drop.
#[derive(Debug)]
pub struct Admitted(Arc<UserStats>);

impl Admitted {
    /// The user's counters.
    pub fn stats(&self) -> &UserStats {
        &self.0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_concurrent_admissions_never_pass_the_cap() {
        let stats = Arc::new(UserStats::default());
        let barrier = Arc::new(std::sync::Barrier::new(50));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (stats, barrier) = (stats.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    stats.try_admit(Some(7), 1)
                })
            })
            .collect();
        let admitted: Vec<Admitted> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert_eq!(admitted.len(), 7);
        assert_eq!(stats.connections(), 7);
        drop(admitted);
        assert_eq!(stats.connections(), 0);
        assert_eq!(stats.snapshot().last_seen_ms, Some(1));
    }
}
