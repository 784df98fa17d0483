//! Per-user counters: live connections (admitted sessions), MTProto payload bytes each way,
//! the last admission time, the distinct client addresses with live sessions. Counting bytes
//! is lock-free (one more atomic load tells whether the quota is used up); admission against a
//! cap is an atomic reserve, so concurrent handshakes can never push a user over its cap; the
//! addresses are a small locked list touched only at admission and when a session ends.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::SecretLimits;
use crate::metrics::Waited;

use super::gate::UserGate;
use super::rate_limit::UserRate;

/// No quota (`quota_limit`) / no expiry (`expires_ms`).
const NONE_U64: u64 = u64::MAX;
const NONE_I64: i64 = i64::MAX;

/// One user's counters.
#[derive(Debug)]
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
    /// The user's quota now (`u64::MAX`: none), kept current by reloads.
    quota_limit: AtomicU64,
    /// The user's `expires` now, Unix milliseconds (`i64::MAX`: none), kept current by reloads.
    expires_ms: AtomicI64,
    /// The distinct client addresses with live sessions.
    addresses: Mutex<Addresses>,
    /// `rate-limit` and its buckets, kept current by reloads.
    rate: UserRate,
    /// The user's live sessions on the fleet's other instances, as last read (`[cluster]`).
    others_connections: AtomicU64,
}

impl Default for UserStats {
    fn default() -> Self {
        Self {
            connections: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_seen_ms: AtomicI64::new(0),
            quota_used: AtomicU64::new(0),
            quota_period: AtomicU64::new(0),
            quota_limit: AtomicU64::new(NONE_U64),
            expires_ms: AtomicI64::new(NONE_I64),
            addresses: Mutex::new(Addresses::default()),
            rate: UserRate::default(),
            others_connections: AtomicU64::new(0),
        }
    }
}

/// Client addresses with their live session counts (an address counts until its last session
/// ends), and the addresses live on the fleet's other instances (empty without cluster-wide
/// `max-ips`). A user has few addresses, so lists beat maps.
#[derive(Debug, Default, Clone)]
pub struct Addresses(Vec<(IpAddr, u32)>, Vec<IpAddr>);

impl Addresses {
    /// Counts one more session from `ip`, unless `ip` is new and `max` (> 0) other addresses
    /// already have live sessions, here or (cluster-wide `max-ips`) on the fleet's other
    /// instances as last read; `false` = refused, nothing counted.
    pub fn try_add(&mut self, ip: IpAddr, max: u32) -> bool {
        if let Some((_, n)) = self.0.iter_mut().find(|(a, _)| *a == ip) {
            *n += 1;
            return true;
        }
        let elsewhere = self.1.iter().filter(|a| !self.0.iter().any(|(own, _)| own == *a)).count();
        if max > 0 && !self.1.contains(&ip) && self.0.len() + elsewhere >= max as usize {
            return false;
        }
        self.0.push((ip, 1));
        true
    }

    /// Sets the addresses with live sessions on the fleet's other instances.
    pub fn set_others(&mut self, others: Vec<IpAddr>) {
        self.1 = others;
    }

    /// The addresses with live sessions here.
    pub fn own(&self) -> Vec<IpAddr> {
        self.0.iter().map(|(a, _)| *a).collect()
    }

