//! The mtg-multi TOML config: every key of mtg v2 / mtg-multi with the same value syntaxes and
//! effective defaults (reference §2), plus this proxy's additions (`[network.dc-overrides]`,
//! `[secured]`, `[secret-limits.NAME]`, the API and usage keys, `[middle-proxy]`).
//!
//! [`Config::load`] / [`Config::from_toml_str`] give a typed [`Config`] and the
//! [`ConfigWarning`]s to log (unknown keys with a did-you-mean, deprecated keys). An invalid
//! value is a [`ConfigError`] whose `Display` is one line naming the key, the value as written
//! and what is allowed. Secret values never appear in errors, warnings or `Debug` output.
//!
//! [`Config::load`] applies the environment overlays of MHSanaei/mtg-multi and the official
//! image first (`SECRET`/`MTG_SECRET`, `SECRET_HOST`, `TAG`/`MTG_TAG`, `MTG_BIND_TO`; see
//! `env.rs`): the environment wins over the file.
//!
//! mtg's "omit if empty" rule holds: `0`, `""` and `false` mean "use the default".

#![deny(missing_docs)]

mod ad_tag;
mod api_token;
mod env;
mod error;
mod reader;
mod schema;
mod sections;
mod timestamp;
mod unknown_keys;
mod urls;
mod users;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mtg_proto::Secret;

pub use ad_tag::{AD_TAG_LEN, AD_TAG_RULE, AdTag, AdTagProblem, AdTags};
pub use api_token::ApiToken;
pub use env::VARIABLES as ENV_VARIABLES;
pub use error::{ConfigError, ConfigWarning, SecretProblem, Suggestion};
pub use schema::all_key_paths;
pub use urls::{Dns, ListSource, ProxyUrl, redacted};
pub use values::{LogFormat, QuotaReset, TagFormat};

pub use crate::dc_table::PreferIp;

/// A whole config file, validated, with defaults applied. `Debug` hides `api_token` (an
/// [`ApiToken`] and the secrets hide themselves).
#[derive(Clone, PartialEq)]
pub struct Config {
    /// `debug`: debug-level logging (default false).
    pub debug: bool,
    /// `log-format`: text (default) or JSON lines on stderr.
    pub log_format: LogFormat,
    /// Users by name, sorted: `[secrets]`, or the single `secret` named `default`.
    pub users: BTreeMap<String, Secret>,
    /// `bind-to`: listen addresses (at least one, no duplicates).
    pub bind_to: Vec<SocketAddr>,
    /// `proxy-protocol-listener`: accept PROXY v1/v2 headers from a load balancer.
    pub proxy_protocol_listener: bool,
    /// `concurrency`: most connections served at once (default 4096).
    pub concurrency: u32,
    /// `prefer-ip`: DC address family order (default prefer-ipv6).
    pub prefer_ip: PreferIp,
    /// `public-ipv4`: our public IPv4 for links and checks (`None`: detect).
    pub public_ipv4: Option<Ipv4Addr>,
    /// `public-ipv6`: our public IPv6 for links and checks (`None`: detect).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `auto-update`: fetch Telegram's proxy config hourly.
    pub auto_update: bool,
    /// `tolerate-time-skewness`: FakeTLS timestamp tolerance (default 3s).
    pub tolerate_time_skewness: Duration,
    /// `allow-fallback-on-unknown-dc`: unknown DC → DC 2 instead of closing.
    pub allow_fallback_on_unknown_dc: bool,
    /// `fast-mode`: the DC encrypts its answers with the client leg's download key, so the
    /// DC→client bytes are relayed without cryptography (default false; sessions through a
    /// middle proxy ignore it). Reloadable: new sessions take the reloaded value.
    pub fast_mode: bool,
    /// `api-bind-to`: stats/management API listen address (off when absent).
    pub api_bind_to: Option<SocketAddr>,
    /// `api-token`: bearer token the API requires (required when `api-bind-to` is not
    /// loopback).
    pub api_token: Option<ApiToken>,
    /// `api-persist`: write users changed through the API back to the config file.
    pub api_persist: bool,
    /// `usage-state-file`: where per-user usage survives restarts.
    pub usage_state_file: Option<PathBuf>,
    /// `[throttle]`.
    pub throttle: Throttle,
    /// `[domain-fronting]` (with the deprecated top-level keys folded in).
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
    /// `[secured] enabled`: accept `dd` (secured, no FakeTLS) secrets (default false).
    pub secured: bool,
    /// `[secret-limits.NAME]` by user name (every name is a configured user).
    pub secret_limits: BTreeMap<String, SecretLimits>,
    /// `[secret-limits-default]`: the limits of every user without a `[secret-limits.NAME]`
    /// table of its own (a user with one uses its own table only).
    pub secret_limits_default: SecretLimits,
    /// `ad-tag`: the @MTProxybot proxy tag of every user without one of its own (`None`:
    /// direct to the DCs).
    pub ad_tag: Option<AdTag>,
    /// `[secret-ad-tags]`: per-user tags by user name (every name is a configured user),
    /// winning over `ad-tag`.
    pub secret_ad_tags: BTreeMap<String, AdTag>,
    /// `[middle-proxy]`: where the middle-proxy secret and lists come from.
    pub middle_proxy: MiddleProxy,
    /// `[cluster]`: fleet mode (users, usage and counts shared through Redis); `None` = off.
    pub cluster: Option<Cluster>,
}

