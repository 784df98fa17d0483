//! The config loader as an operator meets it: the bundled example, mtg's effective defaults,
//! every key of a full config, the value syntaxes, and the warnings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mtg_app::config::{
    AdTag, AntiReplay, Config, ConfigWarning, Dns, DomainFronting, Doppelganger, IpList, KeepAlive,
    ListSource, Loaded, LogFormat, MiddleProxy, Network, PreferIp, Prometheus, ProxyUrl, QuotaReset,
    SecretLimits, Statsd, Suggestion, TagFormat, Throttle, Timeouts, all_key_paths,
};
use mtg_proto::{Secret, SecretKind};

const SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
const SECRET_B64: &str = "7jZ6GJruGPoxwZAFTv1KjpVzdG9yYWdlLmdvb2dsZWFwaXMuY29t";
const DD_SECRET: &str = "dd367a189aee18fa31c190054efd4a8e95";
/// `ee` + 0123456789abcdef0123456789abcdef + `example.com`, base64url.
const OTHER_B64: &str = "7gEjRWeJq83vASNFZ4mrze9leGFtcGxlLmNvbQ";
const OTHER_HEX: &str = "ee0123456789abcdef0123456789abcdef6578616d706c652e636f6d";

fn example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/example.config.toml");
    std::fs::read_to_string(path).expect("example.config.toml is in the crate")
}

fn load(text: &str) -> Loaded {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("config must load: {e}\n{text}"))
}

/// `secret` + `bind-to` and whatever else.
fn minimal(extra: &str) -> String {
    format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:3128\"\n{extra}")
}

fn tag(text: &str) -> AdTag {
    AdTag::parse(text).expect("valid tag")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("literal socket address")
}

fn secret(text: &str) -> Secret {
    Secret::parse(text).expect("valid secret")
}

