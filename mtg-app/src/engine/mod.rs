//! The proxy engine (the data plane): listeners and their accept loops, per-connection
//! handshake, domain fronting, DC dialing, relay and shaping, the users' [`Directory`] and the
//! [`Shared`] state sessions use, written once against the [`Runtime`](crate::runtime::Runtime)
//! seam and run by either adapter. The control plane (API, reloads, usage persistence,
//! exporters, background tasks) lives in [`crate::control`] and drives this module; nothing
//! here depends on it.

mod buffer_pool;
mod client_mss;
mod doppel;
mod fronting;
mod hints;
mod listener;
mod middle_session;
mod probe_limit;
pub(crate) mod rate_gate;
pub(crate) mod relay;
#[doc(hidden)]
pub mod relay_probe;
mod session;
mod settings;
mod shaper;
mod socks5;
mod tuning;
pub(crate) mod upstream;
mod zero_copy;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mtg_proto::{HostId, ReplayCache, Secret, UserId, UserTable};

use std::collections::BTreeMap;

use crate::config::{AdTag, AdTags, SecretLimits};
pub use crate::ip_filter::IpFilter;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::users::accounting::UserStats;
use crate::users::gate::UserGate;
use crate::users::throttle::Throttle;

pub use crate::ip_filter::AllowAll;
pub use client_mss::ClientSegments;
pub use doppel::Doppelganger;
pub(crate) use listener::{accept_loop, bind_listeners, spawn_tracked, until_stopped};
pub use settings::Settings;
pub use tuning::{Keepalive, TcpTuning};

/// The users the engine serves: names (for logs and stats) and the core's table.
#[derive(Debug)]
pub struct Directory {
    names: Vec<String>,
    secrets: Vec<Secret>,
    table: UserTable,
    stats: Vec<Arc<UserStats>>,
    /// Each user's effective limits: its own table, else the default.
    limits: Vec<SecretLimits>,
    /// Each user's own `[secret-limits.NAME]` table, if any.
    own_limits: Vec<Option<SecretLimits>>,
    /// `[secret-limits-default]`.
    default_limits: SecretLimits,
    /// The switch each user's live sessions watch (kept across reloads while the secret is).
    gates: Vec<Arc<UserGate>>,
    /// `ad-tag`.
    global_ad_tag: Option<AdTag>,
    /// Each user's own `[secret-ad-tags]` entry, by id.
    own_ad_tags: Vec<Option<AdTag>>,
    /// Each user's effective tag (own, else global), by id.
    ad_tags: Vec<Option<AdTag>>,
    /// The host [`Directory::default_host`] names, chosen once per build.
    default_host: Option<HostId>,
}

/// What a reload changed, by user name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// New users.
    pub added: Vec<String>,
    /// Users gone (their sessions were closed).
    pub removed: Vec<String>,
    /// Users with a new secret (their sessions were closed).
    pub rekeyed: Vec<String>,
    /// Users whose limits changed (sessions closed if now disabled, expired or over quota,
    /// or restarted when `expires` moved earlier).
    pub relimited: Vec<String>,
    /// Users that stay and whose effective ad tag changed: new sessions get the new tag, live
    /// sessions are not touched.
    pub retagged: Vec<String>,
}