/// A loaded config and the warnings to log about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Unknown keys (sorted by path), then the other warnings.
    pub warnings: Vec<ConfigWarning>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            debug,
            log_format,
            users,
            bind_to,
            proxy_protocol_listener,
            concurrency,
            prefer_ip,
            public_ipv4,
            public_ipv6,
            auto_update,
            tolerate_time_skewness,
            allow_fallback_on_unknown_dc,
            fast_mode,
            api_bind_to,
            api_token,
            api_persist,
            usage_state_file,
            throttle,
            domain_fronting,
            network,
            anti_replay,
            blocklist,
            allowlist,
            doppelganger,
            statsd,
            prometheus,
            secured,
            secret_limits,
            secret_limits_default,
            ad_tag,
            secret_ad_tags,
            middle_proxy,
            cluster,
        } = self;
        f.debug_struct("Config")
            .field("debug", debug)
            .field("log_format", log_format)
            .field("users", users)
            .field("bind_to", bind_to)
            .field("proxy_protocol_listener", proxy_protocol_listener)
            .field("concurrency", concurrency)
            .field("prefer_ip", prefer_ip)
            .field("public_ipv4", public_ipv4)
            .field("public_ipv6", public_ipv6)
            .field("auto_update", auto_update)
            .field("tolerate_time_skewness", tolerate_time_skewness)
            .field("allow_fallback_on_unknown_dc", allow_fallback_on_unknown_dc)
            .field("fast_mode", fast_mode)
            .field("api_bind_to", api_bind_to)
            .field("api_token", api_token)
            .field("api_persist", api_persist)
            .field("usage_state_file", usage_state_file)
            .field("throttle", throttle)
            .field("domain_fronting", domain_fronting)
            .field("network", network)
            .field("anti_replay", anti_replay)
            .field("blocklist", blocklist)
            .field("allowlist", allowlist)
            .field("doppelganger", doppelganger)
            .field("statsd", statsd)
            .field("prometheus", prometheus)
            .field("secured", secured)
            .field("secret_limits", secret_limits)
            .field("secret_limits_default", secret_limits_default)
            .field("ad_tag", ad_tag)
            .field("secret_ad_tags", secret_ad_tags)
            .field("middle_proxy", middle_proxy)
            .field("cluster", cluster)
            .finish()
    }
}

/// `[throttle]`: the fair-share connection budget (reference §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// `max-connections`: total budget; 0 = throttle off (the default).
    pub max_connections: u32,
    /// `check-interval`: how often caps are recomputed (default 5s).
    pub check_interval: Duration,
}

/// `[domain-fronting]`: where connections that are not clients are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFronting {
    /// `host`: dial target override; `None` = the hostname the SNI named.
    pub host: Option<String>,
    /// `port` (or deprecated `domain-fronting-port`; default 443).
    pub port: u16,
    /// `proxy-protocol` (or deprecated `domain-fronting-proxy-protocol`): send PROXY v2.
    pub proxy_protocol: bool,
}

