//! The mtg-multi TOML config: every key of mtg / mtg-multi with their syntaxes and effective
//! defaults (reference §2), plus this proxy's additions. Unknown keys are warnings; invalid
//! values are one-line errors naming the key, the value and what is allowed.

mod error;
mod schema;
mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mtg_proto::{Secret, SecretKind};

pub use error::{ConfigError, ConfigWarning};
pub use schema::all_key_paths;
pub use values::ProxyUrl;

pub use crate::dc_table::PreferIp;

/// `[throttle]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// Global connection budget for the fair-share caps; 0 = off.
    pub max_connections: u32,
    /// How often caps are recomputed.
    pub check_interval: Duration,
}

/// `[domain-fronting]` (with the deprecated top-level keys folded in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFronting {
    /// Dial target override; default: the hostname the SNI matched.
    pub host: Option<String>,
    /// Port of the fronting site.
    pub port: u16,
    /// Send a PROXY v2 header to the fronting site.
    pub proxy_protocol: bool,
}

/// `[network.timeout]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Outbound TCP dial timeout.
    pub tcp: Duration,
    /// Total HTTP request timeout.
    pub http: Duration,
    /// Relay idle timeout.
    pub idle: Duration,
    /// From accept until the client is authenticated.
    pub handshake: Duration,
}

/// `[network.keep-alive]` (outbound sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// Keep-alive off.
    pub disabled: bool,
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Probes before the connection is dead.
    pub count: u32,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Resolver URI; `None` = OS resolver.
    pub dns: Option<String>,
    /// SOCKS5 upstreams for DC dials.
    pub proxies: Vec<ProxyUrl>,
    /// TCP_NOTSENT_LOWAT for outbound sockets.
    pub tcp_not_sent_lowat: u64,
    /// Timeouts.
    pub timeout: Timeouts,
    /// Keep-alive of outbound sockets.
    pub keep_alive: KeepAlive,
    /// `[network.dc-overrides]`: DC number → addresses replacing the built-in entry.
    pub dc_overrides: BTreeMap<i16, Vec<SocketAddr>>,
}

/// `[defense.anti-replay]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AntiReplay {
    /// On (off when the section is absent, as mtg).
    pub enabled: bool,
    /// Filter size in bytes.
    pub max_size: u64,
    /// Target false-positive rate.
    pub error_rate: f64,
}

/// `[defense.blocklist]` / `[defense.allowlist]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList {
    /// On.
    pub enabled: bool,
    /// Parallel downloads.
    pub download_concurrency: u32,
    /// Files (absolute paths) and http(s) URLs.
    pub urls: Vec<String>,
    /// Refresh period.
    pub update_each: Duration,
}

/// `[defense.doppelganger]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doppelganger {
    /// HTTPS URLs to learn timing from.
    pub urls: Vec<String>,
    /// GETs per URL per raid.
    pub repeats_per_raid: u32,
    /// Period between raids.
    pub raid_each: Duration,
    /// Dynamic record sizing.
    pub drs: bool,
}

/// Tag style of statsd lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagFormat {
    /// `|#k:v,k:v` (default).
    #[default]
    Datadog,
    /// `,k=v` after the name.
    Influxdb,
    /// `;k=v` after the name.
    Graphite,
}

/// `[stats.statsd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statsd {
    /// On.
    pub enabled: bool,
    /// UDP `IP:port`.
    pub address: Option<SocketAddr>,
    /// Prefix prepended verbatim (`mtg.` by default).
    pub metric_prefix: String,
    /// Tag style.
    pub tag_format: TagFormat,
}

/// `[stats.prometheus]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// On.
    pub enabled: bool,
    /// HTTP listen address.
    pub bind_to: Option<SocketAddr>,
    /// Path (normalised, `/` serves every path).
    pub http_path: String,
    /// Namespace (`mtg` by default).
    pub metric_prefix: String,
}

/// When a quota starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaReset {
    /// Never.
    #[default]
    None,
    /// On the first day of each month (UTC).
    Monthly,
}

/// `[secret-limits.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretLimits {
    /// Most live connections of this user; 0 = no cap.
    pub max_connections: u32,
    /// Data quota in bytes; `None` = unlimited.
    pub quota: Option<u64>,
    /// When the quota resets.
    pub quota_reset: QuotaReset,
    /// Unix seconds after which the user is refused.
    pub expires: Option<i64>,
    /// The user is refused.
    pub disabled: bool,
}

