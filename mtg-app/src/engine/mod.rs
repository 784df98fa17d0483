//! The proxy engine (the data plane): listeners and their accept loops, per-connection
//! handshake, domain fronting, DC dialing, relay and shaping, the users' [`Directory`] and the
//! [`Shared`] state sessions use, written once against the [`Runtime`](crate::runtime::Runtime)
//! seam and run by either adapter. The control plane (API, reloads, usage persistence,
//! exporters, background tasks) lives in [`crate::control`] and drives this module; nothing
//! here depends on it.

mod buffer_pool;
mod doppel;
mod fronting;
mod hints;
mod listener;
mod probe_limit;
pub(crate) mod relay;
#[doc(hidden)]
pub mod relay_probe;
mod session;
mod settings;
mod shaper;
mod socks5;
mod tuning;
pub(crate) mod upstream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mtg_proto::{HostId, ReplayCache, Secret, UserId, UserTable};

use std::collections::BTreeMap;

use crate::config::SecretLimits;
pub use crate::ip_filter::IpFilter;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::users::accounting::UserStats;
use crate::users::throttle::Throttle;

pub use crate::ip_filter::AllowAll;
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
    limits: Vec<SecretLimits>,
    switches: Vec<SessionSwitch>,
    /// The host [`Directory::default_host`] names, chosen once per build.
    default_host: Option<HostId>,
}

/// Closes every live session of one user (name and secret) when the user is removed,
/// re-keyed or disabled: sessions hold the receiving end and end when it closes.
#[derive(Debug, Clone)]
pub(crate) struct SessionSwitch {
    off: async_channel::Sender<()>,
    watch: async_channel::Receiver<()>,
}

impl SessionSwitch {
    fn new() -> Self {
        let (off, watch) = async_channel::bounded(1);
        Self { off, watch }
    }

    /// What a session watches.
    pub(crate) fn watch(&self) -> async_channel::Receiver<()> {
        self.watch.clone()
    }

    fn close_sessions(&self) {
        self.off.close();
    }
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
    /// Users whose limits changed (sessions closed if now disabled or expired).
    pub relimited: Vec<String>,
}

impl Directory {
    /// Builds the directory from (name, secret) pairs and per-name limits; ids follow the
    /// given order.
    pub fn new(users: &[(String, Secret)], limits: &BTreeMap<String, SecretLimits>) -> Self {
        let table = UserTable::new(users.iter().map(|(_, s)| s));
        // mtg-multi's default target: the host of the alphabetically first FakeTLS user.
        let default_host = users
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| Some((name, table.user_host(UserId(i as u32))?)))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, host)| host);
        Self {
            names: users.iter().map(|(n, _)| n.clone()).collect(),
            secrets: users.iter().map(|(_, s)| s.clone()).collect(),
            table,
            stats: users.iter().map(|_| Arc::new(UserStats::default())).collect(),
            limits: users.iter().map(|(n, _)| limits.get(n).cloned().unwrap_or_default()).collect(),
            switches: users.iter().map(|_| SessionSwitch::new()).collect(),
            default_host,
        }
    }

    /// The directory for new users and limits, keeping the counters of every user that stays
    /// (by name) and the live sessions of every user whose secret did not change. Returns the
    /// switches to turn off and what changed.
    fn rebuild(
        &self,
        users: &[(String, Secret)],
        limits: &BTreeMap<String, SecretLimits>,
        now_ms: i64,
    ) -> (Self, Vec<SessionSwitch>, ReloadSummary) {
        let mut next = Self::new(users, limits);
        let mut summary = ReloadSummary::default();
        let mut to_close = Vec::new();
        for (i, name) in next.names.iter().enumerate() {
            let Some(old) = self.names.iter().position(|n| n == name) else {
                summary.added.push(name.clone());
                continue;
            };
            next.stats[i] = self.stats[old].clone();
            if next.secrets[i] == self.secrets[old] {
                next.switches[i] = self.switches[old].clone();
            } else {
                summary.rekeyed.push(name.clone());
                to_close.push(self.switches[old].clone());
            }
            if next.limits[i] != self.limits[old] {
                summary.relimited.push(name.clone());
                let now_refused = matches!(
                    crate::users::limits::refusal(&next.limits[i], &next.stats[i], now_ms),
                    Some(crate::users::limits::Refusal::Disabled | crate::users::limits::Refusal::Expired)
                );
                if now_refused {
                    to_close.push(next.switches[i].clone());
                }
            }
        }
        for (old, name) in self.names.iter().enumerate() {
            if !next.names.contains(name) {
                summary.removed.push(name.clone());
                to_close.push(self.switches[old].clone());
            }
        }
        (next, to_close, summary)
    }

    /// The session switch of a user id.
    pub(crate) fn switch(&self, user: UserId) -> Option<&SessionSwitch> {
        self.switches.get(user.0 as usize)
    }

    /// Every user's secret, by id.
    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// Every user's limits, by id (all off when none are configured).
    pub fn all_limits(&self) -> &[SecretLimits] {
        &self.limits
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
        })
    }

    /// Swaps in new users and limits (`Directory::rebuild` rules), closes the sessions of
    /// removed, re-keyed, disabled and expired users, and recomputes the throttle caps.
    pub fn reload_users(
        &self,
        users: &[(String, Secret)],
        limits: &BTreeMap<String, SecretLimits>,
    ) -> ReloadSummary {
        let mut guard = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, to_close, summary) = guard.rebuild(users, limits, unix_ms());
        let next = Arc::new(next);
        *guard = next.clone();
        drop(guard);
        for switch in to_close {
            switch.close_sessions();
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
