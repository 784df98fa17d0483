//! Reads the raw table section by section into the typed [`Config`], applying the effective
//! defaults of mtg (reference §2.2, §2.3) and ours, folding in deprecated keys, and checking
//! what spans keys (listen addresses, required addresses of enabled features).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, ConfigWarning, TOP_LEVEL_FIRST, shown_str, type_name};
use super::reader::Reader;
use super::urls::{self, Dns};
use super::values::{self, Expected};
use super::{
    AntiReplay, ApiToken, Config, DomainFronting, Doppelganger, IpList, KeepAlive, MiddleProxy, Network,
    Prometheus, Statsd, Throttle, Timeouts, schema, users,
};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Deprecated keys and what to do instead.
const DEPRECATED: &[(&str, &str)] = &[
    ("domain-fronting-port", "use [domain-fronting] port"),
    ("domain-fronting-ip", "ignored; use [domain-fronting] host"),
    ("domain-fronting-proxy-protocol", "use [domain-fronting] proxy-protocol"),
    ("domain-fronting.ip", "ignored; use [domain-fronting] host"),
    ("network.doh-ip", "use [network] dns = \"https://IP\""),
];

/// The typed config, or the first problem found.
pub(super) fn read(r: &Reader<'_>, warnings: &mut Vec<ConfigWarning>) -> Result<Config, ConfigError> {
    if let Some((key, value)) = schema::not_a_table(r.root()) {
        if key == "secrets" {
            // `secrets = "ee…"` (meant `secret`): the value is a secret, never shown.
            return Err(ConfigError::Invalid {
                key,
                value: format!("{} (not shown)", type_name(value)),
                expected: "a table of name = \"secret\" (for one secret, use `secret`)".into(),
            });
        }
        return Err(Reader::invalid(&key, value, "a table"));
    }
    let secured = r.flag("secured.enabled")?;
    let users = users::read(r, secured, warnings)?;
    let bind_to = bind_to(r)?;
    let (ad_tag, secret_ad_tags) = users::ad_tags(r, &users)?;
    for &(key, advice) in DEPRECATED {
        if r.value(key).is_some() {
            warnings.push(ConfigWarning::Deprecated { key, advice });
        }
    }
    let config = Config {
        debug: r.flag("debug")?,
        log_format: r.parsed("log-format", values::log_format)?.unwrap_or_default(),
        bind_to,
        proxy_protocol_listener: r.flag("proxy-protocol-listener")?,
        concurrency: r.count("concurrency")?.unwrap_or(4096),
        prefer_ip: r.parsed("prefer-ip", values::prefer_ip)?.unwrap_or_default(),
        public_ipv4: match r.ip("public-ipv4")? {
            None => None,
            Some(IpAddr::V4(ip)) => Some(ip),
            Some(IpAddr::V6(_)) => return Err(wrong_family(r, "public-ipv4", "an IPv4 address")),
        },
        public_ipv6: match r.ip("public-ipv6")? {
            None => None,
            Some(IpAddr::V6(ip)) => Some(ip),
            Some(IpAddr::V4(_)) => return Err(wrong_family(r, "public-ipv6", "an IPv6 address")),
        },
        auto_update: r.flag("auto-update")?,
        tolerate_time_skewness: r.duration("tolerate-time-skewness")?.unwrap_or(3 * SECOND),
        allow_fallback_on_unknown_dc: r.flag("allow-fallback-on-unknown-dc")?,
        fast_mode: r.flag("fast-mode")?,
        api_bind_to: r.socket_addr("api-bind-to")?,
        api_token: r.string("api-token")?.map(ApiToken::from),
        api_persist: r.flag("api-persist")?,
        usage_state_file: r.string("usage-state-file")?.map(PathBuf::from),
        throttle: Throttle {
            max_connections: r.count("throttle.max-connections")?.unwrap_or(0),
            check_interval: r.duration("throttle.check-interval")?.unwrap_or(5 * SECOND),
        },
        domain_fronting: domain_fronting(r)?,
        network: network(r)?,
        anti_replay: AntiReplay {
            enabled: r.flag("defense.anti-replay.enabled")?,
            max_size: r.bytes("defense.anti-replay.max-size")?.unwrap_or(1 << 20),
            error_rate: r.error_rate("defense.anti-replay.error-rate")?.unwrap_or(0.001),
        },
        blocklist: ip_list(r, "defense.blocklist")?,
        allowlist: ip_list(r, "defense.allowlist")?,
        doppelganger: Doppelganger {
            urls: r.list("defense.doppelganger.urls", urls::https_url, urls::redacted)?,
            repeats_per_raid: r.count("defense.doppelganger.repeats-per-raid")?.unwrap_or(10),
            raid_each: r.duration("defense.doppelganger.raid-each")?.unwrap_or(6 * HOUR),
            drs: r.flag("defense.doppelganger.drs")?,
            pacing: r.flag("defense.doppelganger.pacing")?,
            learn_from_fronting: r.flag_or("defense.doppelganger.learn-from-fronting", true)?,
        },
        statsd: Statsd {
            enabled: r.flag("stats.statsd.enabled")?,
            address: r.socket_addr("stats.statsd.address")?,
            metric_prefix: r
                .parsed("stats.statsd.metric-prefix", values::metric_prefix)?
                .unwrap_or("mtg.".into()),
            tag_format: r.parsed("stats.statsd.tag-format", values::tag_format)?.unwrap_or_default(),
        },
        prometheus: Prometheus {
            enabled: r.flag("stats.prometheus.enabled")?,
            bind_to: r.socket_addr("stats.prometheus.bind-to")?,
            http_path: r.parsed("stats.prometheus.http-path", values::http_path)?.unwrap_or("/".into()),
            metric_prefix: r
                .parsed("stats.prometheus.metric-prefix", values::metric_prefix)?
                .unwrap_or("mtg".into()),
        },
        secured,
        secret_limits: users::limits(r, &users)?,
        secret_limits_default: users::default_limits(r)?,
        users,
        ad_tag,
        secret_ad_tags,
        middle_proxy: middle_proxy(r)?,
    };
    required_when_enabled(&config)?;
    Ok(config)
}