/// The whole config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Debug logging.
    pub debug: bool,
    /// Users by name (sorted): `[secrets]`, or `secret` named `default`.
    pub users: BTreeMap<String, Secret>,
    /// Listen addresses.
    pub bind_to: Vec<SocketAddr>,
    /// Expect PROXY v1/v2 headers on accepted connections.
    pub proxy_protocol_listener: bool,
    /// Most connections at once.
    pub concurrency: u32,
    /// DC address family order.
    pub prefer_ip: PreferIp,
    /// Public IPv4 for `access` links and checks.
    pub public_ipv4: Option<Ipv4Addr>,
    /// Public IPv6 for `access` links and checks.
    pub public_ipv6: Option<Ipv6Addr>,
    /// Fetch Telegram's proxy config hourly.
    pub auto_update: bool,
    /// FakeTLS timestamp tolerance.
    pub tolerate_time_skewness: Duration,
    /// Unknown DC → DC 2.
    pub allow_fallback_on_unknown_dc: bool,
    /// Stats/management API listen address.
    pub api_bind_to: Option<SocketAddr>,
    /// Bearer token of the API.
    pub api_token: Option<String>,
    /// Write API changes back to the config file.
    pub api_persist: bool,
    /// Where per-user usage is persisted.
    pub usage_state_file: Option<PathBuf>,
    /// `[throttle]`.
    pub throttle: Throttle,
    /// `[domain-fronting]`.
    pub domain_fronting: DomainFronting,
    /// `[network]`.
    pub network: Network,
    /// `[defense.anti-replay]`.
    pub anti_replay: AntiReplay,
    /// `[defense.blocklist]`.
    pub blocklist: IpList,
    /// `[defense.allowlist]`.
    pub allowlist: IpList,
    /// `[defense.doppelganger]`.
    pub doppelganger: Doppelganger,
    /// `[stats.statsd]`.
    pub statsd: Statsd,
    /// `[stats.prometheus]`.
    pub prometheus: Prometheus,
    /// `[secured] enabled`: accept `dd` secrets.
    pub secured: bool,
    /// `[secret-limits.NAME]`.
    pub secret_limits: BTreeMap<String, SecretLimits>,
}