#[test]
fn example_config_loads_without_warnings_on_loopback() {
    let loaded = load(&example());
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.config;
    assert_eq!(c.users.keys().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(c.users.values().all(|s| s.kind() == SecretKind::FakeTls && s.host() == "localhost"));
    assert_ne!(c.users["alice"], c.users["bob"]);
    assert_eq!(c.bind_to, [addr("127.0.0.1:3128")]);
    assert_eq!(c.api_bind_to, Some(addr("127.0.0.1:3129")));
    // Set, so a start on the example asks no outside service for its address.
    assert_eq!(c.public_ipv4, Some(std::net::Ipv4Addr::LOCALHOST));
    assert!(c.anti_replay.enabled);
    assert!(c.network.dc_overrides.is_empty());
    assert!(!c.prometheus.enabled && !c.statsd.enabled && !c.blocklist.enabled);
}

/// Every key of the schema appears as `key =` (commented out or not) in its own section of
/// the example, free-form names (users, DC numbers) standing in for `NAME`.
#[test]
fn example_config_documents_every_key_in_its_section() {
    let mut documented = std::collections::BTreeSet::new();
    let mut section = String::new();
    for line in example().lines() {
        let line = line.trim_start_matches(['#', ' ']);
        // A table header alone on its line (commented out or not), not prose mentioning one.
        let header = line.strip_prefix('[').and_then(|h| h.split_once(']'));
        let header = header.filter(|(_, rest)| rest.trim().is_empty() || rest.trim().starts_with('#'));
        if let Some((name, _)) = header {
            let mut parts: Vec<&str> = name.split('.').collect();
            if parts[0] == "secret-limits" && parts.len() == 2 {
                parts[1] = "NAME";
            }
            section = parts.join(".");
            continue;
        }
        let Some((key, _)) = line.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let free = ["secrets", "secret-ad-tags", "network.dc-overrides"];
        let key = if free.contains(&section.as_str()) { "NAME" } else { key };
        documented.insert(if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") });
    }
    let missing: Vec<String> = all_key_paths().into_iter().filter(|k| !documented.contains(k)).collect();
    assert_eq!(missing, Vec::<String>::new(), "keys example.config.toml does not document");
    let unknown: Vec<&String> = documented.iter().filter(|k| !all_key_paths().contains(k)).collect();
    assert_eq!(unknown, Vec::<&String>::new(), "keys example.config.toml documents but the schema lacks");
}

#[test]
fn minimal_config_gets_every_effective_default() {
    let loaded = load(&minimal(""));
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.config;
    let expected = Config {
        debug: false,
        log_format: LogFormat::Text,
        users: BTreeMap::from([("default".to_owned(), secret(SECRET))]),
        bind_to: vec![addr("127.0.0.1:3128")],
        proxy_protocol_listener: false,
        concurrency: 4096,
        prefer_ip: PreferIp::PreferIpv6,
        public_ipv4: None,
        public_ipv6: None,
        auto_update: false,
        tolerate_time_skewness: Duration::from_secs(3),
        allow_fallback_on_unknown_dc: false,
        fast_mode: false,
        api_bind_to: None,
        api_token: None,
        api_persist: false,
        usage_state_file: None,
        throttle: Throttle { max_connections: 0, check_interval: Duration::from_secs(5) },
        domain_fronting: DomainFronting { host: None, port: 443, proxy_protocol: false },
        network: Network {
            dns: None,
            proxies: vec![],
            tcp_not_sent_lowat: 128 * 1024,
            client_mss: None,
            client_mss_bulk: None,
            zero_copy: true,
            timeout: Timeouts {
                tcp: Duration::from_secs(10),
                http: Duration::from_secs(10),
                idle: Duration::from_secs(300),
                handshake: Duration::from_secs(10),
            },
            keep_alive: KeepAlive {
                disabled: false,
                idle: Duration::from_secs(15),
                interval: Duration::from_secs(15),
                count: 9,
            },
            dc_overrides: BTreeMap::new(),
        },
        anti_replay: AntiReplay { enabled: false, max_size: 1 << 20, error_rate: 0.001 },
        blocklist: IpList {
            enabled: false,
            download_concurrency: 1,
            urls: vec![],
            update_each: Duration::from_secs(6 * 3600),
        },
        allowlist: IpList {
            enabled: false,
            download_concurrency: 1,
            urls: vec![],
            update_each: Duration::from_secs(6 * 3600),
        },
        doppelganger: Doppelganger {
            urls: vec![],
            repeats_per_raid: 10,
            raid_each: Duration::from_secs(6 * 3600),
            drs: false,
            pacing: false,
            learn_from_fronting: true,
        },
        statsd: Statsd {
            enabled: false,
            address: None,
            metric_prefix: "mtg.".into(),
            tag_format: TagFormat::Datadog,
        },
        prometheus: Prometheus {
            enabled: false,
            bind_to: None,
            http_path: "/".into(),
            metric_prefix: "mtg".into(),
        },
        secured: false,
        secret_limits: BTreeMap::new(),
        secret_limits_default: SecretLimits::default(),
        ad_tag: None,
        secret_ad_tags: BTreeMap::new(),
        middle_proxy: MiddleProxy {
            secret_url: ListSource::Url("https://core.telegram.org/getProxySecret".into()),
            config_url: ListSource::Url("https://core.telegram.org/getProxyConfig".into()),
            config_url_v6: ListSource::Url("https://core.telegram.org/getProxyConfigV6".into()),
            update_each: Duration::from_secs(3600),
            cache_dir: None,
        },
        cluster: None,
    };
    assert_eq!(c, expected);
}

#[test]
fn zero_empty_and_false_mean_default_as_in_mtg() {
    let zeroed = load(&minimal(
        "concurrency = 0\ntolerate-time-skewness = \"0s\"\nprefer-ip = \"\"\napi-bind-to = \"\"\n\
         api-token = \"\"\n[throttle]\nmax-connections = 0\ncheck-interval = \"\"\n\
         [domain-fronting]\nport = 0\nhost = \"\"\n[network]\ndns = \"\"\ntcp-not-sent-lowat = 0\n\
         [network.timeout]\nidle = \"0\"\n[network.keep-alive]\ncount = 0\n\
         [defense.anti-replay]\nenabled = false\nmax-size = \"0\"\nerror-rate = 0.0\n\
         [stats.statsd]\nmetric-prefix = \"\"\n",
    ));
    assert_eq!(zeroed.warnings, vec![]);
    assert_eq!(zeroed.config, load(&minimal("")).config);
}

#[test]
fn full_config_parses_to_exact_values() {
    let list_file = std::env::temp_dir().join(format!("mtg-config-full-{}.netset", std::process::id()));
    std::fs::write(&list_file, "10.0.0.0/8\n").expect("temp file");
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
fast-mode = true
api-bind-to = "127.0.0.1:9000"
api-token = "t0k3n"
api-persist = true
usage-state-file = "/var/lib/mtg-multi/usage.json"
ad-tag = "00112233445566778899AABBCCDDeeff"

[secrets]
alice = "{SECRET}"
"bob the builder" = "{OTHER_B64}"
carol = "{DD_SECRET}"

[secret-limits.alice]
max-connections = 3
quota = "1gib"
quota-reset = "monthly"
expires = "2027-01-01"
disabled = true
max-ips = 4
rate-limit = "8mbit"

[secret-limits-default]
max-ips = 3
rate-limit = "500kib"
quota = "20gib"

[secret-limits."bob the builder"]
quota = 1048576
expires = 2026-12-31T23:59:59Z

[secret-ad-tags]
"bob the builder" = "fedcba9876543210fedcba9876543210"
carol = ""

[middle-proxy]
secret-url = "http://127.0.0.1:8080/secret"
config-url = "{list}"
config-url-v6 = "HTTPS://mirror.example/v6"
update-each = "30m"
cache-dir = "/var/cache/mtg-multi"

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
203 = ["127.0.0.1:14403"]

[defense.anti-replay]
enabled = true
max-size = "2mib"
error-rate = 0.01

[defense.blocklist]
enabled = true
download-concurrency = 2
urls = ["https://lists.example/level1.netset", "{list}"]
update-each = "24h"

[defense.allowlist]
enabled = true
download-concurrency = 70000
urls = ["http://lists.example/allow.txt"]
update-each = "1h"

[defense.doppelganger]
urls = ["https://www.example.com/"]
repeats-per-raid = 3
raid-each = "1h"
drs = true
pacing = true
learn-from-fronting = false

[stats.statsd]
enabled = true
address = "127.0.0.1:8125"
metric-prefix = "mtg"
tag-format = "Graphite"

[stats.prometheus]
enabled = true
bind-to = "[::1]:3130"
http-path = "metrics/"
metric-prefix = "proxy"

[secured]
enabled = true
"#,
        list = list_file.display()
    );
    let loaded = load(&text);
    std::fs::remove_file(&list_file).expect("temp file");
    assert_eq!(loaded.warnings, vec![]);
    let expected = Config {
        debug: true,
        log_format: LogFormat::Text,
        users: BTreeMap::from([
            ("alice".to_owned(), secret(SECRET)),
            ("bob the builder".to_owned(), secret(OTHER_HEX)),
            ("carol".to_owned(), secret(DD_SECRET)),
        ]),
        bind_to: vec![addr("127.0.0.1:443"), addr("[::1]:443")],
        proxy_protocol_listener: true,
        concurrency: 100_000,
        prefer_ip: PreferIp::OnlyIpv4,
        public_ipv4: Some("203.0.113.1".parse().expect("literal")),
        public_ipv6: Some("2001:db8::1".parse().expect("literal")),
        auto_update: true,
        tolerate_time_skewness: Duration::from_secs(90),
        allow_fallback_on_unknown_dc: true,
        fast_mode: true,
        api_bind_to: Some(addr("127.0.0.1:9000")),
        api_token: Some("t0k3n".into()),
        api_persist: true,
        usage_state_file: Some(PathBuf::from("/var/lib/mtg-multi/usage.json")),
        throttle: Throttle { max_connections: 70_000, check_interval: Duration::from_secs(2) },
        domain_fronting: DomainFronting {
            host: Some("front.example".into()),
            port: 8443,
            proxy_protocol: true,
        },
        network: Network {
            dns: Some(Dns::Tls { host: "dns.example".into(), port: 853 }),
            proxies: vec![
                ProxyUrl {
                    remote_dns: false,
                    host: "127.0.0.1".into(),
                    port: 1080,
                    user: Some("u".into()),
                    password: Some("p".into()),
                },
                ProxyUrl {
                    remote_dns: true,
                    host: "10.0.0.1".into(),
                    port: 1080,
                    user: None,
                    password: None,
                },
            ],
            tcp_not_sent_lowat: 64 * 1024,
            client_mss: None,
            client_mss_bulk: None,
            zero_copy: true,
            timeout: Timeouts {
                tcp: Duration::from_secs(1),
                http: Duration::from_secs(2),
                idle: Duration::from_secs(180),
                handshake: Duration::from_secs(4),
            },
            keep_alive: KeepAlive {
                disabled: true,
                idle: Duration::from_secs(20),
                interval: Duration::from_secs(5),
                count: 3,
            },
            dc_overrides: BTreeMap::from([
                (-4, vec![addr("[::1]:14404")]),
                (2, vec![addr("127.0.0.1:14402"), addr("127.0.0.2:14402")]),
                (203, vec![addr("127.0.0.1:14403")]),
            ]),
        },
        anti_replay: AntiReplay { enabled: true, max_size: 2 << 20, error_rate: 0.01 },
        blocklist: IpList {
            enabled: true,
            download_concurrency: 2,
            urls: vec![
                ListSource::Url("https://lists.example/level1.netset".into()),
                ListSource::File(list_file.clone()),
            ],
            update_each: Duration::from_secs(86_400),
        },
        allowlist: IpList {
            enabled: true,
            download_concurrency: 70_000,
            urls: vec![ListSource::Url("http://lists.example/allow.txt".into())],
            update_each: Duration::from_secs(3600),
        },
        doppelganger: Doppelganger {
            urls: vec!["https://www.example.com/".into()],
            repeats_per_raid: 3,
            raid_each: Duration::from_secs(3600),
            drs: true,
            pacing: true,
            learn_from_fronting: false,
        },
        statsd: Statsd {
            enabled: true,
            address: Some(addr("127.0.0.1:8125")),
            metric_prefix: "mtg".into(),
            tag_format: TagFormat::Graphite,
        },
        prometheus: Prometheus {
            enabled: true,
            bind_to: Some(addr("[::1]:3130")),
            http_path: "/metrics".into(),
            metric_prefix: "proxy".into(),
        },
        secured: true,
        secret_limits: BTreeMap::from([
            (
                "alice".to_owned(),
                SecretLimits {
                    max_connections: 3,
                    quota: Some(1 << 30),
                    quota_reset: QuotaReset::Monthly,
                    expires: Some(1_798_761_600),
                    disabled: true,
                    max_ips: 4,
                    rate_limit: Some(1_000_000),
                    cluster_wide_connections: false,
                    cluster_wide_ips: false,
                },
            ),
            (
                "bob the builder".to_owned(),
                SecretLimits {
                    quota: Some(1 << 20),
                    expires: Some(1_798_761_599),
                    ..SecretLimits::default()
                },
            ),
        ]),
        secret_limits_default: SecretLimits {
            max_ips: 3,
            quota: Some(20 << 30),
            rate_limit: Some(500 << 10),
            ..SecretLimits::default()
        },
        ad_tag: Some(tag("00112233445566778899aabbccddeeff")),
        secret_ad_tags: BTreeMap::from([(
            "bob the builder".to_owned(),
            tag("fedcba9876543210fedcba9876543210"),
        )]),
        middle_proxy: MiddleProxy {
            secret_url: ListSource::Url("http://127.0.0.1:8080/secret".into()),
            config_url: ListSource::File(list_file.clone()),
            config_url_v6: ListSource::Url("HTTPS://mirror.example/v6".into()),
            update_each: Duration::from_secs(1800),
            cache_dir: Some(PathBuf::from("/var/cache/mtg-multi")),
        },
        cluster: None,
    };
    assert_eq!(loaded.config, expected);
    assert_eq!(
        loaded.config.effective_ad_tag("bob the builder"),
        Some(tag("fedcba9876543210fedcba9876543210"))
    );
    assert_eq!(loaded.config.effective_ad_tag("carol"), Some(tag("00112233445566778899aabbccddeeff")));
    let debug = format!("{:?}", loaded.config);
    for hidden in ["t0k3n", "367a189a", "password: Some(\"p\")"] {
        assert!(!debug.contains(hidden), "Debug shows {hidden}");
    }
}

#[test]
fn go_durations_exact() {
    let cases = [
        ("300ms", Duration::from_millis(300)),
        ("5s", Duration::from_secs(5)),
        ("1h30m", Duration::from_secs(5400)),
        ("1.5h", Duration::from_secs(5400)),
        ("5S", Duration::from_secs(5)),
        ("1M30S", Duration::from_secs(90)),
        (" 1h 2m 3s ", Duration::from_secs(3723)),
        ("\t250ms\t", Duration::from_millis(250)),
        ("1m0.5s", Duration::from_millis(60_500)),
        ("1500us", Duration::from_micros(1500)),
    ];
    for (text, want) in cases {
        let c = load(&minimal(&format!("[network.timeout]\nidle = \"{text}\"\n"))).config;
        assert_eq!(c.network.timeout.idle, want, "{text:?}");
    }
}

#[test]
fn byte_sizes_exact() {
    let cases: [(&str, u64); 9] = [
        ("\"1mib\"", 1 << 20),
        ("\"1MB\"", 1 << 20),
        ("\"512kib\"", 512 << 10),
        ("\"4KB\"", 4096),
        ("\"1024\"", 1024),
        ("1024", 1024),
        ("\"2 GiB\"", 2 << 30),
        ("\"1.5kb\"", 1536),
        ("\"16b\"", 16),
    ];
    for (text, want) in cases {
        let c = load(&minimal(&format!("[defense.anti-replay]\nmax-size = {text}\n"))).config;
        assert_eq!(c.anti_replay.max_size, want, "{text}");
    }
}

#[test]
fn client_segment_sizes_are_numbers_or_presets() {
    let mss = |text: &str| {
        let c = load(&minimal(&format!("[network]\n{text}\n"))).config;
        (c.network.client_mss, c.network.client_mss_bulk)
    };
    assert_eq!(mss(""), (None, None), "default: the kernel's");
    assert_eq!(mss("client-mss = 0"), (None, None), "0 means the default");
    assert_eq!(mss("client-mss = \"\""), (None, None));
    assert_eq!(mss("client-mss = 92"), (Some(92), None));
    assert_eq!(mss("client-mss = \"tspu\""), (Some(92), None));
    assert_eq!(mss("client-mss = \"Extreme-Low\""), (Some(88), None));
    assert_eq!(mss("client-mss = \"2in8\""), (Some(256), None));
    assert_eq!(mss("client-mss = \"300\""), (Some(300), None));
    assert_eq!(mss("client-mss = 88\nclient-mss-bulk = 32767"), (Some(88), Some(32767)));
    assert_eq!(mss("client-mss = \"tspu\"\nclient-mss-bulk = 1400"), (Some(92), Some(1400)));
}

#[test]
fn client_segment_sizes_out_of_range_are_refused_with_the_range() {
    let error = |text: &str| {
        Config::from_toml_str(&minimal(&format!("[network]\n{text}\n")))
            .err()
            .unwrap_or_else(|| panic!("{text:?} must be refused"))
            .to_string()
    };
    for (text, shown) in [
        ("client-mss = 87", "87"),
        ("client-mss = 32768", "32768"),
        ("client-mss = -92", "-92"),
        ("client-mss = \"tspu2\"", "\"tspu2\""),
        ("client-mss = \"65536\"", "\"65536\""),
        ("client-mss = 1.5", "1.5"),
        ("client-mss = 92\nclient-mss-bulk = 40000", "40000"),
    ] {
        let e = error(text);
        assert!(e.contains("network.client-mss"), "{text}: {e}");
        assert!(e.contains(&format!(": {shown}: ")), "{text}: the value as written: {e}");
        assert!(e.contains("from 88 to 32767") && e.contains("\"tspu\" (92)"), "{text}: the range: {e}");
    }
    assert_eq!(
        error("client-mss-bulk = 1400"),
        "network.client-mss is required (network.client-mss-bulk is set: it is the segment size after a \
         handshake sent in client-mss segments)"
    );
    assert_eq!(
        error("client-mss = 1400\nclient-mss-bulk = \"tspu\""),
        "invalid value for network.client-mss-bulk: \"tspu\": expected a segment size larger than \
         network.client-mss (1400)"
    );
}

#[test]
fn bind_to_is_a_string_or_an_array() {
    let one = load(&format!("secret = \"{SECRET}\"\nbind-to = \"0.0.0.0:443\"\n")).config;
    assert_eq!(one.bind_to, [addr("0.0.0.0:443")]);
    let many = load(&format!(
        "secret = \"{SECRET}\"\nbind-to = [\"0.0.0.0:443\", \"[::]:443\", \"127.0.0.1:8443\"]\n"
    ))
    .config;
    assert_eq!(many.bind_to, [addr("0.0.0.0:443"), addr("[::]:443"), addr("127.0.0.1:8443")]);
}

#[test]
fn secrets_table_and_single_secret() {
    let single = load(&format!("bind-to = \"127.0.0.1:1\"\nsecret = \"{SECRET_B64}\"\n")).config;
    assert_eq!(single.users, BTreeMap::from([("default".to_owned(), secret(SECRET))]));
    let table = load(&format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\nzed = \"{SECRET}\"\n\"Ann Lee\" = \"ee{key}6578616d706c652e636f6d\"\n",
        key = "0123456789abcdef0123456789abcdef"
    ))
    .config;
    assert_eq!(table.users.keys().collect::<Vec<_>>(), ["Ann Lee", "zed"]);
    assert_eq!(table.users["Ann Lee"].host(), "example.com");
}