    /// Counts one session from `ip` less.
    pub fn remove(&mut self, ip: IpAddr) {
        if let Some(i) = self.0.iter().position(|(a, _)| *a == ip) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    /// Distinct addresses with live sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no address has a live session.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why an admission failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// At the connection cap.
    OverCap,
    /// A new address while `max-ips` others have live sessions.
    TooManyAddresses,
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
    /// Admits a connection from `ip` unless `cap` is reached (compare-and-swap, so the count
    /// never exceeds the cap whatever runs concurrently) or `ip` is one address too many for
    /// `max_ips` (0 = no limit). The guard releases the slot and the address on drop and ends
    /// the session when `gate` closes.
    pub fn try_admit(
        self: &Arc<Self>,
        cap: Option<u64>,
        ip: IpAddr,
        max_ips: u32,
        now_ms: i64,
        gate: Arc<UserGate>,
    ) -> Result<Admitted, NotAdmitted> {
        let ip = ip.to_canonical();
        if !self.lock_addresses().try_add(ip, max_ips) {
            return Err(NotAdmitted::TooManyAddresses);
        }
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if cap.is_some_and(|cap| current >= cap) {
                self.lock_addresses().remove(ip);
                return Err(NotAdmitted::OverCap);
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
        gate.admitted();
        Ok(Admitted { stats: self.clone(), gate, ip, waited: None })
    }

    fn lock_addresses(&self) -> std::sync::MutexGuard<'_, Addresses> {
        // A poisoned lock only means a panic elsewhere mid-update: the list is whole.
        self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Distinct client addresses with live sessions.
    pub fn addresses(&self) -> usize {
        self.lock_addresses().len()
    }

    /// The client addresses with live sessions here (for the fleet's heartbeat).
    pub fn address_list(&self) -> Vec<IpAddr> {
        self.lock_addresses().own()
    }

    /// Records the user's client addresses with live sessions on the fleet's other instances
    /// (cluster-wide `max-ips`): [`Self::try_admit`] counts them as taken.
    pub fn set_others_addresses(&self, others: Vec<IpAddr>) {
        self.lock_addresses().set_others(others);
    }

    /// The user's rate limit and its buckets.
    pub fn rate(&self) -> &UserRate {
        &self.rate
    }

    /// Takes the quota, the expiry and the rate limit of `limits` for live sessions (at start
    /// and reload).
    pub fn set_limits(&self, limits: &SecretLimits) {
        self.rate.set(limits.rate_limit);
        self.quota_limit.store(limits.quota.unwrap_or(NONE_U64), Ordering::Relaxed);
        let expires = limits.expires.map_or(NONE_I64, |s| s.saturating_mul(1000));
        self.expires_ms.store(expires, Ordering::Relaxed);
    }

    /// How long until `expires` from `now_ms` (Unix milliseconds): `None` without one, zero
    /// once reached.
    pub fn until_expiry(&self, now_ms: i64) -> Option<Duration> {
        let at = self.expires_ms.load(Ordering::Relaxed);
        (at != NONE_I64).then(|| Duration::from_millis(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0)))
    }

    /// Adds relayed payload bytes; `true` when the quota is used up (crossed now or before).
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) -> bool {
        let mut over = false;
        if bytes_in + bytes_out > 0 {
            let before = self.quota_used.fetch_add(bytes_in + bytes_out, Ordering::Relaxed);
            over = before.saturating_add(bytes_in + bytes_out) >= self.quota_limit.load(Ordering::Relaxed);
        }
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        }
        if bytes_out > 0 {
            self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
        over
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

    /// The user's live sessions on the fleet's other instances, as last read.
    pub fn others_connections(&self) -> u64 {
        self.others_connections.load(Ordering::Relaxed)
    }

    /// Records the user's live sessions on the fleet's other instances.
    pub fn set_others_connections(&self, n: u64) {
        self.others_connections.store(n, Ordering::Relaxed);
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

/// An admitted session's slot and address; releases both on drop.
#[derive(Debug)]
pub struct Admitted {
    stats: Arc<UserStats>,
    gate: Arc<UserGate>,
    ip: IpAddr,
    /// The user's `user_rate_limited_milliseconds` counter (rate-limited users).
    waited: Option<Waited>,
}

impl Admitted {
    /// The user's counters.
    pub fn stats(&self) -> &UserStats {
        &self.stats
    }

    /// The user's counters, shared (a session's rate gates hold them).
    pub fn shared_stats(&self) -> Arc<UserStats> {
        self.stats.clone()
    }

    /// Counts the session's waits for the rate limit into `waited` too.
    pub fn with_rate_meter(mut self, waited: Waited) -> Self {
        self.waited = Some(waited);
        self
    }

    /// The counter of the session's waits for the rate limit, if any.
    pub fn rate_meter(&self) -> Option<Waited> {
        self.waited.clone()
    }

    /// What the session watches: it ends when this closes (a reload revoked the user, or
    /// any of the user's sessions used up the quota).
    pub fn watch(&self) -> async_channel::Receiver<()> {
        self.gate.watch()
    }

    /// Counts relayed payload bytes; a count that finds the quota used up closes the user's
    /// gate, ending all of the user's sessions. Lock-free unless it closes.
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        if self.stats.add_bytes(bytes_in, bytes_out) {
            self.gate.close_over_quota();
        }
    }

    /// How long until the user's `expires` (as it is now, after any reload); zero once
    /// reached, `None` without one.
    pub fn until_expiry(&self) -> Option<Duration> {
        self.stats.until_expiry(crate::engine::unix_ms())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::AcqRel);
        self.stats.lock_addresses().remove(self.ip);
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
                    stats.try_admit(Some(7), LOCAL, 0, 1, Arc::default()).ok()
                })
            })
            .collect();
        let admitted: Vec<Admitted> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert_eq!(admitted.len(), 7);
        assert_eq!(stats.connections(), 7);
        drop(admitted);
        assert_eq!(stats.connections(), 0);
        assert_eq!(stats.snapshot().last_seen_ms, Some(1));
        assert_eq!(stats.addresses(), 0);
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
    }

    #[test]
    fn cluster_wide_max_ips_counts_the_other_instances_addresses() {
        let stats = Arc::new(UserStats::default());
        let gate = Arc::new(UserGate::default());
        let admit = |n| stats.try_admit(None, ip(n), 2, 1, gate.clone());
        // .2 and .3 are live elsewhere: the two addresses are taken fleet-wide.
        stats.set_others_addresses(vec![ip(2), ip(3)]);
        assert_eq!(admit(4).unwrap_err(), NotAdmitted::TooManyAddresses);
        let two = admit(2).expect("an address live elsewhere is not a new one");
        assert_eq!(stats.address_list(), [ip(2)]);
        assert_eq!(admit(4).unwrap_err(), NotAdmitted::TooManyAddresses, ".2 counted once");
        // .3 left the other instance: one address is free again.
        stats.set_others_addresses(vec![ip(2)]);
        let four = admit(4).expect(".2 here and there is one address");
        assert_eq!(admit(5).unwrap_err(), NotAdmitted::TooManyAddresses);
        drop((two, four));
        assert_eq!(stats.address_list(), Vec::<IpAddr>::new());
    }

    #[test]
    fn max_ips_counts_addresses_until_their_last_session_ends() {
        let stats = Arc::new(UserStats::default());
        let gate = Arc::new(UserGate::default());
        let admit = |n| stats.try_admit(None, ip(n), 2, 1, gate.clone());
        let two_a = admit(2).unwrap();
        let three = [admit(3).unwrap(), admit(3).unwrap()];
        assert_eq!(admit(4).unwrap_err(), NotAdmitted::TooManyAddresses);
        let two_b = admit(2).expect("a known address may open more");
        assert_eq!(stats.addresses(), 2);
        let [a, b] = three;
        drop(a);
        assert_eq!(admit(4).unwrap_err(), NotAdmitted::TooManyAddresses, ".3 still has a session");
        drop(b);
        let four = admit(4).expect("admitted once .3's last session ended");
        // IPv4-mapped IPv6 is the same address.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(127, 0, 0, 4).to_ipv6_mapped());
        let again = stats.try_admit(None, mapped, 2, 1, gate.clone()).expect("same address");
        assert_eq!(stats.addresses(), 2);
        // A refusal by the cap leaves no address behind.
        drop((two_a, two_b, four, again));
        assert_eq!(stats.try_admit(Some(0), ip(5), 2, 1, gate.clone()).unwrap_err(), NotAdmitted::OverCap);
        assert_eq!(stats.addresses(), 0);
    }

    #[test]
    fn a_burst_from_one_address_never_trips_max_ips() {
        let stats = Arc::new(UserStats::default());
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (stats, barrier) = (stats.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    stats.try_admit(None, ip(2), 1, 1, Arc::default())
                })
            })
            .collect();
        let admitted: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(admitted.iter().all(Result::is_ok));
        assert_eq!(stats.addresses(), 1);
    }

    #[test]
    fn crossing_the_quota_closes_every_session_of_the_user() {
        let stats = Arc::new(UserStats::default());
        stats.set_limits(&SecretLimits { quota: Some(100), ..SecretLimits::default() });
        let gate = Arc::new(UserGate::default());
        let a = stats.try_admit(None, ip(2), 0, 1, gate.clone()).unwrap();
        let b = stats.try_admit(None, ip(3), 0, 1, gate.clone()).unwrap();
        a.add_bytes(60, 39);
        assert!(!a.watch().is_closed() && !b.watch().is_closed());
        a.add_bytes(1, 0);
        assert!(a.watch().is_closed() && b.watch().is_closed(), "the crossing ends them all");
        // A new period re-admits: the next admission gets an open switch.
        stats.restore_quota(0, 1);
        let c = stats.try_admit(None, ip(2), 0, 1, gate.clone()).unwrap();
        assert!(!c.watch().is_closed());
        // No quota: never over.
        stats.set_limits(&SecretLimits::default());
        c.add_bytes(u64::MAX / 4, 0);
        assert!(!c.watch().is_closed());
    }

    #[test]
    fn expiry_is_read_live() {
        let stats = UserStats::default();
        assert_eq!(stats.until_expiry(5_000), None);
        stats.set_limits(&SecretLimits { expires: Some(10), ..SecretLimits::default() });
        assert_eq!(stats.until_expiry(5_000), Some(Duration::from_secs(5)));
        assert_eq!(stats.until_expiry(20_000), Some(Duration::ZERO));
        // A reload extending it reaches live sessions.
        stats.set_limits(&SecretLimits { expires: Some(30), ..SecretLimits::default() });
        assert_eq!(stats.until_expiry(20_000), Some(Duration::from_secs(10)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(u8),
        Close(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![(0u8..6).prop_map(Op::Open), any::<usize>().prop_map(Op::Close)]
    }

    proptest::proptest! {
        /// Against a model: an address is admitted iff it is live already or fewer than `max`
        /// addresses are live; the count is always the model's distinct live addresses.
        #[test]
        fn address_counter_matches_a_model(max in 0u32..4, ops in proptest::collection::vec(op(), 0..80)) {
            let mut counter = Addresses::default();
            let mut live: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Open(n) => {
                        let distinct: std::collections::BTreeSet<u8> = live.iter().copied().collect();
                        let allowed = distinct.contains(&n) || max == 0 || distinct.len() < max as usize;
                        proptest::prop_assert_eq!(counter.try_add(ip(n), max), allowed);
                        if allowed {
                            live.push(n);
                        }
                    }
                    Op::Close(i) if !live.is_empty() => {
                        let n = live.swap_remove(i % live.len());
                        counter.remove(ip(n));
                    }
                    Op::Close(_) => {}
                }
                let distinct: std::collections::BTreeSet<u8> = live.iter().copied().collect();
                proptest::prop_assert_eq!(counter.len(), distinct.len());
                proptest::prop_assert!(max == 0 || counter.len() <= max as usize);
            }
        }

        /// However bytes arrive, the quota reads as used up exactly from the count that
        /// reaches it on.
        #[test]
        fn quota_crossing_is_exact(quota in 1u64..10_000, chunks in proptest::collection::vec((0u64..3000, 0u64..3000), 1..30)) {
            let stats = UserStats::default();
            stats.set_limits(&SecretLimits { quota: Some(quota), ..SecretLimits::default() });
            let mut total = 0u64;
            for (up, down) in chunks {
                let over = stats.add_bytes(up, down);
                total += up + down;
                if up + down > 0 {
                    proptest::prop_assert_eq!(over, total >= quota);
                }
            }
        }
    }
}
