//! Metrics: one store of the proxy's events (prometheus-client families of atomic counters
//! and gauges), read by two exporters: the Prometheus endpoint ([`prometheus`]) and statsd
//! over UDP ([`statsd`]).
//!
//! Names, types and labels are mtg's (`client_connections{ip_family}`, …); the `user_*`
//! series are ours. Series are resolved (a locked map lookup) once per connection; the relay
//! then only adds to the atomic counters it holds.

pub mod prometheus;
pub mod statsd;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Config;

pub use statsd::StatsdSettings;

/// The label pairs of one series, in the family's label order.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// Every metric: mtg's ten, then the per-user ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Name {
    ClientConnections,
    TelegramConnections,
    DomainFrontingConnections,
    IplistSize,
    TelegramTraffic,
    DomainFrontingTraffic,
    DomainFronting,
    ConcurrencyLimited,
    IpBlocklisted,
    ReplayAttacks,
    ProbeSearches,
    UserConnections,
    UserTraffic,
    UserThrottled,
    UserFrontedByLimit,
    UserRateLimited,
    MiddleProxyFetches,
    MiddleProxyEndpoints,
    MiddleProxyFallbacks,
    MiddleProxyConnections,
    MiddleProxyDials,
}

/// How a metric's value moves (and so how statsd sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows; statsd gets the increase since the last flush (`|c`).
    Counter,
    /// Goes up and down; statsd gets the change since the last flush (`+N|g`, `-N|g`).
    Gauge,
    /// A level set from outside; statsd gets the value itself (`N|g`).
    Level,
}

impl Name {
    const ALL: [Self; 21] = [
        Self::ClientConnections,
        Self::TelegramConnections,
        Self::DomainFrontingConnections,
        Self::IplistSize,
        Self::TelegramTraffic,
        Self::DomainFrontingTraffic,
        Self::DomainFronting,
        Self::ConcurrencyLimited,
        Self::IpBlocklisted,
        Self::ReplayAttacks,
        Self::ProbeSearches,
        Self::UserConnections,
        Self::UserTraffic,
        Self::UserThrottled,
        Self::UserFrontedByLimit,
        Self::UserRateLimited,
        Self::MiddleProxyFetches,
        Self::MiddleProxyEndpoints,
        Self::MiddleProxyFallbacks,
        Self::MiddleProxyConnections,
        Self::MiddleProxyDials,
    ];