/// A config and what deserves a warning in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Warnings to log at start.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), error: e.to_string() })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml_str(text: &str) -> Result<Loaded, ConfigError> {
        let root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            message: e.to_string().replace('\n', " ").trim().to_owned(),
        })?;
        let mut warnings: Vec<ConfigWarning> = schema::unknown_keys(&root)
            .into_iter()
            .map(|(key, suggestion)| ConfigWarning::UnknownKey { key, suggestion })
            .collect();
        let r = Reader(&root);
        let users = read_users(&r, &root)?;
        for (key, advice) in [
            ("domain-fronting-port", "use [domain-fronting] port"),
            ("domain-fronting-ip", "ignored; use [domain-fronting] host"),
            ("domain-fronting-proxy-protocol", "use [domain-fronting] proxy-protocol"),
            ("domain-fronting.ip", "ignored; use [domain-fronting] host"),
            ("network.doh-ip", "use [network] dns = \"https://IP\""),
        ] {
            if r.value(key).is_some() {
                warnings.push(ConfigWarning::Deprecated { key: key.to_owned(), advice });
            }
        }
        let mut seen: Vec<(&String, &Secret)> = Vec::new();
        for (name, secret) in &users {
            if let Some((kept, _)) = seen.iter().find(|(_, s)| *s == secret) {
                warnings.push(ConfigWarning::DuplicateKey { kept: (*kept).clone(), shadowed: name.clone() });
            }
            seen.push((name, secret));
        }

        let bind_to = read_bind_to(&r)?;
        let deprecated_port = r.port("domain-fronting-port")?;
        let deprecated_pp = r.boolean("domain-fronting-proxy-protocol")?.unwrap_or(false);
        let dns = match r.string("network.dns")? {
            Some(d) => Some(r.parsed("network.dns", &d, values::dns_uri)?),
            None => r.ip("network.doh-ip")?.map(|ip| format!("https://{ip}")),
        };
        let config = Self {
            debug: r.boolean("debug")?.unwrap_or(false),
            users,
            bind_to,
            proxy_protocol_listener: r.boolean("proxy-protocol-listener")?.unwrap_or(false),
            concurrency: r.count("concurrency")?.unwrap_or(4096),
            prefer_ip: r.prefer_ip("prefer-ip")?.unwrap_or_default(),
            public_ipv4: match r.ip("public-ipv4")? {
                Some(IpAddr::V4(ip)) => Some(ip),
                Some(IpAddr::V6(ip)) => {
                    return Err(r.invalid("public-ipv4", &ip.to_string(), "an IPv4 address"));
                }
                None => None,
            },
            public_ipv6: match r.ip("public-ipv6")? {
                Some(IpAddr::V6(ip)) => Some(ip),
                Some(IpAddr::V4(ip)) => {
                    return Err(r.invalid("public-ipv6", &ip.to_string(), "an IPv6 address"));
                }
                None => None,
            },
            auto_update: r.boolean("auto-update")?.unwrap_or(false),
            tolerate_time_skewness: r.duration("tolerate-time-skewness")?.unwrap_or(Duration::from_secs(3)),
            allow_fallback_on_unknown_dc: r.boolean("allow-fallback-on-unknown-dc")?.unwrap_or(false),
            api_bind_to: r.socket_addr("api-bind-to")?,
            api_token: r.string("api-token")?,
            api_persist: r.boolean("api-persist")?.unwrap_or(false),
            usage_state_file: r.string("usage-state-file")?.map(PathBuf::from),
            throttle: Throttle {
                max_connections: r.count("throttle.max-connections")?.unwrap_or(0),
                check_interval: r.duration("throttle.check-interval")?.unwrap_or(Duration::from_secs(5)),
            },
            domain_fronting: DomainFronting {
                host: match r.string("domain-fronting.host")? {
                    Some(h) => Some(r.parsed("domain-fronting.host", &h, values::host)?),
                    None => None,
                },
                port: r.port("domain-fronting.port")?.or(deprecated_port).unwrap_or(443),
                proxy_protocol: r.boolean("domain-fronting.proxy-protocol")?.unwrap_or(false)
                    || deprecated_pp,
            },
            network: Network {
                dns,
                proxies: r.proxies("network.proxies")?,
                tcp_not_sent_lowat: r.bytes("network.tcp-not-sent-lowat")?.unwrap_or(128 * 1024),
                timeout: Timeouts {
                    tcp: r.duration("network.timeout.tcp")?.unwrap_or(Duration::from_secs(10)),
                    http: r.duration("network.timeout.http")?.unwrap_or(Duration::from_secs(10)),
                    idle: r.duration("network.timeout.idle")?.unwrap_or(Duration::from_secs(300)),
                    handshake: r.duration("network.timeout.handshake")?.unwrap_or(Duration::from_secs(10)),
                },
                keep_alive: KeepAlive {
                    disabled: r.boolean("network.keep-alive.disabled")?.unwrap_or(false),
                    idle: r.duration("network.keep-alive.idle")?.unwrap_or(Duration::from_secs(15)),
                    interval: r.duration("network.keep-alive.interval")?.unwrap_or(Duration::from_secs(15)),
                    count: r.count("network.keep-alive.count")?.unwrap_or(9),
                },
                dc_overrides: read_dc_overrides(&r)?,
            },
            anti_replay: AntiReplay {
                enabled: r.boolean("defense.anti-replay.enabled")?.unwrap_or(false),
                max_size: r.bytes("defense.anti-replay.max-size")?.unwrap_or(1 << 20),
                error_rate: r.error_rate("defense.anti-replay.error-rate")?.unwrap_or(0.001),
            },
            blocklist: read_ip_list(&r, "defense.blocklist")?,
            allowlist: read_ip_list(&r, "defense.allowlist")?,
            doppelganger: Doppelganger {
                urls: r.list("defense.doppelganger.urls", values::https_url)?,
                repeats_per_raid: r.count("defense.doppelganger.repeats-per-raid")?.unwrap_or(10),
                raid_each: r
                    .duration("defense.doppelganger.raid-each")?
                    .unwrap_or(Duration::from_secs(6 * 3600)),
                drs: r.boolean("defense.doppelganger.drs")?.unwrap_or(false),
            },
            statsd: Statsd {
                enabled: r.boolean("stats.statsd.enabled")?.unwrap_or(false),
                address: r.socket_addr("stats.statsd.address")?,
                metric_prefix: match r.string("stats.statsd.metric-prefix")? {
                    Some(p) => r.parsed("stats.statsd.metric-prefix", &p, values::metric_prefix)?,
                    None => "mtg.".to_owned(),
                },
                tag_format: r.tag_format("stats.statsd.tag-format")?.unwrap_or_default(),
            },
            prometheus: Prometheus {
                enabled: r.boolean("stats.prometheus.enabled")?.unwrap_or(false),
                bind_to: r.socket_addr("stats.prometheus.bind-to")?,
                http_path: r
                    .string("stats.prometheus.http-path")?
                    .map_or_else(|| "/".to_owned(), |p| values::http_path(&p)),
                metric_prefix: match r.string("stats.prometheus.metric-prefix")? {
                    Some(p) => r.parsed("stats.prometheus.metric-prefix", &p, values::metric_prefix)?,
                    None => "mtg".to_owned(),
                },
            },
            secured: r.boolean("secured.enabled")?.unwrap_or(false),
            secret_limits: BTreeMap::new(),
        };
        let mut config = config;
        config.secret_limits = read_limits(&r, &root, &config.users)?;
        validate(&config)?;
        Ok(Loaded { config, warnings })
    }
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    if let Some(api) = c.api_bind_to
        && !api.ip().is_loopback()
        && c.api_token.is_none()
    {
        return Err(ConfigError::Conflict {
            message: format!(
                "api-bind-to {api} is not a loopback address: set api-token so the API is not open to everyone"
            ),
        });
    }
    if c.statsd.enabled && c.statsd.address.is_none() {
        return Err(ConfigError::Missing {
            key: "stats.statsd.address".into(),
            hint: Some("statsd is enabled".into()),
        });
    }
    if c.prometheus.enabled && c.prometheus.bind_to.is_none() {
        return Err(ConfigError::Missing {
            key: "stats.prometheus.bind-to".into(),
            hint: Some("prometheus is enabled".into()),
        });
    }
    if c.users.values().any(|s| s.kind() == SecretKind::Secured) && !c.secured {
        return Err(ConfigError::Conflict {
            message: "a dd (secured) secret is configured but [secured] enabled is not true".into(),
        });
    }
    Ok(())
}