impl Directory {
    /// Builds the directory from (name, secret) pairs, per-name limits (users without their
    /// own get `default_limits`) and the ad tags; ids follow the given order.
    pub fn new(
        users: &[(String, Secret)],
        limits: &BTreeMap<String, SecretLimits>,
        default_limits: &SecretLimits,
        ad_tags: &AdTags,
    ) -> Self {
        let table = UserTable::new(users.iter().map(|(_, s)| s));
        // mtg-multi's default target: the host of the alphabetically first FakeTLS user.
        let default_host = users
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| Some((name, table.user_host(UserId(i as u32))?)))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, host)| host);
        let limits_of = |n: &String| limits.get(n).unwrap_or(default_limits).clone();
        let stats: Vec<Arc<UserStats>> = users.iter().map(|_| Arc::new(UserStats::default())).collect();
        for (stats, (n, _)) in stats.iter().zip(users) {
            stats.set_limits(&limits_of(n));
        }
        Self {
            names: users.iter().map(|(n, _)| n.clone()).collect(),
            secrets: users.iter().map(|(_, s)| s.clone()).collect(),
            table,
            stats,
            limits: users.iter().map(|(n, _)| limits_of(n)).collect(),
            own_limits: users.iter().map(|(n, _)| limits.get(n).cloned()).collect(),
            default_limits: default_limits.clone(),
            gates: users.iter().map(|_| Arc::default()).collect(),
            global_ad_tag: ad_tags.global,
            own_ad_tags: users.iter().map(|(n, _)| ad_tags.per_user.get(n).copied()).collect(),
            ad_tags: users.iter().map(|(n, _)| ad_tags.effective(n)).collect(),
            default_host,
        }
    }

    /// The directory for new users, limits and ad tags, keeping the counters of every user that
    /// stays (by name) and the live sessions of every user whose secret did not change. A new
    /// ad tag never closes a session: it applies to sessions admitted from then on. Live
    /// sessions read the new quota and `expires` at once. Returns the gates to close and what
    /// changed.
    fn rebuild(
        &self,
        users: &[(String, Secret)],
        limits: &BTreeMap<String, SecretLimits>,
        default_limits: &SecretLimits,
        ad_tags: &AdTags,
        now_ms: i64,
    ) -> (Self, Vec<Arc<UserGate>>, ReloadSummary) {
        let mut next = Self::new(users, limits, default_limits, ad_tags);
        let mut summary = ReloadSummary::default();
        let mut to_close = Vec::new();
        for (i, name) in next.names.iter().enumerate() {
            let Some(old) = self.names.iter().position(|n| n == name) else {
                summary.added.push(name.clone());
                continue;
            };
            next.stats[i] = self.stats[old].clone();
            next.stats[i].set_limits(&next.limits[i]);
            if next.secrets[i] == self.secrets[old] {
                next.gates[i] = self.gates[old].clone();
            } else {
                summary.rekeyed.push(name.clone());
                to_close.push(self.gates[old].clone());
            }
            if next.limits[i] != self.limits[old] {
                summary.relimited.push(name.clone());
                let refused =
                    crate::users::limits::refusal(&next.limits[i], &next.stats[i], now_ms).is_some();
                // Live sessions armed their expiry timer for the old instant.
                let earlier = next.limits[i]
                    .expires
                    .is_some_and(|at| self.limits[old].expires.is_none_or(|was| at < was));
                if refused || earlier {
                    to_close.push(next.gates[i].clone());
                }
                if !refused && next.gates[i].is_closed() && next.secrets[i] == self.secrets[old] {
                    // Allowed again (re-enabled, quota raised): later sessions get an open gate.
                    next.gates[i].reopen();
                }
            }
            if next.ad_tags[i] != self.ad_tags[old] {
                summary.retagged.push(name.clone());
            }
        }
        for (old, name) in self.names.iter().enumerate() {
            if !next.names.contains(name) {
                summary.removed.push(name.clone());
                to_close.push(self.gates[old].clone());
            }
        }
        (next, to_close, summary)
    }

    /// The ad tag a session of this user id gets when it is admitted: the user's own
    /// `[secret-ad-tags]` entry, else `ad-tag`; `None` = direct to the DCs. Read once per
    /// session (a reload changes it for later sessions only); a tagged session goes through a
    /// middle proxy when one is known and reachable.
    pub fn ad_tag(&self, user: UserId) -> Option<AdTag> {
        self.ad_tags.get(user.0 as usize).copied().flatten()
    }

    /// `ad-tag`, the tag of every user without one of its own.
    pub fn global_ad_tag(&self) -> Option<AdTag> {
        self.global_ad_tag
    }

    /// Every user's own `[secret-ad-tags]` entry, by id.
    pub fn own_ad_tags(&self) -> &[Option<AdTag>] {
        &self.own_ad_tags
    }

    /// Every user's effective ad tag, by id.
    pub fn all_ad_tags(&self) -> &[Option<AdTag>] {
        &self.ad_tags
    }

    /// The ad tags as configured (global and per-user), for the management API.
    pub fn ad_tag_config(&self) -> AdTags {
        AdTags {
            global: self.global_ad_tag,
            per_user: self
                .names
                .iter()
                .zip(&self.own_ad_tags)
                .filter_map(|(n, t)| Some((n.clone(), (*t)?)))
                .collect(),
        }
    }

    /// The session gate of a user id.
    pub(crate) fn gate(&self, user: UserId) -> Option<&Arc<UserGate>> {
        self.gates.get(user.0 as usize)
    }

    /// Every user's secret, by id.
    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// Every user's effective limits (its own table, else `[secret-limits-default]`), by id.
    pub fn all_limits(&self) -> &[SecretLimits] {
        &self.limits
    }

    /// Every user's own `[secret-limits.NAME]` table, by id (`None`: it gets the default).
    pub fn own_limits(&self) -> &[Option<SecretLimits>] {
        &self.own_limits
    }

    /// `[secret-limits-default]`.
    pub fn default_limits(&self) -> &SecretLimits {
        &self.default_limits
    }

    /// The limits of a user id (all off when none are configured).
    pub fn limits(&self, user: UserId) -> Option<&SecretLimits> {
        self.limits.get(user.0 as usize)
    }

    /// The counters of a user id.
    pub fn stats(&self, user: UserId) -> Option<&Arc<UserStats>> {
        self.stats.get(user.0 as usize)
    }

    /// Every user's counters, by id.
    pub fn all_stats(&self) -> &[Arc<UserStats>] {
        &self.stats
    }

    /// Every user's name, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The name of a user id.
    pub fn name(&self, user: UserId) -> &str {
        self.names.get(user.0 as usize).map_or("?", String::as_str)
    }

    /// The core's table.
    pub fn table(&self) -> &UserTable {
        &self.table
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The fronting hostname of the alphabetically first FakeTLS user (mtg-multi's default
    /// target when the SNI matched nothing), chosen when the directory was built.
    pub fn default_host(&self) -> Option<&str> {
        self.default_host.and_then(|h| self.table.host_name(h))
    }
}

/// State shared by every connection.
pub struct Shared {
    settings: Settings,
    users: RwLock<Arc<Directory>>,
    replay: Mutex<Box<dyn ReplayCache + Send>>,
    hints: hints::HintCache,
    probe_limit: probe_limit::ProbeLimiter,
    front_addrs: fronting::AddrCache,
    ip_filter: Box<dyn IpFilter>,
    active: AtomicUsize,
    throttle: Option<Throttle>,
    started_at_ms: i64,
    metrics: Metrics,
    doppelganger: Doppelganger,
    middle: crate::middle::MiddleStore,
    middle_pool: crate::middle::MiddlePool,
    /// `fast-mode` as last loaded (reloads change it for new sessions).
    fast_mode: AtomicBool,
    /// Whether the one "fast mode does not apply through middle proxies" warning was logged.
    fast_mode_middle_warned: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state for a proxy with these settings, users, replay cache, IP filter and
    /// metrics.
    pub fn new(
        settings: Settings,
        users: Directory,
        replay: Box<dyn ReplayCache + Send>,
        ip_filter: Box<dyn IpFilter>,
        metrics: Metrics,
    ) -> Arc<Self> {
        let throttle_limit = u64::from(settings.config.throttle.max_connections);
        let fast_mode = AtomicBool::new(settings.config.fast_mode);
        Arc::new(Self {
            settings,
            users: RwLock::new(Arc::new(users)),
            replay: Mutex::new(replay),
            hints: hints::HintCache::new(4096),
            probe_limit: probe_limit::ProbeLimiter::new(),
            front_addrs: fronting::AddrCache::default(),
            ip_filter,
            active: AtomicUsize::new(0),
            throttle: (throttle_limit > 0).then(|| Throttle::new(throttle_limit)),
            started_at_ms: unix_ms(),
            metrics,
            doppelganger: Doppelganger::default(),
            middle: crate::middle::MiddleStore::default(),
            middle_pool: crate::middle::MiddlePool::default(),
            fast_mode,
            fast_mode_middle_warned: AtomicBool::new(false),
        })
    }

    /// Whether new direct sessions use fast mode (`fast-mode`, as last loaded).
    pub fn fast_mode(&self) -> bool {
        self.fast_mode.load(Ordering::Relaxed)
    }

    /// Sets `fast-mode` for new sessions (a reload); returns the value it had.
    pub fn set_fast_mode(&self, on: bool) -> bool {
        self.fast_mode.swap(on, Ordering::Relaxed)
    }

    /// Logs, once per process, that fast mode does not apply to a session through a middle
    /// proxy (called when one starts while fast mode is on).
    fn warn_fast_mode_through_middle(&self) {
        if !self.fast_mode_middle_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "fast-mode is ignored for sessions through middle proxies (users with an ad tag): \
                 they keep their own encryption; direct sessions still use it"
            );
        }
    }

    /// Swaps in new users, limits (own tables and the default) and ad tags
    /// (`Directory::rebuild` rules), closes the sessions of removed, re-keyed, disabled,
    /// expired and over-quota users (never for a tag change), and recomputes the throttle caps.
    pub fn reload_users(
        &self,
        users: &[(String, Secret)],
        limits: &BTreeMap<String, SecretLimits>,
        default_limits: &SecretLimits,
        ad_tags: &AdTags,
    ) -> ReloadSummary {
        let mut guard = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, to_close, summary) = guard.rebuild(users, limits, default_limits, ad_tags, unix_ms());
        let next = Arc::new(next);
        *guard = next.clone();
        drop(guard);
        for gate in to_close {
            gate.close();
        }
        if let Some(throttle) = &self.throttle {
            throttle.recompute(next.all_stats());
        }
        summary
    }

    /// The throttle, when `[throttle] max-connections` is set.
    pub fn throttle(&self) -> Option<&Throttle> {
        self.throttle.as_ref()
    }

    /// The metrics store (and its exporters' settings).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The doppelganger's statistics and counters.
    pub fn doppelganger(&self) -> &Doppelganger {
        &self.doppelganger
    }

    /// The middle-proxy snapshot sessions of tagged users route by.
    pub fn middle(&self) -> &crate::middle::MiddleStore {
        &self.middle
    }

    /// The middle-proxy connections of tagged users' sessions.
    pub fn middle_pool(&self) -> &crate::middle::MiddlePool {
        &self.middle_pool
    }

    /// Publishes a new middle-proxy snapshot for new sessions and retires the pool's
    /// connections it makes stale (another secret, an endpoint no longer listed).
    pub fn publish_middle(&self, snapshot: crate::middle::MiddleSnapshot) {
        let snapshot = self.middle.publish(snapshot);
        self.middle_pool.retire_stale(&snapshot);
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current users.
    pub fn users(&self) -> Arc<Directory> {
        // A poisoned lock only means a panic elsewhere while swapping: the value is whole.
        self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// When the proxy started (Unix milliseconds).
    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// The block/allow lists connections are checked against.
    pub fn ip_filter(&self) -> &dyn IpFilter {
        self.ip_filter.as_ref()
    }

    /// Connections being served now (handshakes, fronted and relayed sessions).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// Wall-clock Unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Counts a connection as active for its lifetime.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl<'a> ActiveGuard<'a> {
    fn try_new(counter: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match counter.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Self(counter)),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `future` with a deadline; `None` if the deadline passed first.
pub(crate) async fn with_timeout<R: Runtime, F: Future>(d: Duration, future: F) -> Option<F::Output> {
    use futures_util::future::{Either, select};
    let future = std::pin::pin!(future);
    let sleep = std::pin::pin!(R::sleep(d));
    match select(future, sleep).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: SecretLimits = SecretLimits {
        max_connections: 0,
        quota: None,
        quota_reset: crate::config::QuotaReset::None,
        expires: None,
        disabled: false,
        max_ips: 0,
        rate_limit: None,
        cluster_wide_connections: false,
        cluster_wide_ips: false,
    };

    fn user(name: &str, n: u8) -> (String, Secret) {
        (name.to_owned(), Secret::fake_tls([n; 16], "a.example").unwrap())
    }

    fn tags(global: Option<u8>, per_user: &[(&str, u8)]) -> AdTags {
        AdTags {
            global: global.map(|n| AdTag::new([n; 16])),
            per_user: per_user.iter().map(|(u, n)| ((*u).to_owned(), AdTag::new([*n; 16]))).collect(),
        }
    }

    #[test]
    fn each_user_gets_its_own_tag_else_the_global_one() {
        let users = [user("alice", 1), user("bob", 2), user("carol", 3)];
        let d = Directory::new(&users, &BTreeMap::new(), &NO_LIMITS, &tags(Some(9), &[("bob", 7)]));
        assert_eq!(d.ad_tag(UserId(0)), Some(AdTag::new([9; 16])));
        assert_eq!(d.ad_tag(UserId(1)), Some(AdTag::new([7; 16])));
        assert_eq!(d.ad_tag(UserId(3)), None);
        assert_eq!(d.own_ad_tags(), [None, Some(AdTag::new([7; 16])), None]);
        assert_eq!(d.ad_tag_config(), tags(Some(9), &[("bob", 7)]));
        let untagged = Directory::new(&users, &BTreeMap::new(), &NO_LIMITS, &AdTags::default());
        assert_eq!(untagged.all_ad_tags(), [None, None, None]);
    }

    #[test]
    fn a_tag_change_reaches_new_sessions_and_closes_none() {
        let users = [user("alice", 1), user("bob", 2), user("carol", 3)];
        let before = Directory::new(&users, &BTreeMap::new(), &NO_LIMITS, &tags(None, &[("carol", 5)]));
        let live: Vec<_> = (0..3).map(|i| before.gate(UserId(i)).unwrap().watch()).collect();
        // alice gains the global tag, bob gets his own, carol's own tag goes (global now).
        let next_tags = tags(Some(9), &[("bob", 7)]);
        let (after, to_close, summary) = before.rebuild(&users, &BTreeMap::new(), &NO_LIMITS, &next_tags, 0);
        assert!(to_close.is_empty());
        assert_eq!(summary.retagged, ["alice", "bob", "carol"]);
        assert!(summary.added.is_empty() && summary.rekeyed.is_empty() && summary.removed.is_empty());
        assert_eq!(after.all_ad_tags(), [9, 7, 9].map(|n| Some(AdTag::new([n; 16]))));
        // The live sessions keep their switch: still open, and the new directory shares it.
        for (i, watch) in live.iter().enumerate() {
            assert!(!watch.is_closed());
            assert!(after.gate(UserId(i as u32)).unwrap().watch().same_channel(watch));
        }
        // The same tags again: nothing is retagged.
        let (_, to_close, summary) = after.rebuild(&users, &BTreeMap::new(), &NO_LIMITS, &next_tags, 0);
        assert!(to_close.is_empty());
        assert_eq!(summary, ReloadSummary::default());
    }

    #[test]
    fn a_rekey_with_a_tag_change_still_closes_that_user_only() {
        let before = Directory::new(
            &[user("alice", 1), user("bob", 2)],
            &BTreeMap::new(),
            &NO_LIMITS,
            &AdTags::default(),
        );
        let next = [user("alice", 1), user("bob", 4), user("dave", 5)];
        let (after, to_close, summary) =
            before.rebuild(&next, &BTreeMap::new(), &NO_LIMITS, &tags(Some(9), &[]), 0);
        assert_eq!(to_close.len(), 1);
        assert!(to_close[0].watch().same_channel(&before.gate(UserId(1)).unwrap().watch()));
        assert_eq!(summary.rekeyed, ["bob"]);
        assert_eq!(summary.added, ["dave"]);
        // New users are "added", not "retagged".
        assert_eq!(summary.retagged, ["alice", "bob"]);
        assert_eq!(after.ad_tag(UserId(2)), Some(AdTag::new([9; 16])));
    }

    #[test]
    fn limits_at_reload_close_and_reopen_the_gate_and_reach_live_counters() {
        let users = [user("alice", 1), user("bob", 2)];
        let default = SecretLimits { max_ips: 3, quota: Some(1000), ..NO_LIMITS };
        let own = |l: SecretLimits| BTreeMap::from([("bob".to_owned(), l)]);
        let before = Directory::new(&users, &own(NO_LIMITS), &default, &AdTags::default());
        // alice has no table: the default; bob's own (empty) table wins, nothing merged.
        assert_eq!(before.all_limits(), [default.clone(), NO_LIMITS]);
        assert_eq!(before.own_limits(), [None, Some(NO_LIMITS)]);
        let bob_live = before.gate(UserId(1)).unwrap().watch();

        // Disabled at reload: bob's gate closes.
        let disabled = SecretLimits { disabled: true, ..NO_LIMITS };
        let (after, to_close, summary) =
            before.rebuild(&users, &own(disabled), &default, &AdTags::default(), 0);
        assert_eq!(summary.relimited, ["bob"]);
        to_close.iter().for_each(|g| g.close());
        assert!(bob_live.is_closed() && after.gate(UserId(1)).unwrap().is_closed());
        // Enabled again: later sessions get an open gate.
        let (again, to_close, _) = after.rebuild(&users, &own(NO_LIMITS), &default, &AdTags::default(), 0);
        assert!(to_close.is_empty());
        assert!(!again.gate(UserId(1)).unwrap().watch().is_closed());

        // A new default reaches alice's live counters (quota, expiry) at once.
        let stricter = SecretLimits { quota: Some(10), expires: Some(100), ..NO_LIMITS };
        let (next, to_close, _) =
            again.rebuild(&users, &own(NO_LIMITS), &stricter, &AdTags::default(), 50_000);
        // `expires` moved earlier (from none): alice's sessions restart to arm the new instant.
        assert_eq!(to_close.len(), 1);
        assert!(Arc::ptr_eq(&to_close[0], next.gate(UserId(0)).unwrap()));
        let alice = next.stats(UserId(0)).unwrap();
        assert!(Arc::ptr_eq(alice, again.stats(UserId(0)).unwrap()), "counters kept");
        assert_eq!(alice.until_expiry(50_000), Some(Duration::from_secs(50)));
        assert!(alice.add_bytes(6, 4), "the new quota binds");
        // Over quota at reload: closed too.
        let (_, to_close, _) = next.rebuild(
            &users,
            &own(NO_LIMITS),
            &SecretLimits { quota: Some(5), ..stricter },
            &AdTags::default(),
            50_000,
        );
        assert_eq!(to_close.len(), 1);
    }
}