/// `public-ipv4 = "::1"` and the like.
fn wrong_family(r: &Reader<'_>, key: &str, expected: Expected) -> ConfigError {
    let value = r.value(key).map_or_else(String::new, super::error::shown);
    ConfigError::Invalid { key: key.to_owned(), value, expected: expected.to_owned() }
}

/// `bind-to`: one `IP:port` or an array of them; at least one, no empty entry, no duplicate.
fn bind_to(r: &Reader<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    let missing = || {
        let hint = schema::misplaced(r.root(), "bind-to")
            .map(|table| format!("`bind-to` is inside {table}: {TOP_LEVEL_FIRST}"));
        ConfigError::Missing { key: "bind-to".into(), hint }
    };
    let texts: Vec<&str> = match r.value("bind-to") {
        None => return Err(missing()),
        Some(toml::Value::String(s)) if s.is_empty() => return Err(missing()),
        Some(toml::Value::String(s)) => vec![s],
        Some(toml::Value::Array(items)) if items.is_empty() => return Err(missing()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| Reader::invalid("bind-to", v, "IP:port strings")))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Reader::invalid("bind-to", other, "an IP:port string or an array of them"));
        }
    };
    let mut out: Vec<SocketAddr> = Vec::with_capacity(texts.len());
    for text in texts {
        let addr = values::socket_addr(text).map_err(|expected| ConfigError::Invalid {
            key: "bind-to".into(),
            value: shown_str(text),
            expected: expected.to_owned(),
        })?;
        if out.contains(&addr) {
            return Err(ConfigError::Invalid {
                key: "bind-to".into(),
                value: shown_str(text),
                expected: "each address once (this one is listed twice)".into(),
            });
        }
        out.push(addr);
    }
    Ok(out)
}