const TOP_LEVEL_AFTER_SECRETS: &str = "top-level keys must come before every [table]";

fn read_users(r: &Reader<'_>, root: &toml::Table) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut users = BTreeMap::new();
    match root.get("secrets") {
        Some(toml::Value::Table(t)) if !t.is_empty() => {
            for (name, value) in t {
                let key = format!("secrets.{name}");
                let hint = schema::ROOT
                    .iter()
                    .any(|(k, _)| *k == name.as_str())
                    .then(|| format!("`{name}` is inside [secrets]: {TOP_LEVEL_AFTER_SECRETS}"));
                let toml::Value::String(text) = value else {
                    return Err(match hint {
                        Some(hint) => ConfigError::Conflict {
                            message: format!("{key} is not a secret string ({hint})"),
                        },
                        None => r.invalid(&key, &shown(value), "a secret string (hex or base64url)"),
                    });
                };
                let secret = Secret::parse(text).map_err(|reason| ConfigError::Secret {
                    key: key.clone(),
                    reason,
                    hint,
                })?;
                users.insert(name.clone(), secret);
            }
        }
        Some(toml::Value::Table(_)) | None => match r.string("secret")? {
            Some(text) => {
                let secret = Secret::parse(&text).map_err(|reason| ConfigError::Secret {
                    key: "secret".into(),
                    reason,
                    hint: None,
                })?;
                users.insert("default".to_owned(), secret);
            }
            None => {
                return Err(ConfigError::Missing {
                    key: "secret".into(),
                    hint: Some("or a [secrets] table".into()),
                });
            }
        },
        Some(other) => return Err(r.invalid("secrets", &shown(other), "a table of name = \"secret\"")),
    }
    Ok(users)
}

fn read_bind_to(r: &Reader<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    let hint = || {
        r.0.get("secrets")
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key("bind-to"))
            .then(|| format!("`bind-to` is inside [secrets]: {TOP_LEVEL_AFTER_SECRETS}"))
    };
    let texts: Vec<String> = match r.value("bind-to") {
        None => return Err(ConfigError::Missing { key: "bind-to".into(), hint: hint() }),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(r.invalid("bind-to", &shown(other), "IP:port strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(r.invalid("bind-to", &shown(other), "an IP:port string or an array of them"));
        }
    };
    if texts.is_empty() {
        return Err(ConfigError::Missing { key: "bind-to".into(), hint: Some("the array is empty".into()) });
    }
    let mut out = Vec::new();
    for t in texts {
        if t.trim().is_empty() {
            return Err(r.invalid("bind-to", "\"\"", "a non-empty IP:port"));
        }
        let addr = r.parsed("bind-to", &t, values::socket_addr)?;
        if out.contains(&addr) {
            return Err(ConfigError::Conflict { message: format!("bind-to lists {addr} twice") });
        }
        out.push(addr);
    }
    Ok(out)
}