    /// The name without prefix.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientConnections => "client_connections",
            Self::TelegramConnections => "telegram_connections",
            Self::DomainFrontingConnections => "domain_fronting_connections",
            Self::IplistSize => "iplist_size",
            Self::TelegramTraffic => "telegram_traffic",
            Self::DomainFrontingTraffic => "domain_fronting_traffic",
            Self::DomainFronting => "domain_fronting",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::IpBlocklisted => "ip_blocklisted",
            Self::ReplayAttacks => "replay_attacks",
            Self::ProbeSearches => "probe_searches",
            Self::UserConnections => "user_connections",
            Self::UserTraffic => "user_traffic",
            Self::UserThrottled => "user_throttled",
            Self::UserFrontedByLimit => "user_fronted_by_limit",
            Self::UserRateLimited => "user_rate_limited_milliseconds",
            Self::MiddleProxyFetches => "middle_proxy_fetches",
            Self::MiddleProxyEndpoints => "middle_proxy_endpoints",
            Self::MiddleProxyFallbacks => "middle_proxy_fallbacks",
            Self::MiddleProxyConnections => "middle_proxy_connections",
            Self::MiddleProxyDials => "middle_proxy_dials",
        }
    }

    /// Whether the metric has no labels at all.
    fn unlabelled(self) -> bool {
        matches!(self, Self::DomainFronting | Self::ConcurrencyLimited | Self::ReplayAttacks)
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Self::ClientConnections
            | Self::TelegramConnections
            | Self::DomainFrontingConnections
            | Self::UserConnections
            | Self::MiddleProxyConnections => Kind::Gauge,
            Self::IplistSize | Self::MiddleProxyEndpoints => Kind::Level,
            _ => Kind::Counter,
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::ClientConnections => "Client connections being served, fronted ones included",
            Self::TelegramConnections => "Open connections to Telegram DCs",
            Self::DomainFrontingConnections => "Connections being fronted to the website",
            Self::IplistSize => "Entries of an IP list after its last update",
            Self::TelegramTraffic => "Bytes to and from Telegram DCs, without the 64-byte init frame",
            Self::DomainFrontingTraffic => "Bytes between fronted clients and the website",
            Self::DomainFronting => "Connections handed to the website",
            Self::ConcurrencyLimited => "Connections closed because the concurrency limit was reached",
            Self::IpBlocklisted => "Connections refused by an IP list",
            Self::ReplayAttacks => "Replayed handshakes detected",
            Self::ProbeSearches => {
                "Hellos no user signed: full digest searches made (failed) or skipped by the probe limit"
            }
            Self::UserConnections => "Live sessions of a user",
            Self::UserTraffic => "MTProto payload bytes of a user's sessions",
            Self::UserThrottled => "Sessions of a user closed at its connection cap",
            Self::UserFrontedByLimit => {
                "Sessions of a user fronted because it was disabled, expired or over quota"
            }
            Self::UserRateLimited => {
                "Milliseconds the directions of a user's sessions waited for its rate-limit, summed over them"
            }
            Self::MiddleProxyFetches => "Fetches of the middle-proxy secret and lists, by outcome",
            Self::MiddleProxyEndpoints => "Middle-proxy addresses in the current snapshot",
            Self::MiddleProxyFallbacks => {
                "Sessions of tagged users served direct (no tag) because no middle proxy was reachable"
            }
            Self::MiddleProxyConnections => "Open multiplexed connections to a middle proxy",
            Self::MiddleProxyDials => "Connection attempts to middle proxies, by outcome",
        }
    }
}

/// One series' live value.
#[derive(Debug, Clone)]
enum Value {
    Counter(Counter),
    Gauge(Gauge),
}

impl Value {
    fn get(&self) -> i64 {
        match self {
            Self::Counter(c) => i64::try_from(c.get()).unwrap_or(i64::MAX),
            Self::Gauge(g) => g.get(),
        }
    }
}

/// A series and what statsd last got of it.
#[derive(Debug)]
struct Entry {
    value: Value,
    /// The value at the last statsd flush (`None`: a level never sent).
    sent: Option<i64>,
}

/// One family of the registry.
#[derive(Debug)]
enum FamilyOf {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
    /// A counter without labels (its one series is in the index from the start).
    Unlabelled,
}

/// The store: the registry (what Prometheus encodes) and an index of every series (what
/// statsd walks).
struct Store {
    registry: Registry,
    families: Vec<FamilyOf>,
    series: Mutex<BTreeMap<(Name, Labels), Entry>>,
    domain_fronting: Counter,
    concurrency_limited: Counter,
    replay_attacks: Counter,
}

/// Where the Prometheus endpoint listens and which path it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusEndpoint {
    /// `[stats.prometheus] bind-to`.
    pub bind_to: SocketAddr,
    /// `[stats.prometheus] http-path` (`/` serves every path).
    pub path: String,
}

/// The proxy's metrics and where they are exported; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    store: Arc<Store>,
    prometheus: Option<PrometheusEndpoint>,
    statsd: Option<StatsdSettings>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("prometheus", &self.prometheus)
            .field("statsd", &self.statsd)
            .finish_non_exhaustive()
    }
}

/// A gauge held up by one for as long as this lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A rate-limited user's `user_rate_limited_milliseconds` counter, resolved at session start.
#[derive(Debug, Clone)]
pub struct Waited(Counter);