/// `[network.timeout]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// `tcp`: outbound dial timeout (default 10s, ours: mtg has none).
    pub tcp: Duration,
    /// `http`: total HTTP request timeout (default 10s, ours: mtg has none).
    pub http: Duration,
    /// `idle`: relay idle timeout (default 5m).
    pub idle: Duration,
    /// `handshake`: from accept until the client is authenticated (default 10s).
    pub handshake: Duration,
}

/// `[network.keep-alive]`: TCP keep-alive of outbound sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// `disabled`: keep-alive off.
    pub disabled: bool,
    /// `idle`: idle time before the first probe (default 15s).
    pub idle: Duration,
    /// `interval`: time between probes (default 15s).
    pub interval: Duration,
    /// `count`: unanswered probes before the connection is dead (default 9).
    pub count: u32,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `dns` (or deprecated `doh-ip`): resolver; `None` = the OS resolver.
    pub dns: Option<Dns>,
    /// `proxies`: SOCKS5 upstreams for DC dials (empty = direct).
    pub proxies: Vec<ProxyUrl>,
    /// `tcp-not-sent-lowat`: TCP_NOTSENT_LOWAT of outbound sockets, bytes (default 128 KiB).
    pub tcp_not_sent_lowat: u64,
    /// `client-mss`: TCP segment size (MSS) the handshake with a client is sent in, bytes
    /// (Linux); `None` = the kernel's.
    pub client_mss: Option<u16>,
    /// `client-mss-bulk`: segment size once the relay starts (only with `client-mss`).
    pub client_mss_bulk: Option<u16>,
    /// `zero-copy`: relay downloads that pass unchanged with `splice(2)` (Linux; default on).
    pub zero_copy: bool,
    /// `[network.timeout]`.
    pub timeout: Timeouts,
    /// `[network.keep-alive]`.
    pub keep_alive: KeepAlive,
    /// `[network.dc-overrides]`: DC number → addresses replacing the built-in entry.
    pub dc_overrides: BTreeMap<i16, Vec<SocketAddr>>,
}

/// `[defense.anti-replay]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AntiReplay {
    /// `enabled` (off when absent, as mtg).
    pub enabled: bool,
    /// `max-size`: filter memory in bytes (default 1 MiB).
    pub max_size: u64,
    /// `error-rate`: target false-positive rate (default 0.001).
    pub error_rate: f64,
}

/// `[defense.blocklist]` or `[defense.allowlist]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList {
    /// `enabled`.
    pub enabled: bool,
    /// `download-concurrency`: parallel downloads (default 1).
    pub download_concurrency: u32,
    /// `urls`: local files and http(s) URLs of IP/CIDR lists.
    pub urls: Vec<ListSource>,
    /// `update-each`: refresh period (default 6h).
    pub update_each: Duration,
}

/// `[defense.doppelganger]`: traffic shaping learned from real HTTPS sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doppelganger {
    /// `urls`: `https://` pages to learn from.
    pub urls: Vec<String>,
    /// `repeats-per-raid`: GETs per URL per raid (default 10).
    pub repeats_per_raid: u32,
    /// `raid-each`: period between raids (default 6h).
    pub raid_each: Duration,
    /// `drs`: dynamic TLS record sizing.
    pub drs: bool,
    /// `pacing`: delay every record by a Weibull draw (default off: mtg always paces, which
    /// caps one download near 2.4 MB/s).
    pub pacing: bool,
    /// `learn-from-fronting`: learn the fronting site's first flight and shape the fake one
    /// after it (default on).
    pub learn_from_fronting: bool,
}

/// `[stats.statsd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statsd {
    /// `enabled`.
    pub enabled: bool,
    /// `address`: UDP `IP:port` (required when enabled).
    pub address: Option<SocketAddr>,
    /// `metric-prefix`: prepended verbatim (default `mtg.`).
    pub metric_prefix: String,
    /// `tag-format` (default datadog).
    pub tag_format: TagFormat,
}

/// `[stats.prometheus]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// `enabled`.
    pub enabled: bool,
    /// `bind-to`: HTTP listen `IP:port` (required when enabled).
    pub bind_to: Option<SocketAddr>,
    /// `http-path`: normalised path (default `/`, which serves every path).
    pub http_path: String,
    /// `metric-prefix`: namespace (default `mtg`).
    pub metric_prefix: String,
}