fn read_dc_overrides(r: &Reader<'_>) -> Result<BTreeMap<i16, Vec<SocketAddr>>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(value) = r.value("network.dc-overrides") else {
        return Ok(out);
    };
    let toml::Value::Table(t) = value else {
        return Err(r.invalid(
            "network.dc-overrides",
            &shown(value),
            "a table of DC number = [\"IP:port\", ...]",
        ));
    };
    for (dc, addrs) in t {
        let key = format!("network.dc-overrides.{dc}");
        let number: i16 =
            dc.trim().parse().ok().filter(|&n: &i16| n != 0).ok_or_else(|| ConfigError::Invalid {
                key: "network.dc-overrides".into(),
                value: format!("{dc:?}"),
                expected: "DC numbers as keys (non-zero integers, e.g. 2 or 203)".into(),
            })?;
        let toml::Value::Array(items) = addrs else {
            return Err(r.invalid(&key, &shown(addrs), "a non-empty array of \"IP:port\" strings"));
        };
        if items.is_empty() {
            return Err(r.invalid(&key, "[]", "a non-empty array of \"IP:port\" strings"));
        }
        let mut list = Vec::new();
        for item in items {
            let toml::Value::String(s) = item else {
                return Err(r.invalid(&key, &shown(item), "\"IP:port\" strings"));
            };
            list.push(r.parsed(&key, s, values::socket_addr)?);
        }
        out.insert(number, list);
    }
    Ok(out)
}

fn read_ip_list(r: &Reader<'_>, section: &str) -> Result<IpList, ConfigError> {
    Ok(IpList {
        enabled: r.boolean(&format!("{section}.enabled"))?.unwrap_or(false),
        download_concurrency: r.count(&format!("{section}.download-concurrency"))?.unwrap_or(1),
        urls: r.list(&format!("{section}.urls"), values::list_source)?,
        update_each: r.duration(&format!("{section}.update-each"))?.unwrap_or(Duration::from_secs(6 * 3600)),
    })
}

fn read_limits(
    r: &Reader<'_>,
    root: &toml::Table,
    users: &BTreeMap<String, Secret>,
) -> Result<BTreeMap<String, SecretLimits>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(value) = root.get("secret-limits") else {
        return Ok(out);
    };
    let toml::Value::Table(t) = value else {
        return Err(r.invalid("secret-limits", &shown(value), "a table of [secret-limits.NAME] tables"));
    };
    for (name, limits) in t {
        let key = format!("secret-limits.{name}");
        if !users.contains_key(name) {
            return Err(ConfigError::Conflict { message: format!("{key} names no user in [secrets]") });
        }
        if !limits.is_table() {
            return Err(r.invalid(&key, &shown(limits), "a table"));
        }
        let p = |k: &str| format!("{key}.{k}");
        let quota = match r.value(&p("quota")) {
            None => None,
            Some(toml::Value::Integer(n)) if *n >= 0 => Some(*n as u64),
            Some(toml::Value::String(s)) => Some(r.parsed(&p("quota"), s, values::bytes)?),
            Some(other) => {
                return Err(r.invalid(
                    &p("quota"),
                    &shown(other),
                    "a byte size like 10gib or a number of bytes",
                ));
            }
        };
        let quota_reset =
            match r.string(&p("quota-reset"))?.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("none") => QuotaReset::None,
                Some("monthly") => QuotaReset::Monthly,
                Some(_) => {
                    let shown_value =
                        shown(r.value(&p("quota-reset")).unwrap_or(&toml::Value::Boolean(false)));
                    return Err(r.invalid(&p("quota-reset"), &shown_value, "none or monthly"));
                }
            };
        let expires = match r.string(&p("expires"))? {
            Some(s) => Some(r.parsed(&p("expires"), &s, values::timestamp)?),
            None => None,
        };
        out.insert(
            name.clone(),
            SecretLimits {
                max_connections: r.count(&p("max-connections"))?.unwrap_or(0),
                quota,
                quota_reset,
                expires,
                disabled: r.boolean(&p("disabled"))?.unwrap_or(false),
            },
        );
    }
    Ok(out)
}

/// A value as the user wrote it (strings quoted).
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Typed access to dotted keys with mtg's "empty means default" rule.
struct Reader<'a>(&'a toml::Table);

