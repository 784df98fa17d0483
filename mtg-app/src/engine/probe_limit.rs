//! The probe limit: bounds the CPU a flood of bad-digest hellos can cost.
//!
//! A ClientHello naming a configured host costs one HMAC per user of that host when no user
//! signed it (about 4.5 ms at 10,000 users). After [`FAILED_SEARCHES`] such failed full
//! searches from one source network (an IPv4 /24 or an IPv6 /64) within [`WINDOW`], further
//! hellos from that network try only their address's hint (the user last matched from it,
//! one HMAC) and are fronted otherwise, until the window that began with the network's first
//! failure has passed. So one network costs at most `FAILED_SEARCHES` full searches per
//! window (about 1.8 ms of CPU per 10 s at 10,000 users), plus at most one search per worker
//! thread racing the check (the check and the search run back to back on one thread).
//!
//! The table is fixed in size ([`BUCKETS`] × [`WAYS`] networks) and allocates nothing after
//! it is built: a network is placed in a bucket by a hash keyed at random per process, each
//! bucket has its own lock (held for a few comparisons, never during HMAC work), and a full
//! bucket evicts an expired entry, else the one with the fewest failures (oldest first). A
//! flood from more networks than the table holds can evict limited networks early; each then
//! gets at most `FAILED_SEARCHES` more searches.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mtg_proto::FrontReason;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Failed full searches a network may cause per window before it is limited to hints.
pub(crate) const FAILED_SEARCHES: u32 = 4;
/// How long a network's failures count, from its first failure in the window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Buckets of the table.
const BUCKETS: usize = 1024;
/// Networks per bucket.
const WAYS: usize = 4;

/// A source network: the tag (1 = IPv4, 2 = IPv6) above its prefix bits; 0 is an empty slot.
type Net = u128;

fn network(ip: IpAddr) -> Net {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (1 << 64) | u128::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (2 << 64) | (u128::from(v6) >> 64),
    }
}

/// A network for logs: `192.0.2.0/24`, `2001:db8::/64`.
struct NetworkName(IpAddr);

impl std::fmt::Display for NetworkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => write!(f, "{}/24", std::net::Ipv4Addr::from(u32::from(v4) & !0xff)),
            IpAddr::V6(v6) => {
                write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX))))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    net: Net,
    since: Instant,
    failures: u32,
}

/// Failed full searches per source network in a fixed-size table.
#[derive(Debug)]
pub(crate) struct ProbeLimiter {
    hasher: RandomState,
    buckets: Box<[Mutex<[Slot; WAYS]>]>,
}

impl ProbeLimiter {
    /// An empty table.
    pub(crate) fn new() -> Self {
        let empty = [Slot { net: 0, since: Instant::now(), failures: 0 }; WAYS];
        Self { hasher: RandomState::new(), buckets: (0..BUCKETS).map(|_| Mutex::new(empty)).collect() }
    }

    fn bucket(&self, net: Net) -> &Mutex<[Slot; WAYS]> {
        let index = self.hasher.hash_one(net) as usize % self.buckets.len();
        &self.buckets[index]
    }

    /// Whether a hello from `ip` may get a full search at `now`.
    pub(crate) fn allows_full_search(&self, ip: IpAddr, now: Instant) -> bool {
        let net = network(ip);
        let bucket = self.bucket(net).lock().unwrap_or_else(PoisonError::into_inner);
        bucket
            .iter()
            .find(|s| s.net == net)
            .is_none_or(|s| now.saturating_duration_since(s.since) >= WINDOW || s.failures < FAILED_SEARCHES)
    }

    /// Counts a failed full search from `ip` at `now`; `true` when this failure is the one that
    /// limits its network.
    pub(crate) fn failed_search(&self, ip: IpAddr, now: Instant) -> bool {
        let net = network(ip);
        let mut bucket = self.bucket(net).lock().unwrap_or_else(PoisonError::into_inner);
        let expired = |s: &Slot| now.saturating_duration_since(s.since) >= WINDOW;
        let slot = match bucket.iter().position(|s| s.net == net) {
            Some(i) => &mut bucket[i],
            None => {
                let victim = bucket
                    .iter()
                    .position(|s| s.net == 0 || expired(s))
                    .or_else(|| (0..WAYS).min_by_key(|&i| (bucket[i].failures, bucket[i].since)))
                    .unwrap_or(0);
                bucket[victim] = Slot { net, since: now, failures: 0 };
                &mut bucket[victim]
            }
        };
        if expired(slot) {
            *slot = Slot { net, since: now, failures: 0 };
        }
        slot.failures = slot.failures.saturating_add(1);
        slot.failures == FAILED_SEARCHES
    }