/// `[middle-proxy]`: the bootstrap of middle-proxy mode (Telegram's proxy secret and middle
/// proxy lists), used only when some user has an ad tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddleProxy {
    /// `secret-url`: the proxy secret (default [`MiddleProxy::SECRET_URL`]).
    pub secret_url: ListSource,
    /// `config-url`: the IPv4 middle proxies (default [`MiddleProxy::CONFIG_URL`]).
    pub config_url: ListSource,
    /// `config-url-v6`: the IPv6 middle proxies (default [`MiddleProxy::CONFIG_URL_V6`]).
    pub config_url_v6: ListSource,
    /// `update-each`: refresh period (default 1h).
    pub update_each: Duration,
    /// `cache-dir`: where the last good secret and lists are kept, so a restart works
    /// offline (`None`: not kept).
    pub cache_dir: Option<PathBuf>,
}

impl MiddleProxy {
    /// Default `secret-url`.
    pub const SECRET_URL: &str = "https://core.telegram.org/getProxySecret";
    /// Default `config-url`.
    pub const CONFIG_URL: &str = "https://core.telegram.org/getProxyConfig";
    /// Default `config-url-v6`.
    pub const CONFIG_URL_V6: &str = "https://core.telegram.org/getProxyConfigV6";
}

impl Default for MiddleProxy {
    fn default() -> Self {
        Self {
            secret_url: ListSource::Url(Self::SECRET_URL.to_owned()),
            config_url: ListSource::Url(Self::CONFIG_URL.to_owned()),
            config_url_v6: ListSource::Url(Self::CONFIG_URL_V6.to_owned()),
            update_each: Duration::from_secs(3600),
            cache_dir: None,
        }
    }
}

/// `[cluster]`: fleet mode. `Debug` shows the Redis address without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `redis`: `redis://[user:password@]host[:port][/db]` or `rediss://` (TLS).
    pub redis: String,
    /// `name`: this instance's name in the fleet (default: the hostname).
    pub name: String,
    /// `key-prefix`: the prefix of every Redis key (default `mtg-multi`).
    pub key_prefix: String,
    /// `cache-file`: where the last users read from Redis are kept, so a start with Redis
    /// unreachable can serve them (`None`: not kept; such a start fails).
    pub cache_file: Option<PathBuf>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &redacted(&self.redis))
            .field("name", &self.name)
            .field("key_prefix", &self.key_prefix)
            .field("cache_file", &self.cache_file)
            .finish()
    }
}

/// `[secret-limits.NAME]`: the limits of one user; the defaults mean "no limit".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretLimits {
    /// `max-connections`: most live connections of this user; 0 = no cap.
    pub max_connections: u32,
    /// `quota`: bytes (both directions) before the user is refused; `None` = unlimited.
    pub quota: Option<u64>,
    /// `quota-reset`: when the quota starts over (default none).
    pub quota_reset: QuotaReset,
    /// `expires`: Unix seconds from which the user is refused.
    pub expires: Option<i64>,
    /// `disabled`: the user is refused.
    pub disabled: bool,
    /// `max-ips`: most distinct client addresses with live sessions; 0 = no limit.
    pub max_ips: u32,
    /// `rate-limit`: bytes per second each direction, shared by all of the user's sessions;
    /// `None` = no limit.
    pub rate_limit: Option<u64>,
    /// `cluster-wide = ["max-connections"]`: with `[cluster]`, `max-connections` counts the
    /// user's live sessions on every instance of the fleet, not only this one.
    pub cluster_wide_connections: bool,
    /// `cluster-wide = ["max-ips"]`: with `[cluster]`, `max-ips` counts the user's distinct
    /// client addresses with live sessions on every instance of the fleet.
    pub cluster_wide_ips: bool,
}

