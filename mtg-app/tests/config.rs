//! The config loader: the example file, effective defaults, value syntaxes, warnings, and a
//! table of malformed configs with their exact one-line errors.

use std::net::SocketAddr;
use std::time::Duration;

use mtg_app::config::{Config, ConfigError, ConfigWarning, PreferIp, QuotaReset, TagFormat, all_key_paths};

const SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example.config.toml")).unwrap()
}

fn load(text: &str) -> Result<mtg_app::config::Loaded, ConfigError> {
    Config::from_toml_str(text)
}

fn err(text: &str) -> String {
    load(text).expect_err("config must be refused").to_string()
}

#[test]
fn example_config_loads_without_warnings() {
    let loaded = load(&example()).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.config;
    assert_eq!(c.users.keys().collect::<Vec<_>>(), ["alice", "bob"]);
    assert_eq!(c.bind_to, vec!["127.0.0.1:3128".parse::<SocketAddr>().unwrap()]);
    assert!(c.bind_to.iter().all(|a| a.ip().is_loopback()));
    assert!(c.anti_replay.enabled);
}

#[test]
fn example_config_documents_every_key() {
    let text = example();
    for path in all_key_paths() {
        let leaf = path.rsplit('.').next().unwrap();
        let documented = if leaf == "NAME" {
            let table = path.trim_end_matches(".NAME");
            text.contains(&format!("[{table}")) || text.contains(&format!("[{}.", table))
        } else {
            text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim();
                l.starts_with(&format!("{leaf} =")) || l.starts_with(&format!("{leaf}="))
            })
        };
        assert!(documented, "example.config.toml does not document {path}");
    }
}

#[test]
fn minimal_config_gets_mtg_effective_defaults() {
    let c = load(&format!("secret = \"{SECRET}\"\nbind-to = \"0.0.0.0:443\"\n")).unwrap().config;
    assert_eq!(c.users.keys().collect::<Vec<_>>(), ["default"]);
    assert!(!c.debug);
    assert_eq!(c.concurrency, 4096);
    assert_eq!(c.prefer_ip, PreferIp::PreferIpv6);
    assert_eq!(c.tolerate_time_skewness, Duration::from_secs(3));
    assert!(!c.allow_fallback_on_unknown_dc);
    assert_eq!(c.network.timeout.handshake, Duration::from_secs(10));
    assert_eq!(c.network.timeout.idle, Duration::from_secs(300));
    assert_eq!(c.network.timeout.tcp, Duration::from_secs(10));
    assert_eq!(c.network.timeout.http, Duration::from_secs(10));
    assert_eq!(c.network.keep_alive.count, 9);
    assert_eq!(c.network.tcp_not_sent_lowat, 128 * 1024);
    assert_eq!(c.network.dns, None);
    assert!(!c.anti_replay.enabled);
    assert_eq!(c.anti_replay.max_size, 1 << 20);
    assert_eq!(c.anti_replay.error_rate, 0.001);
    assert_eq!(c.blocklist.update_each, Duration::from_secs(6 * 3600));
    assert!(!c.blocklist.enabled && !c.allowlist.enabled);
    assert_eq!(c.throttle.max_connections, 0);
    assert_eq!(c.throttle.check_interval, Duration::from_secs(5));
    assert_eq!(c.domain_fronting.port, 443);
    assert_eq!(c.domain_fronting.host, None);
    assert_eq!(c.statsd.metric_prefix, "mtg.");
    assert_eq!(c.statsd.tag_format, TagFormat::Datadog);
    assert_eq!(c.prometheus.metric_prefix, "mtg");
    assert_eq!(c.prometheus.http_path, "/");
    assert_eq!(c.doppelganger.repeats_per_raid, 10);
    assert!(!c.secured);
    assert_eq!(c.api_bind_to, None);
}

#[test]
fn zero_and_empty_values_mean_default_as_in_mtg() {
    let c = load(&format!(
        "secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:1\"\nconcurrency = 0\n[network]\ndns = \"\"\n[domain-fronting]\nport = 0\n"
    ))
    .unwrap()
    .config;
    assert_eq!(c.concurrency, 4096);
    assert_eq!(c.network.dns, None);
    assert_eq!(c.domain_fronting.port, 443);
}