/// `[domain-fronting]` with the deprecated top-level keys: `[domain-fronting] port` wins over
/// `domain-fronting-port`; either `proxy-protocol` enables; both `ip` keys are checked and
/// ignored.
fn domain_fronting(r: &Reader<'_>) -> Result<DomainFronting, ConfigError> {
    r.ip("domain-fronting-ip")?;
    r.ip("domain-fronting.ip")?;
    let deprecated_port = r.port("domain-fronting-port")?;
    let deprecated_proxy_protocol = r.flag("domain-fronting-proxy-protocol")?;
    Ok(DomainFronting {
        host: r.parsed("domain-fronting.host", values::host)?,
        port: r.port("domain-fronting.port")?.or(deprecated_port).unwrap_or(443),
        proxy_protocol: r.flag("domain-fronting.proxy-protocol")? || deprecated_proxy_protocol,
    })
}

fn network(r: &Reader<'_>) -> Result<Network, ConfigError> {
    let doh_ip = r.ip("network.doh-ip")?;
    let (client_mss, client_mss_bulk) = client_mss(r)?;
    Ok(Network {
        dns: r.parsed("network.dns", urls::dns)?.or(doh_ip.map(Dns::https_ip)),
        proxies: r.list(
            "network.proxies",
            |s| {
                if s.trim().is_empty() {
                    Err("a socks5:// or socks5h:// URL (an empty entry does not mean direct: remove it)")
                } else {
                    urls::proxy_url(s)
                }
            },
            urls::redacted,
        )?,
        tcp_not_sent_lowat: r.bytes("network.tcp-not-sent-lowat")?.unwrap_or(128 << 10),
        client_mss,
        client_mss_bulk,
        zero_copy: r.flag_or("network.zero-copy", true)?,
        timeout: Timeouts {
            tcp: r.duration("network.timeout.tcp")?.unwrap_or(10 * SECOND),
            http: r.duration("network.timeout.http")?.unwrap_or(10 * SECOND),
            idle: r.duration("network.timeout.idle")?.unwrap_or(5 * MINUTE),
            handshake: r.duration("network.timeout.handshake")?.unwrap_or(10 * SECOND),
        },
        keep_alive: KeepAlive {
            disabled: r.flag("network.keep-alive.disabled")?,
            idle: r.duration("network.keep-alive.idle")?.unwrap_or(15 * SECOND),
            interval: r.duration("network.keep-alive.interval")?.unwrap_or(15 * SECOND),
            count: r.count("network.keep-alive.count")?.unwrap_or(9),
        },
        dc_overrides: dc_overrides(r)?,
    })
}

/// `client-mss` and `client-mss-bulk`: the bulk size only raises a handshake size, so it
/// needs `client-mss` and must be larger.
fn client_mss(r: &Reader<'_>) -> Result<(Option<u16>, Option<u16>), ConfigError> {
    const BULK: &str = "network.client-mss-bulk";
    let handshake = r.mss("network.client-mss")?;
    let bulk = r.mss(BULK)?;
    match (handshake, bulk) {
        (None, Some(_)) => Err(ConfigError::Missing {
            key: "network.client-mss".into(),
            hint: Some(format!(
                "{BULK} is set: it is the segment size after a handshake sent in client-mss segments"
            )),
        }),
        (Some(small), Some(big)) if big <= small => {
            let expected = format!("a segment size larger than network.client-mss ({small})");
            Err(match r.value(BULK) {
                Some(written) => Reader::invalid(BULK, written, &expected),
                None => ConfigError::Invalid { key: BULK.into(), value: big.to_string(), expected },
            })
        }
        pair => Ok(pair),
    }
}