#[test]
fn unknown_keys_warn_with_did_you_mean() {
    let loaded = load(&minimal(
        "concurency = 5\nfoo = 1\n[network.timeout]\nidel = \"1m\"\n[network]\nbind-to = \"127.0.0.1:1\"\n\
         [secured]\nshape = true\n",
    ));
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "unknown config key concurency (ignored); did you mean `concurrency`?",
            "unknown config key foo (ignored)",
            "unknown config key network.bind-to (ignored); `bind-to` is a top-level key: top-level keys \
             must come before every [table]",
            "unknown config key network.timeout.idel (ignored); did you mean `idle`?",
            "unknown config key secured.shape (ignored)",
        ]
    );
    assert_eq!(
        loaded.warnings[3],
        ConfigWarning::UnknownKey {
            key: "network.timeout.idel".into(),
            suggestion: Some(Suggestion::Similar("idle"))
        }
    );
    // The typo does not set anything: the defaults stay.
    assert_eq!(loaded.config.concurrency, 4096);
    assert_eq!(loaded.config.network.timeout.idle, Duration::from_secs(300));
}

#[test]
fn deprecated_keys_warn_and_map_as_mtg() {
    let loaded = load(&minimal(
        "domain-fronting-port = 8443\ndomain-fronting-proxy-protocol = true\ndomain-fronting-ip = \"10.0.0.1\"\n\
         [domain-fronting]\nip = \"10.0.0.2\"\n[network]\ndoh-ip = \"9.9.9.9\"\n",
    ));
    let c = &loaded.config;
    assert_eq!(c.domain_fronting, DomainFronting { host: None, port: 8443, proxy_protocol: true });
    assert_eq!(
        c.network.dns.as_ref().map(ToString::to_string).as_deref(),
        Some("https://9.9.9.9:443/dns-query")
    );
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "config key domain-fronting-port is deprecated: use [domain-fronting] port",
            "config key domain-fronting-ip is deprecated: ignored; use [domain-fronting] host",
            "config key domain-fronting-proxy-protocol is deprecated: use [domain-fronting] proxy-protocol",
            "config key domain-fronting.ip is deprecated: ignored; use [domain-fronting] host",
            "config key network.doh-ip is deprecated: use [network] dns = \"https://IP\"",
        ]
    );
    // The new keys win over the deprecated ones.
    let newer = load(&minimal(
        "domain-fronting-port = 8443\n[domain-fronting]\nport = 9443\n[network]\ndoh-ip = \"9.9.9.9\"\ndns = \"1.1.1.1\"\n",
    ))
    .config;
    assert_eq!(newer.domain_fronting.port, 9443);
    assert_eq!(newer.network.dns, Some(Dns::Udp(addr("1.1.1.1:53"))));
}