#[test]
fn full_config_parses_every_value() {
    let text = format!(
        r#"
debug = true
bind-to = ["127.0.0.1:443", "[::1]:443"]
proxy-protocol-listener = true
concurrency = 100000
prefer-ip = "ONLY-IPV4"
public-ipv4 = "203.0.113.1"
public-ipv6 = "2001:db8::1"
auto-update = true
tolerate-time-skewness = "1m30s"
allow-fallback-on-unknown-dc = true
api-bind-to = "127.0.0.1:9000"
api-token = "t0k"
api-persist = true
usage-state-file = "/tmp/usage.json"
[secrets]
alice = "{SECRET}"
[secret-limits.alice]
max-connections = 3
quota = "1gib"
quota-reset = "monthly"
expires = "2027-01-01"
disabled = true
[throttle]
max-connections = 70000
check-interval = "2s"
[domain-fronting]
host = "front.example"
port = 8443
proxy-protocol = true
[network]
dns = "tls://dns.example:853"
proxies = ["socks5://u:p@127.0.0.1:1080", "socks5h://10.0.0.1"]
tcp-not-sent-lowat = "64kib"
[network.timeout]
tcp = "1s"
http = "2s"
idle = "3m"
handshake = "4s"
[network.keep-alive]
disabled = true
idle = "20s"
interval = "5s"
count = 3
[network.dc-overrides]
2 = ["127.0.0.1:14402", "127.0.0.2:14402"]
-4 = ["[::1]:14404"]
[defense.anti-replay]
enabled = true
max-size = "2mib"
error-rate = 0.01
[defense.blocklist]
enabled = true
download-concurrency = 2
urls = ["https://lists.example/level1.netset"]
update-each = "24h"
[defense.allowlist]
enabled = false
[defense.doppelganger]
urls = ["https://www.example.com/"]
repeats-per-raid = 3
raid-each = "1h"
drs = true
[stats.statsd]
enabled = true
address = "127.0.0.1:8125"
metric-prefix = "mtg"
tag-format = "graphite"
[stats.prometheus]
enabled = true
bind-to = "127.0.0.1:3130"
http-path = "/metrics/"
metric-prefix = "proxy"
[secured]
enabled = true
"#
    );
    let loaded = load(&text).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.config;
    assert!(c.debug && c.proxy_protocol_listener && c.auto_update && c.allow_fallback_on_unknown_dc);
    assert_eq!(c.bind_to.len(), 2);
    assert_eq!(c.concurrency, 100_000);
    assert_eq!(c.prefer_ip, PreferIp::OnlyIpv4);
    assert_eq!(c.public_ipv4.unwrap().to_string(), "203.0.113.1");
    assert_eq!(c.public_ipv6.unwrap().to_string(), "2001:db8::1");
    assert_eq!(c.tolerate_time_skewness, Duration::from_secs(90));
    assert_eq!(c.api_token.as_deref(), Some("t0k"));
    assert!(c.api_persist);
    let limits = &c.secret_limits["alice"];
    assert_eq!(limits.max_connections, 3);
    assert_eq!(limits.quota, Some(1 << 30));
    assert_eq!(limits.quota_reset, QuotaReset::Monthly);
    assert_eq!(limits.expires, Some(1_798_761_600));
    assert!(limits.disabled);
    assert_eq!(c.throttle.max_connections, 70_000);
    assert_eq!(c.throttle.check_interval, Duration::from_secs(2));
    assert_eq!(c.domain_fronting.host.as_deref(), Some("front.example"));
    assert_eq!(c.domain_fronting.port, 8443);
    assert!(c.domain_fronting.proxy_protocol);
    assert_eq!(c.network.dns.as_deref(), Some("tls://dns.example:853"));
    assert_eq!(c.network.proxies.len(), 2);
    assert_eq!(c.network.proxies[0].user.as_deref(), Some("u"));
    assert!(c.network.proxies[1].remote_dns);
    assert_eq!(c.network.tcp_not_sent_lowat, 64 * 1024);
    assert_eq!(c.network.timeout.tcp, Duration::from_secs(1));
    assert_eq!(c.network.timeout.http, Duration::from_secs(2));
    assert_eq!(c.network.timeout.idle, Duration::from_secs(180));
    assert_eq!(c.network.timeout.handshake, Duration::from_secs(4));
    assert!(c.network.keep_alive.disabled);
    assert_eq!(c.network.keep_alive.count, 3);
    assert_eq!(c.network.dc_overrides[&2].len(), 2);
    assert_eq!(c.network.dc_overrides[&-4][0].to_string(), "[::1]:14404");
    assert_eq!(c.anti_replay.max_size, 2 << 20);
    assert_eq!(c.anti_replay.error_rate, 0.01);
    assert!(c.blocklist.enabled);
    assert_eq!(c.blocklist.update_each, Duration::from_secs(86_400));
    assert_eq!(c.doppelganger.raid_each, Duration::from_secs(3600));
    assert!(c.doppelganger.drs);
    assert_eq!(c.statsd.metric_prefix, "mtg");
    assert_eq!(c.statsd.tag_format, TagFormat::Graphite);
    assert_eq!(c.prometheus.http_path, "/metrics");
    assert_eq!(c.prometheus.metric_prefix, "proxy");
    assert!(c.secured);
}