/// `[network.dc-overrides]`: `DC = ["IP:port", ...]`, DC an integer in the i16 range.
fn dc_overrides(r: &Reader<'_>) -> Result<BTreeMap<i16, Vec<SocketAddr>>, ConfigError> {
    const KEY: &str = "network.dc-overrides";
    const ADDRESSES: Expected = "a non-empty array of literal \"IP:port\" strings";
    let mut out = BTreeMap::new();
    let table = match r.value(KEY) {
        None => return Ok(out),
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(Reader::invalid(KEY, other, "a table of DC number = [\"IP:port\", ...]")),
    };
    for (dc, addresses) in table {
        let bad_key =
            |expected: String| ConfigError::Invalid { key: KEY.into(), value: shown_str(dc), expected };
        let Ok(number) = dc.trim().parse::<i16>() else {
            let mut expected =
                "DC numbers as keys: integers from -32768 to 32767 like 2, 203 or -2".to_owned();
            if let Some(top) = schema::top_level_leaf(dc) {
                expected.push_str(&format!(" (`{top}` is a top-level key: {TOP_LEVEL_FIRST})"));
            }
            return Err(bad_key(expected));
        };
        if out.contains_key(&number) {
            return Err(bad_key(format!("each DC once (DC {number} is listed twice)")));
        }
        let key = format!("{KEY}.{dc}");
        let list = match addresses {
            toml::Value::Array(items) if !items.is_empty() => items,
            other => return Err(Reader::invalid(&key, other, ADDRESSES)),
        };
        let parsed = list
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => values::socket_addr(s).map_err(|e| Reader::invalid(&key, item, e)),
                other => Err(Reader::invalid(&key, other, ADDRESSES)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(number, parsed);
    }
    Ok(out)
}

/// `[middle-proxy]`: each source an http(s) URL or an existing file; Telegram's by default.
fn middle_proxy(r: &Reader<'_>) -> Result<MiddleProxy, ConfigError> {
    let defaults = MiddleProxy::default();
    // A URL's password is not shown in the error.
    let source = |key: &str| {
        r.parsed(key, urls::list_source).map_err(|e| match e {
            ConfigError::Invalid { key, value, expected } => {
                ConfigError::Invalid { key, value: urls::redacted(&value), expected }
            }
            other => other,
        })
    };
    Ok(MiddleProxy {
        secret_url: source("middle-proxy.secret-url")?.unwrap_or(defaults.secret_url),
        config_url: source("middle-proxy.config-url")?.unwrap_or(defaults.config_url),
        config_url_v6: source("middle-proxy.config-url-v6")?.unwrap_or(defaults.config_url_v6),
        update_each: r.duration("middle-proxy.update-each")?.unwrap_or(defaults.update_each),
        cache_dir: r.string("middle-proxy.cache-dir")?.map(PathBuf::from),
    })
}

fn ip_list(r: &Reader<'_>, section: &str) -> Result<IpList, ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    Ok(IpList {
        enabled: r.flag(&key("enabled"))?,
        download_concurrency: r.count(&key("download-concurrency"))?.unwrap_or(1),
        urls: r.list(&key("urls"), urls::list_source, urls::redacted)?,
        update_each: r.duration(&key("update-each"))?.unwrap_or(6 * HOUR),
    })
}

/// An API reachable from other machines needs a token; an enabled statsd needs its address
/// and an enabled Prometheus its listen address.
fn required_when_enabled(c: &Config) -> Result<(), ConfigError> {
    let missing =
        |key: &str, because: &str| ConfigError::Missing { key: key.into(), hint: Some(because.into()) };
    if let Some(api) = c.api_bind_to
        && !api.ip().is_loopback()
        && c.api_token.is_none()
    {
        let because =
            format!("api-bind-to {api} is not a loopback address: without a token the API is open to all");
        return Err(missing("api-token", &because));
    }
    if c.statsd.enabled && c.statsd.address.is_none() {
        return Err(missing("stats.statsd.address", "stats.statsd.enabled is true"));
    }
    if c.prometheus.enabled && c.prometheus.bind_to.is_none() {
        return Err(missing("stats.prometheus.bind-to", "stats.prometheus.enabled is true"));
    }
    Ok(())
}