    /// Counts a fronted hello of `ip` by its `reason`: a failed full search (`BadDigest`,
    /// `TimeSkew`) towards its network's limit, a skipped one in the metrics only.
    pub(crate) fn on_front(&self, ip: IpAddr, reason: FrontReason, metrics: &Metrics) {
        match reason {
            FrontReason::BadDigest | FrontReason::TimeSkew => {
                metrics.probe_search("failed");
                if self.failed_search(ip, Instant::now()) {
                    info!(
                        network = %NetworkName(ip),
                        failed = FAILED_SEARCHES,
                        window_s = WINDOW.as_secs(),
                        "probe limit reached: hellos from this network try their hint only"
                    );
                }
            }
            FrontReason::SearchSkipped => {
                metrics.probe_search("skipped");
                debug!(peer = %ip, "full search skipped: probe limit of this network");
            }
            _ => {}
        }
    }

    /// Networks in the table (expired ones included).
    #[cfg(test)]
    fn occupied(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|s| s.net != 0).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn limit(limiter: &ProbeLimiter, ip: IpAddr, now: Instant) {
        for i in 1..=FAILED_SEARCHES {
            assert!(limiter.allows_full_search(ip, now), "search {i} is allowed");
            assert_eq!(limiter.failed_search(ip, now), i == FAILED_SEARCHES);
        }
        assert!(!limiter.allows_full_search(ip, now));
    }

    #[test]
    fn a_slash_24_shares_one_budget_and_its_neighbours_do_not() {
        let limiter = ProbeLimiter::new();
        let now = Instant::now();
        for d in 0..FAILED_SEARCHES as u8 {
            limiter.failed_search(v4(192, 0, 2, d * 60), now);
        }
        assert!(!limiter.allows_full_search(v4(192, 0, 2, 255), now));
        assert!(!limiter.allows_full_search(v4(192, 0, 2, 1), now));
        assert!(limiter.allows_full_search(v4(192, 0, 3, 1), now));
        assert!(limiter.allows_full_search(v4(192, 1, 2, 1), now));
        // An IPv4-mapped IPv6 address (a dual-stack listener's view) is its IPv4 network.
        assert!(!limiter.allows_full_search(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()), now));
    }

    #[test]
    fn a_slash_64_shares_one_budget_and_its_neighbours_do_not() {
        let limiter = ProbeLimiter::new();
        let now = Instant::now();
        let ip =
            |last: u16, fourth: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, fourth, 0xa, 0xb, 0xc, last));
        limit(&limiter, ip(1, 2), now);
        assert!(!limiter.allows_full_search(ip(0xffff, 2), now));
        assert!(!limiter.allows_full_search(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9)), now));
        assert!(limiter.allows_full_search(ip(1, 3), now));
        // Tags keep the families apart even where the prefix bits agree.
        assert!(limiter.allows_full_search(v4(0, 0, 0, 1), now));
    }

    #[test]
    fn networks_are_named_by_their_prefix() {
        assert_eq!(NetworkName(v4(192, 0, 2, 77)).to_string(), "192.0.2.0/24");
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
        assert_eq!(NetworkName(v6).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_window_expires_from_the_first_failure() {
        let limiter = ProbeLimiter::new();
        let start = Instant::now();
        let ip = v4(198, 51, 100, 9);
        limiter.failed_search(ip, start);
        let later = start + WINDOW / 2;
        for _ in 1..FAILED_SEARCHES {
            limiter.failed_search(ip, later);
        }
        assert!(!limiter.allows_full_search(ip, later));
        assert!(!limiter.allows_full_search(ip, start + WINDOW - Duration::from_millis(1)));
        assert!(limiter.allows_full_search(ip, start + WINDOW));
        // A failure after expiry opens a new window with a count of one.
        assert!(!limiter.failed_search(ip, start + WINDOW));
        assert!(limiter.allows_full_search(ip, start + WINDOW));
        limit(&limiter, v4(198, 51, 100, 10), start + WINDOW * 3);
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_networks() {
        let limiter = ProbeLimiter::new();
        let now = Instant::now();
        let networks = BUCKETS * WAYS * 4;
        for n in 0..networks {
            let n = n as u32;
            limiter.failed_search(IpAddr::V4(Ipv4Addr::from((n << 8) | 1)), now);
        }
        assert!(limiter.occupied() <= BUCKETS * WAYS);
        assert!(limiter.occupied() > BUCKETS * WAYS / 2, "the table is used");
    }

    #[test]
    fn a_limited_network_outlives_a_flood_of_single_failures_in_its_bucket() {
        let limiter = ProbeLimiter::new();
        let now = Instant::now();
        let target = v4(203, 0, 113, 1);
        limit(&limiter, target, now);
        // Networks with one failure each, all landing in the target's bucket.
        let mut same_bucket = 0;
        for n in 0u32.. {
            let ip = IpAddr::V4(Ipv4Addr::from((n << 8) | 1));
            if network(ip) == network(target)
                || limiter.hasher.hash_one(network(ip)) as usize % BUCKETS
                    != limiter.hasher.hash_one(network(target)) as usize % BUCKETS
            {
                continue;
            }
            limiter.failed_search(ip, now);
            same_bucket += 1;
            if same_bucket == WAYS * 3 {
                break;
            }
        }
        assert!(!limiter.allows_full_search(target, now), "the fewest-failures entries go first");
    }
}