#[test]
fn unknown_keys_are_warnings_with_a_suggestion() {
    let loaded = load(&format!(
        "secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:1\"\nconcurency = 5\nfoo = 1\n[network.timeout]\nidel = \"1m\"\n"
    ))
    .unwrap();
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "unknown config key concurency (ignored); did you mean `concurrency`?",
            "unknown config key foo (ignored)",
            "unknown config key network.timeout.idel (ignored); did you mean `idle`?",
        ]
    );
}

#[test]
fn deprecated_keys_warn_and_still_apply() {
    let loaded = load(&format!(
        "secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:1\"\ndomain-fronting-port = 8443\ndomain-fronting-proxy-protocol = true\n[network]\ndoh-ip = \"9.9.9.9\"\n"
    ))
    .unwrap();
    assert_eq!(loaded.config.domain_fronting.port, 8443);
    assert!(loaded.config.domain_fronting.proxy_protocol);
    assert_eq!(loaded.config.network.dns.as_deref(), Some("https://9.9.9.9"));
    assert!(
        matches!(&loaded.warnings[0], ConfigWarning::Deprecated { key, .. } if key == "domain-fronting-port")
    );
    assert_eq!(loaded.warnings.len(), 3);
}

#[test]
fn malformed_configs_give_one_clear_line() {
    let base = format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:3128\"\n");
    let with = |extra: &str| format!("{base}{extra}");
    let cases: Vec<(String, &str)> = vec![
        (
            with("tolerate-time-skewness = \"5 minutes\"\n"),
            "invalid value for tolerate-time-skewness: \"5 minutes\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        (
            with("tolerate-time-skewness = \"-5s\"\n"),
            "invalid value for tolerate-time-skewness: \"-5s\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        (
            with("[network]\ntcp-not-sent-lowat = \"lots\"\n"),
            "invalid value for network.tcp-not-sent-lowat: \"lots\": expected a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes",
        ),
        (
            format!("secret = \"{SECRET}\"\nbind-to = \"localhost:443\"\n"),
            "invalid value for bind-to: \"localhost:443\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:0\"\n"),
            "invalid value for bind-to: \"127.0.0.1:0\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:70000\"\n"),
            "invalid value for bind-to: \"127.0.0.1:70000\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            format!("secret = \"{SECRET}\"\nbind-to = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n"),
            "bind-to lists 127.0.0.1:1 twice",
        ),
        (
            format!("secret = \"{SECRET}\"\nbind-to = [\"127.0.0.1:1\", \"\"]\n"),
            "invalid value for bind-to: \"\": expected a non-empty IP:port",
        ),
        (format!("secret = \"{SECRET}\"\n"), "bind-to is required"),
        (
            with("prefer-ip = \"ipv4\"\n"),
            "invalid value for prefer-ip: \"ipv4\": expected prefer-ipv4, prefer-ipv6, only-ipv4 or only-ipv6",
        ),
        (
            with("[stats.statsd]\ntag-format = \"json\"\n"),
            "invalid value for stats.statsd.tag-format: \"json\": expected datadog, influxdb or graphite",
        ),
        (
            with("[stats.prometheus]\nmetric-prefix = \"mtg.proxy\"\n"),
            "invalid value for stats.prometheus.metric-prefix: \"mtg.proxy\": expected lowercase letters and digits only (no dots or underscores)",
        ),
        (
            with("[network]\nproxies = [\"http://127.0.0.1:8080\"]\n"),
            "invalid value for network.proxies: \"http://127.0.0.1:8080\": expected a socks5:// or socks5h:// URL like socks5://user:pass@127.0.0.1:1080",
        ),
        (
            with("[network]\nproxies = [\"\"]\n"),
            "invalid value for network.proxies: \"\": expected a socks5:// URL (empty entries are not allowed)",
        ),
        (
            with("[network]\ndns = \"ftp://1.1.1.1\"\n"),
            "invalid value for network.dns: \"ftp://1.1.1.1\": expected a DNS URI: https://host[/path], tls://host[:port], udp://IP[:port] or a bare IP",
        ),
        (
            with("[defense.doppelganger]\nurls = [\"http://www.example.com/\"]\n"),
            "invalid value for defense.doppelganger.urls: \"http://www.example.com/\": expected an https:// URL with a host",
        ),
        (
            "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"ee00000000000000000000000000000000676f6f676c652e636f6d\"\n".to_owned(),
            "invalid secret secrets.alice: secret key is all zeros",
        ),
        (
            "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"ee0102\"\n".to_owned(),
            "invalid secret secrets.alice: secret key is shorter than 16 bytes",
        ),
        (
            "bind-to = \"127.0.0.1:1\"\nsecret = \"0011\"\n".to_owned(),
            "invalid secret secret: secret starts with byte 00; only ee (FakeTLS) and dd (secured) secrets are supported",
        ),
        (
            format!("[secrets]\nalice = \"{SECRET}\"\nbind-to = \"127.0.0.1:1\"\n"),
            "invalid secret secrets.bind-to: secret is neither hex nor base64url without padding (`bind-to` is inside [secrets]: top-level keys must come before every [table])",
        ),
        (
            format!("[secrets]\nalice = \"{SECRET}\"\nconcurrency = 5\n"),
            "secrets.concurrency is not a secret string (`concurrency` is inside [secrets]: top-level keys must come before every [table])",
        ),
        (
            with("[secret-limits.mallory]\nquota = \"1gib\"\n"),
            "secret-limits.mallory names no user in [secrets]",
        ),
        (
            with("[secret-limits.default]\nexpires = \"next year\"\n"),
            "invalid value for secret-limits.default.expires: \"next year\": expected an RFC 3339 timestamp like 2026-12-31T23:59:59Z or a date like 2026-12-31",
        ),
        (
            with("[secret-limits.default]\nquota-reset = \"weekly\"\n"),
            "invalid value for secret-limits.default.quota-reset: \"weekly\": expected none or monthly",
        ),
        (
            with("[network.dc-overrides]\n2 = [\"dc2.example:443\"]\n"),
            "invalid value for network.dc-overrides.2: \"dc2.example:443\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            with("[network.dc-overrides]\nmain = [\"127.0.0.1:443\"]\n"),
            "invalid value for network.dc-overrides: \"main\": expected DC numbers as keys (non-zero integers, e.g. 2 or 203)",
        ),
        (
            with("[network.dc-overrides]\n2 = []\n"),
            "invalid value for network.dc-overrides.2: []: expected a non-empty array of \"IP:port\" strings",
        ),
        (
            with("[defense.anti-replay]\nerror-rate = 150.0\n"),
            "invalid value for defense.anti-replay.error-rate: 150: expected a number greater than 0 and less than 100",
        ),
        (
            with("concurrency = \"many\"\n"),
            "invalid value for concurrency: \"many\": expected a whole number from 1 to 4294967295",
        ),
        (
            with("concurrency = -1\n"),
            "invalid value for concurrency: -1: expected a whole number from 1 to 4294967295",
        ),
        (with("debug = \"yes\"\n"), "invalid value for debug: \"yes\": expected true or false"),
        (
            with("[domain-fronting]\nport = 65536\n"),
            "invalid value for domain-fronting.port: 65536: expected a port from 1 to 65535",
        ),
        (
            with("[domain-fronting]\nhost = \"https://front.example/\"\n"),
            "invalid value for domain-fronting.host: \"https://front.example/\": expected a hostname or IP address without port or path",
        ),
        (with("public-ipv4 = \"::1\"\n"), "invalid value for public-ipv4: ::1: expected an IPv4 address"),
        (with("[stats.statsd]\nenabled = true\n"), "stats.statsd.address is required (statsd is enabled)"),
        (
            with("api-bind-to = \"0.0.0.0:9000\"\n"),
            "api-bind-to 0.0.0.0:9000 is not a loopback address: set api-token so the API is not open to everyone",
        ),
        (
            "bind-to = \"127.0.0.1:1\"\n[secrets]\nd = \"dd367a189aee18fa31c190054efd4a8e95\"\n".to_owned(),
            "a dd (secured) secret is configured but [secured] enabled is not true",
        ),
    ];
    assert!(cases.len() >= 25);
    for (text, expected) in &cases {
        let got = err(text);
        assert_eq!(&got, expected, "config:\n{text}");
        assert!(!got.contains('\n'), "one line: {got}");
        assert!(!got.contains("367a189a"), "a secret leaked into: {got}");
    }
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let e = err("bind-to = \"127.0.0.1:1\nsecret = 5\n");
    assert!(e.starts_with("config is not valid TOML: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn missing_file_names_it() {
    let e = Config::load(std::path::Path::new("/nonexistent/mtg.toml")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read config /nonexistent/mtg.toml: "), "{e}");
}