impl Reader<'_> {
    fn value(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = current.as_table()?.get(part)?;
        }
        Some(current)
    }

    fn invalid(&self, key: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
    }

    fn parsed<T>(
        &self,
        key: &str,
        text: &str,
        parse: impl Fn(&str) -> Result<T, values::Expected>,
    ) -> Result<T, ConfigError> {
        parse(text).map_err(|expected| self.invalid(key, &format!("{text:?}"), expected))
    }

    /// A non-empty string (empty = absent).
    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(key, &shown(other), "a string")),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.invalid(key, &shown(other), "true or false")),
        }
    }

    /// A positive count (0 = default) up to u32::MAX.
    fn count(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::Integer(0)) => Ok(None),
            Some(toml::Value::Integer(n)) => u32::try_from(*n)
                .map(Some)
                .map_err(|_| self.invalid(key, &n.to_string(), "a whole number from 1 to 4294967295")),
            Some(other) => Err(self.invalid(key, &shown(other), "a whole number from 1 to 4294967295")),
        }
    }

    fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::Integer(0)) => Ok(None),
            Some(toml::Value::Integer(n)) => u16::try_from(*n)
                .map(Some)
                .map_err(|_| self.invalid(key, &n.to_string(), "a port from 1 to 65535")),
            Some(other) => Err(self.invalid(key, &shown(other), "a port from 1 to 65535")),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => self.parsed(key, &s, values::duration).map(|d| Some(d).filter(|d| !d.is_zero())),
        }
    }

    fn bytes(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n > 0 => Ok(Some(*n as u64)),
            Some(toml::Value::Integer(0)) => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(toml::Value::String(s)) => {
                self.parsed(key, s, values::bytes).map(|b| Some(b).filter(|&b| b > 0))
            }
            Some(other) => Err(self.invalid(key, &shown(other), "a byte size like 512kib, 1mib")),
        }
    }

    fn ip(&self, key: &str) -> Result<Option<IpAddr>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => self.parsed(key, &s, values::ip).map(Some),
        }
    }

    fn socket_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => self.parsed(key, &s, values::socket_addr).map(Some),
        }
    }

    fn error_rate(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let expected = "a number greater than 0 and less than 100";
        let rate = match self.value(key) {
            None => return Ok(None),
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(other) => return Err(self.invalid(key, &shown(other), expected)),
        };
        if (0.0..1e-8).contains(&rate) {
            return Ok(None);
        }
        if !(rate > 0.0 && rate < 100.0) {
            return Err(self.invalid(key, &rate.to_string(), expected));
        }
        Ok(Some(rate))
    }

    fn prefer_ip(&self, key: &str) -> Result<Option<PreferIp>, ConfigError> {
        let Some(s) = self.string(key)? else { return Ok(None) };
        match s.to_ascii_lowercase().as_str() {
            "prefer-ipv4" => Ok(Some(PreferIp::PreferIpv4)),
            "prefer-ipv6" => Ok(Some(PreferIp::PreferIpv6)),
            "only-ipv4" => Ok(Some(PreferIp::OnlyIpv4)),
            "only-ipv6" => Ok(Some(PreferIp::OnlyIpv6)),
            _ => {
                Err(self.invalid(key, &format!("{s:?}"), "prefer-ipv4, prefer-ipv6, only-ipv4 or only-ipv6"))
            }
        }
    }

    fn tag_format(&self, key: &str) -> Result<Option<TagFormat>, ConfigError> {
        let Some(s) = self.string(key)? else { return Ok(None) };
        match s.to_ascii_lowercase().as_str() {
            "datadog" => Ok(Some(TagFormat::Datadog)),
            "influxdb" => Ok(Some(TagFormat::Influxdb)),
            "graphite" => Ok(Some(TagFormat::Graphite)),
            _ => Err(self.invalid(key, &format!("{s:?}"), "datadog, influxdb or graphite")),
        }
    }

    fn list<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, values::Expected>,
    ) -> Result<Vec<T>, ConfigError> {
        match self.value(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => self.parsed(key, s, &parse),
                    other => Err(self.invalid(key, &shown(other), "strings")),
                })
                .collect(),
            Some(other) => Err(self.invalid(key, &shown(other), "an array of strings")),
        }
    }

    fn proxies(&self, key: &str) -> Result<Vec<ProxyUrl>, ConfigError> {
        self.list(key, |s| {
            if s.trim().is_empty() {
                Err("a socks5:// URL (empty entries are not allowed)")
            } else {
                values::proxy_url(s)
            }
        })
    }
}