impl Waited {
    /// Adds `ns` nanoseconds of waiting; `carry` holds the caller's part of a millisecond
    /// not counted yet.
    pub fn add_ns(&self, carry: &mut u64, ns: u64) {
        *carry = carry.saturating_add(ns);
        if *carry >= 1_000_000 {
            self.0.inc_by(*carry / 1_000_000);
            *carry %= 1_000_000;
        }
    }
}

/// The byte counters of one connection's two directions, resolved at its start.
#[derive(Debug, Clone)]
pub struct Traffic {
    from_client: Counter,
    to_client: Counter,
}

impl Traffic {
    /// Adds bytes moved from and to the client (two atomic adds at most).
    pub fn add(&self, from_client: u64, to_client: u64) {
        if from_client > 0 {
            self.from_client.inc_by(from_client);
        }
        if to_client > 0 {
            self.to_client.inc_by(to_client);
        }
    }
}

/// `ipv4` or `ipv6` (an IPv4-mapped IPv6 address is IPv4).
fn ip_family(ip: IpAddr) -> &'static str {
    if ip.to_canonical().is_ipv4() { "ipv4" } else { "ipv6" }
}

impl Metrics {
    /// A store with every metric registered under `prefix` (`prefix_name`), exported nowhere.
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let mut families = Vec::with_capacity(Name::ALL.len());
        let mut series = BTreeMap::new();
        for name in Name::ALL {
            // The help text ends without a dot: the encoder adds one.
            let family = match name.kind() {
                Kind::Counter if name.unlabelled() => {
                    // A plain counter: `mtg_replay_attacks_total 0`, present from the start.
                    let counter = Counter::default();
                    registry.register(name.as_str(), name.help(), counter.clone());
                    series
                        .insert((name, Vec::new()), Entry { value: Value::Counter(counter), sent: Some(0) });
                    FamilyOf::Unlabelled
                }
                Kind::Counter => {
                    let family = Family::<Labels, Counter>::default();
                    registry.register(name.as_str(), name.help(), family.clone());
                    FamilyOf::Counter(family)
                }
                Kind::Gauge | Kind::Level => {
                    let family = Family::<Labels, Gauge>::default();
                    registry.register(name.as_str(), name.help(), family.clone());
                    FamilyOf::Gauge(family)
                }
            };
            families.push(family);
        }
        let store = Store {
            registry,
            families,
            series: Mutex::new(series),
            domain_fronting: Counter::default(),
            concurrency_limited: Counter::default(),
            replay_attacks: Counter::default(),
        };
        let store = Store {
            domain_fronting: store.counter(Name::DomainFronting, Vec::new()),
            concurrency_limited: store.counter(Name::ConcurrencyLimited, Vec::new()),
            replay_attacks: store.counter(Name::ReplayAttacks, Vec::new()),
            ..store
        };
        Self { store: Arc::new(store), prometheus: None, statsd: None }
    }

    /// The store and exporters a config asks for (`[stats.prometheus]`, `[stats.statsd]`).
    pub fn from_config(config: &Config) -> Self {
        let mut metrics = Self::new(&config.prometheus.metric_prefix);
        if config.prometheus.enabled
            && let Some(bind_to) = config.prometheus.bind_to
        {
            metrics.prometheus =
                Some(PrometheusEndpoint { bind_to, path: config.prometheus.http_path.clone() });
        }
        if config.statsd.enabled
            && let Some(address) = config.statsd.address
        {
            metrics.statsd = Some(StatsdSettings {
                address,
                prefix: config.statsd.metric_prefix.clone(),
                tag_format: config.statsd.tag_format,
            });
        }
        metrics
    }

    /// The Prometheus endpoint, when enabled.
    pub fn prometheus(&self) -> Option<&PrometheusEndpoint> {
        self.prometheus.as_ref()
    }

    /// The statsd target, when enabled.
    pub fn statsd(&self) -> Option<&StatsdSettings> {
        self.statsd.as_ref()
    }

    /// A connection reached a worker: `client_connections{ip_family}` while the guard lives.
    pub fn client_connection(&self, ip: IpAddr) -> GaugeGuard {
        GaugeGuard::new(self.store.gauge(Name::ClientConnections, vec![("ip_family", ip_family(ip).into())]))
    }

    /// A connection was closed on accept: the concurrency limit was reached.
    pub fn concurrency_limited(&self) {
        self.store.concurrency_limited.inc();
    }

    /// A tagged user's session went direct because no middle proxy took it (`reason`).
    pub fn middle_proxy_fallback(&self, reason: &str) {
        self.store.counter(Name::MiddleProxyFallbacks, vec![("reason", reason.into())]).inc();
    }

    /// A connection was refused by the IP list `list` (`blocklist` or `allowlist`).
    pub fn ip_blocklisted(&self, list: &str) {
        self.store.counter(Name::IpBlocklisted, vec![("ip_list", list.into())]).inc();
    }

    /// The IP list `list` now holds `n` entries.
    pub fn iplist_size(&self, list: &str, n: usize) {
        let gauge = self.store.gauge(Name::IplistSize, vec![("ip_list", list.into())]);
        gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A replayed handshake was detected.
    pub fn replay_attack(&self) {
        self.store.replay_attacks.inc();
    }

    /// A hello no user signed: its full digest search was made and failed (`failed`), or was
    /// skipped by the probe limit (`skipped`).
    pub fn probe_search(&self, outcome: &str) {
        self.store.counter(Name::ProbeSearches, vec![("outcome", outcome.into())]).inc();
    }

    /// A connection from `ip` is handed to the website: counts `domain_fronting`, holds
    /// `domain_fronting_connections{ip_family}` and returns its `domain_fronting_traffic`.
    pub fn fronting(&self, ip: IpAddr) -> (GaugeGuard, Traffic) {
        self.store.domain_fronting.inc();
        let live =
            self.store.gauge(Name::DomainFrontingConnections, vec![("ip_family", ip_family(ip).into())]);
        (GaugeGuard::new(live), self.store.traffic(Name::DomainFrontingTraffic, Vec::new()))
    }

    /// A DC connection to `telegram_ip` for DC `dc` is open: holds
    /// `telegram_connections{telegram_ip,dc}` and returns its `telegram_traffic`.
    pub fn telegram_connection(&self, telegram_ip: IpAddr, dc: i16) -> (GaugeGuard, Traffic) {
        let labels: Labels = vec![("telegram_ip", telegram_ip.to_string()), ("dc", dc.to_string())];
        let live = self.store.gauge(Name::TelegramConnections, labels.clone());
        (GaugeGuard::new(live), self.store.traffic(Name::TelegramTraffic, labels))
    }

    /// A session of `user` was admitted: holds `user_connections{user}` and returns its
    /// `user_traffic`.
    pub fn user_connection(&self, user: &str) -> (GaugeGuard, Traffic) {
        let labels: Labels = vec![("user", user.into())];
        let live = self.store.gauge(Name::UserConnections, labels.clone());
        (GaugeGuard::new(live), self.store.traffic(Name::UserTraffic, labels))
    }

    /// A session of `user` was closed at its connection cap.
    pub fn user_throttled(&self, user: &str) {
        self.store.counter(Name::UserThrottled, vec![("user", user.into())]).inc();
    }

    /// A session of `user` was fronted because of `reason` (`disabled`, `expired`, `quota`).
    pub fn user_fronted_by_limit(&self, user: &str, reason: &str) {
        let labels: Labels = vec![("user", user.into()), ("reason", reason.into())];
        self.store.counter(Name::UserFrontedByLimit, labels).inc();
    }

    /// The counter of the time `user`'s sessions wait for its rate limit.
    pub fn user_rate_limited(&self, user: &str) -> Waited {
        Waited(self.store.counter(Name::UserRateLimited, vec![("user", user.into())]))
    }

    /// A fetch of a middle-proxy `document` (`secret`, `config`, `config_v6`) ended with
    /// `outcome` (`ok`, `unchanged`, `failed`, `rejected`).
    pub fn middle_proxy_fetch(&self, document: &str, outcome: &str) {
        let labels: Labels = vec![("document", document.into()), ("outcome", outcome.into())];
        self.store.counter(Name::MiddleProxyFetches, labels).inc();
    }

    /// A multiplexed connection to the middle proxy `endpoint` is open:
    /// `middle_proxy_connections{endpoint}` while the guard lives.
    pub fn middle_proxy_connection(&self, endpoint: SocketAddr) -> GaugeGuard {
        GaugeGuard::new(
            self.store.gauge(Name::MiddleProxyConnections, vec![("endpoint", endpoint.to_string())]),
        )
    }

    /// A dial of a middle proxy ended with `outcome` (`ok`, `connect`, `handshake`).
    pub fn middle_proxy_dial(&self, outcome: &str) {
        self.store.counter(Name::MiddleProxyDials, vec![("outcome", outcome.into())]).inc();
    }

    /// The current middle-proxy snapshot lists `n` distinct addresses of `family` (`ipv4`,
    /// `ipv6`).
    pub fn middle_proxy_endpoints(&self, family: &str, n: usize) {
        let gauge = self.store.gauge(Name::MiddleProxyEndpoints, vec![("family", family.into())]);
        gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus exposition of every series now.
    pub fn prometheus_text(&self, format: prometheus::Format) -> String {
        prometheus::render(&self.store.registry, format)
    }

    /// The statsd lines for what changed since the last call (and marks it sent).
    pub fn statsd_lines(&self, settings: &StatsdSettings) -> Vec<String> {
        let mut series = self.store.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lines = Vec::new();
        for ((name, labels), entry) in series.iter_mut() {
            let now = entry.value.get();
            let change = match (name.kind(), entry.sent) {
                (Kind::Level, Some(sent)) if sent == now => continue,
                (Kind::Level, _) => statsd::Change::Level(now),
                (kind, sent) => {
                    let delta = now.saturating_sub(sent.unwrap_or(0));
                    if delta == 0 {
                        continue;
                    }
                    if kind == Kind::Counter {
                        statsd::Change::Count(delta)
                    } else {
                        statsd::Change::Delta(delta)
                    }
                }
            };
            entry.sent = Some(now);
            lines.push(statsd::line(settings, name.as_str(), labels, change));
        }
        lines
    }
}

impl Store {
    /// The series `name{labels}`, created (at zero) on first use.
    fn value(&self, name: Name, labels: Labels) -> Value {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (name, labels);
        if let Some(entry) = series.get(&key) {
            return entry.value.clone();
        }
        let value = match &self.families[name as usize] {
            FamilyOf::Counter(f) => Value::Counter(f.get_or_create_owned(&key.1)),
            FamilyOf::Gauge(f) => Value::Gauge(f.get_or_create_owned(&key.1)),
            // Its only series was indexed at start: labels were given where none belong.
            FamilyOf::Unlabelled => Value::Counter(Counter::default()),
        };
        let sent = (name.kind() != Kind::Level).then_some(0);
        series.insert(key, Entry { value: value.clone(), sent });
        value
    }

    fn counter(&self, name: Name, labels: Labels) -> Counter {
        match self.value(name, labels) {
            Value::Counter(c) => c,
            // Unreachable by construction (families follow `Name::kind`); a detached counter
            // keeps the caller working.
            Value::Gauge(_) => Counter::default(),
        }
    }

    fn gauge(&self, name: Name, labels: Labels) -> Gauge {
        match self.value(name, labels) {
            Value::Gauge(g) => g,
            Value::Counter(_) => Gauge::default(),
        }
    }

    /// `name{labels…,direction=from_client|to_client}`.
    fn traffic(&self, name: Name, labels: Labels) -> Traffic {
        let with = |direction: &str| {
            let mut labels = labels.clone();
            labels.push(("direction", direction.into()));
            self.counter(name, labels)
        };
        Traffic { from_client: with("from_client"), to_client: with("to_client") }
    }
}

#[cfg(test)]
mod tests;