impl SecretLimits {
    /// The limits counted across the fleet, as `cluster-wide` names them.
    pub fn cluster_wide_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.cluster_wide_connections {
            names.push("max-connections");
        }
        if self.cluster_wide_ips {
            names.push("max-ips");
        }
        names
    }

    /// Whether no limit is set (the user needs no `[secret-limits.NAME]` table).
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// Reads limits from a table holding the keys of one `[secret-limits.NAME]` table
    /// (`quota`, `quota-reset`, `expires`, `disabled`, `max-connections`, `max-ips`, `rate-limit`) with the config's own
    /// rules; errors name the key as written. Unknown keys are ignored.
    pub fn from_table(table: &toml::Table) -> Result<Self, ConfigError> {
        users::limits_at(&reader::Reader(table), "")
    }

    /// The `[secret-limits.NAME]` table that reads back as these limits (empty when unlimited):
    /// quota in bytes, `expires` as RFC 3339 UTC. `None` when `expires` is outside the years
    /// 0 to 9999, which no config can hold.
    pub fn to_table(&self) -> Option<toml_edit::Table> {
        let mut table = toml_edit::Table::new();
        if self.max_connections > 0 {
            table.insert("max-connections", toml_edit::value(i64::from(self.max_connections)));
        }
        if let Some(quota) = self.quota {
            // Above i64::MAX (TOML integers) the size string reads back the same.
            match i64::try_from(quota) {
                Ok(q) => table.insert("quota", toml_edit::value(q)),
                Err(_) => table.insert("quota", toml_edit::value(format!("{quota}b"))),
            };
        }
        if self.quota_reset == QuotaReset::Monthly {
            table.insert("quota-reset", toml_edit::value("monthly"));
        }
        if let Some(expires) = self.expires {
            table.insert("expires", toml_edit::value(timestamp::rfc3339(expires)?));
        }
        if self.disabled {
            table.insert("disabled", toml_edit::value(true));
        }
        if self.max_ips > 0 {
            table.insert("max-ips", toml_edit::value(i64::from(self.max_ips)));
        }
        if let Some(rate) = self.rate_limit {
            // Bytes per second; above i64::MAX the size string reads back the same.
            match i64::try_from(rate) {
                Ok(r) => table.insert("rate-limit", toml_edit::value(r)),
                Err(_) => table.insert("rate-limit", toml_edit::value(format!("{rate}b"))),
            };
        }
        if self.cluster_wide_connections || self.cluster_wide_ips {
            let mut list = toml_edit::Array::new();
            for name in self.cluster_wide_names() {
                list.push(name);
            }
            table.insert("cluster-wide", toml_edit::value(list));
        }
        Some(table)
    }
}

impl Config {
    /// The limits `user` gets: its `[secret-limits.NAME]` table, else `[secret-limits-default]`.
    pub fn effective_limits(&self, user: &str) -> &SecretLimits {
        self.secret_limits.get(user).unwrap_or(&self.secret_limits_default)
    }

    /// The ad tag `user` gets: its `[secret-ad-tags]` entry, else `ad-tag`, else none (direct
    /// to the DCs).
    pub fn effective_ad_tag(&self, user: &str) -> Option<AdTag> {
        self.secret_ad_tags.get(user).copied().or(self.ad_tag)
    }

    /// `ad-tag` and `[secret-ad-tags]` together.
    pub fn ad_tags(&self) -> AdTags {
        AdTags { global: self.ad_tag, per_user: self.secret_ad_tags.clone() }
    }

    /// Reads, parses and validates a config file, with the environment overlays
    /// (`SECRET`/`MTG_SECRET`, `SECRET_HOST`, `TAG`/`MTG_TAG`, `MTG_BIND_TO`) winning over it.
    pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), error: e.to_string() })?;
        Self::from_toml_str_with_env(&text, &env::process_env)
    }

    /// Parses and validates config text (no environment overlay).
    pub fn from_toml_str(text: &str) -> Result<Loaded, ConfigError> {
        Self::from_toml_str_with_env(text, &|_| None)
    }

    /// Parses and validates config text with the environment overlays read through `env`
    /// (a variable's value, `None` when unset).
    pub fn from_toml_str_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Loaded, ConfigError> {
        let mut root: toml::Table = text.parse().map_err(|e| ConfigError::syntax(text, &e))?;
        let mut warnings = unknown_keys::unknown_keys(&root);
        env::overlay(&mut root, env, &mut warnings)?;
        let config =
            sections::read(&reader::Reader(&root), &mut warnings).map_err(|e| e.with_typo_hint(&warnings))?;
        Ok(Loaded { config, warnings })
    }
}