#[test]
fn other_warnings() {
    let both = load(&format!(
        "secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:1\"\n[secrets]\na = \"{DD_SECRET}\"\n[secured]\nenabled = true\n"
    ));
    assert_eq!(both.warnings, [ConfigWarning::SecretIgnored]);
    assert_eq!(both.config.users.keys().collect::<Vec<_>>(), ["a"]);
    let same =
        load(&format!("bind-to = \"127.0.0.1:1\"\n[secrets]\nb = \"{SECRET}\"\na = \"{SECRET_B64}\"\n"));
    let shown: Vec<String> = same.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["secrets.b has the same secret as secrets.a; only a can match"]);
}

#[test]
fn load_reads_a_file_and_names_a_missing_one() {
    let path = std::env::temp_dir().join(format!("mtg-config-load-{}.toml", std::process::id()));
    std::fs::write(&path, minimal("")).expect("temp file");
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).expect("temp file");
    assert_eq!(loaded.expect("loads").config.bind_to, [addr("127.0.0.1:3128")]);
    let e = Config::load("/nonexistent/mtg.toml").expect_err("no such file").to_string();
    assert!(e.starts_with("cannot read config /nonexistent/mtg.toml: "), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn cluster_section_and_cluster_wide_limits() {
    let c = load(&minimal("[cluster]\nredis = \"redis://:pw-s3cret@10.0.0.5:6379/0\"\nname = \"fra-1\"\n"))
        .config;
    let cluster = c.cluster.clone().expect("[cluster] is on");
    assert_eq!(cluster.name, "fra-1");
    assert_eq!(cluster.key_prefix, "mtg-multi");
    assert_eq!(cluster.cache_file, None);
    assert!(!format!("{c:?}").contains("pw-s3cret"), "Debug hides the password");
    // No section, or an empty one: off. The name defaults to the hostname.
    assert_eq!(load(&minimal("")).config.cluster, None);
    let named = load(&minimal("[cluster]\nredis = \"redis://h/0\"\n")).config.cluster.unwrap();
    assert!(!named.name.is_empty());

    let error = |extra: &str| Config::from_toml_str(&minimal(extra)).unwrap_err().to_string();
    let e = error("[cluster]\nredis = \"http://:pw-s3cret@h\"\n");
    assert!(e.contains("cluster.redis") && e.contains("redis://") && !e.contains("pw-s3cret"), "{e}");
    let e = error("[cluster]\nname = \"a\"\n");
    assert!(e.contains("cluster.redis"), "{e}");
    let e = error("[cluster]\nredis = \"redis://h\"\nname = \"a b\"\n");
    assert!(e.contains("cluster.name"), "{e}");

    let limits = |table: &str| {
        let l = load(&minimal(&format!("[secret-limits-default]\nmax-connections = 4\n{table}")))
            .config
            .secret_limits_default;
        (l.cluster_wide_connections, l.cluster_wide_ips)
    };
    assert_eq!(limits("cluster-wide = [\"max-connections\"]\n"), (true, false));
    assert_eq!(limits("cluster-wide = [\"max-ips\"]\n"), (false, true));
    assert_eq!(limits("cluster-wide = [\"max-ips\", \"max-connections\"]\n"), (true, true));
    assert_eq!(limits("cluster-wide = true\n"), (true, true));
    assert_eq!(limits("cluster-wide = false\n"), (false, false));
    assert_eq!(limits("cluster-wide = []\n"), (false, false));
    assert_eq!(limits(""), (false, false));
    let e = error("[secret-limits-default]\ncluster-wide = [\"quota\"]\n");
    assert!(e.contains("secret-limits-default.cluster-wide") && e.contains("max-ips"), "{e}");
    let e = error("[secret-limits-default]\ncluster-wide = 1\n");
    assert!(e.contains("secret-limits-default.cluster-wide"), "{e}");
}
