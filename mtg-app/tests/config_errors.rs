//! Malformed configs: each is refused with one exact line naming the key, the value as
//! written and what is allowed, and no secret ever appears in the message.

use mtg_app::config::Config;

const KEY_HEX: &str = "367a189aee18fa31c190054efd4a8e95";
const SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";

/// A valid config with `extra` appended (tables may follow: the base is top-level keys only).
fn with(extra: &str) -> String {
    format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:3128\"\n{extra}")
}

/// A valid `bind-to` and `[secrets]` holding `entries`.
fn users(entries: &str) -> String {
    format!("bind-to = \"127.0.0.1:3128\"\n[secrets]\n{entries}")
}

fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        // Durations.
        (
            "bad duration",
            with("[network.timeout]\nidle = \"5 minutes\"\n"),
            "invalid value for network.timeout.idle: \"5 minutes\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        (
            "negative duration",
            with("tolerate-time-skewness = \"-5s\"\n"),
            "invalid value for tolerate-time-skewness: \"-5s\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        (
            "duration without unit",
            with("[throttle]\ncheck-interval = \"5\"\n"),
            "invalid value for throttle.check-interval: \"5\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        (
            "duration as a number",
            with("[defense.blocklist]\nupdate-each = 3600\n"),
            "invalid value for defense.blocklist.update-each: 3600: expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        // Byte sizes.
        (
            "bad byte size",
            with("[network]\ntcp-not-sent-lowat = \"lots\"\n"),
            "invalid value for network.tcp-not-sent-lowat: \"lots\": expected a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes",
        ),
        (
            "negative byte size",
            with("[defense.anti-replay]\nmax-size = -1\n"),
            "invalid value for defense.anti-replay.max-size: -1: expected a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes",
        ),
        // bind-to.
        (
            "hostname in bind-to",
            format!("secret = \"{SECRET}\"\nbind-to = \"localhost:443\"\n"),
            "invalid value for bind-to: \"localhost:443\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "port 0",
            format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:0\"\n"),
            "invalid value for bind-to: \"127.0.0.1:0\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "port 70000",
            format!("secret = \"{SECRET}\"\nbind-to = \"127.0.0.1:70000\"\n"),
            "invalid value for bind-to: \"127.0.0.1:70000\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "wildcard bind-to",
            format!("secret = \"{SECRET}\"\nbind-to = \"*:443\"\n"),
            "invalid value for bind-to: \"*:443\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "duplicate bind-to",
            format!(
                "secret = \"{SECRET}\"\nbind-to = [\"127.0.0.1:443\", \"[::1]:443\", \"127.0.0.1:443\"]\n"
            ),
            "invalid value for bind-to: \"127.0.0.1:443\": expected each address once (this one is listed twice)",
        ),
        (
            "empty bind-to entry",
            format!("secret = \"{SECRET}\"\nbind-to = [\"127.0.0.1:443\", \"\"]\n"),
            "invalid value for bind-to: \"\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "bind-to of the wrong type",
            format!("secret = \"{SECRET}\"\nbind-to = 443\n"),
            "invalid value for bind-to: 443: expected an IP:port string or an array of them",
        ),
        ("missing bind-to", format!("secret = \"{SECRET}\"\n"), "bind-to is required"),
        (
            "mistyped bind-to",
            format!("secret = \"{SECRET}\"\nbind_to = \"127.0.0.1:3128\"\n"),
            "bind-to is required (bind_to is unknown: did you mean `bind-to`?)",
        ),
        (
            "mistyped statsd address",
            with("[stats.statsd]\nenabled = true\nadress = \"127.0.0.1:8125\"\n"),
            "stats.statsd.address is required (stats.statsd.enabled is true; stats.statsd.adress is unknown: did you mean `address`?)",
        ),
        ("empty bind-to array", format!("secret = \"{SECRET}\"\nbind-to = []\n"), "bind-to is required"),
        // Enums and formats.
        (
            "bad prefer-ip",
            with("prefer-ip = \"ipv4\"\n"),
            "invalid value for prefer-ip: \"ipv4\": expected prefer-ipv4, prefer-ipv6, only-ipv4 or only-ipv6",
        ),
        (
            "bad tag-format",
            with("[stats.statsd]\ntag-format = \"json\"\n"),
            "invalid value for stats.statsd.tag-format: \"json\": expected datadog, influxdb or graphite",
        ),
        (
            "metric-prefix with a dot",
            with("[stats.prometheus]\nmetric-prefix = \"mtg.proxy\"\n"),
            "invalid value for stats.prometheus.metric-prefix: \"mtg.proxy\": expected lowercase letters and digits only (no dots or underscores)",
        ),
        (
            "bad public IP",
            with("public-ipv4 = \"::1\"\n"),
            "invalid value for public-ipv4: \"::1\": expected an IPv4 address",
        ),
        (
            "not an IP",
            with("public-ipv6 = \"my.host\"\n"),
            "invalid value for public-ipv6: \"my.host\": expected a literal IPv4 or IPv6 address",
        ),
        // URLs.
        (
            "proxy with an http scheme",
            with("[network]\nproxies = [\"http://user:hunter2@127.0.0.1:8080\"]\n"),
            "invalid value for network.proxies: \"http://user:***@127.0.0.1:8080\": expected a socks5:// or socks5h:// URL like socks5://user:pass@127.0.0.1:1080",
        ),
        (
            "empty proxy string",
            with("[network]\nproxies = [\"\"]\n"),
            "invalid value for network.proxies: \"\": expected a socks5:// or socks5h:// URL (an empty entry does not mean direct: remove it)",
        ),
        (
            "bad DNS URI",
            with("[network]\ndns = \"ftp://1.1.1.1\"\n"),
            "invalid value for network.dns: \"ftp://1.1.1.1\": expected a DNS URI: https://host[/path], tls://host[:port], udp://IP[:port] or a bare IP",
        ),
        (
            "UDP DNS with a hostname",
            with("[network]\ndns = \"udp://dns.example\"\n"),
            "invalid value for network.dns: \"udp://dns.example\": expected a DNS URI: https://host[/path], tls://host[:port], udp://IP[:port] or a bare IP",
        ),
        (
            "doppelganger http URL",
            with("[defense.doppelganger]\nurls = [\"http://www.example.com/\"]\n"),
            "invalid value for defense.doppelganger.urls: \"http://www.example.com/\": expected an https:// URL with a host",
        ),
        (
            "blocklist that is neither a file nor a URL",
            with("[defense.blocklist]\nurls = [\"/nonexistent/blocklist.txt\"]\n"),
            "invalid value for defense.blocklist.urls: \"/nonexistent/blocklist.txt\": expected an existing readable file or an http(s):// URL",
        ),
        (
            "fronting host with a port",
            with("[domain-fronting]\nhost = \"front.example:443\"\n"),
            "invalid value for domain-fronting.host: \"front.example:443\": expected a hostname or IP address without port or path",
        ),
        // Secrets: named, never shown.
        (
            "zero key",
            users("alice = \"ee00000000000000000000000000000000676f6f676c652e636f6d\"\n"),
            "invalid secret secrets.alice: secret key is all zeros",
        ),
        (
            "too short",
            users("alice = \"ee0102\"\n"),
            "invalid secret secrets.alice: secret key is shorter than 16 bytes",
        ),
        (
            "no hostname",
            users(&format!("alice = \"ee{KEY_HEX}\"\n")),
            "invalid secret secrets.alice: ee secret has no hostname after the 16-byte key",
        ),
        (
            "plain 16-byte secret",
            format!("bind-to = \"127.0.0.1:1\"\nsecret = \"{KEY_HEX}\"\n"),
            "invalid secret secret: secret starts with byte 36; only ee (FakeTLS) and dd (secured) secrets are supported",
        ),
        (
            "standard base64",
            users("alice = \"7jZ6GJruGPoxwZAFTv1KjpVzdG9yYWdlLmdvb2dsZWFwaXMuY29t+/==\"\n"),
            "invalid secret secrets.alice: secret is neither hex nor base64url without padding",
        ),
        (
            "dd secret while [secured] is off",
            users(&format!("bob = \"dd{KEY_HEX}\"\n")),
            "invalid secret secrets.bob: dd (secured) secrets need [secured] enabled = true",
        ),
        (
            "secret of the wrong type",
            users("alice = 12345\n"),
            "invalid secret secrets.alice: expected a secret string (hex or base64url), found an integer",
        ),
        (
            "missing secret",
            "bind-to = \"127.0.0.1:1\"\n[secrets]\n".to_owned(),
            "secret is required (or a non-empty [secrets] table of name = \"secret\")",
        ),
        // The classic: top-level keys written after [secrets].
        (
            "bind-to after [secrets]",
            format!("[secrets]\nalice = \"{SECRET}\"\nbind-to = \"127.0.0.1:3128\"\n"),
            "invalid secret secrets.bind-to: secret is neither hex nor base64url without padding (`bind-to` is inside [secrets]: top-level keys must come before every [table])",
        ),
        (
            "concurrency after [secrets]",
            format!("bind-to = \"127.0.0.1:3128\"\n[secrets]\nalice = \"{SECRET}\"\nconcurrency = 8192\n"),
            "invalid secret secrets.concurrency: expected a secret string (hex or base64url), found an integer (`concurrency` is inside [secrets]: top-level keys must come before every [table])",
        ),
        (
            "bind-to after another table",
            format!("secret = \"{SECRET}\"\n[network]\ndns = \"1.1.1.1\"\nbind-to = \"127.0.0.1:3128\"\n"),
            "bind-to is required (`bind-to` is inside [network]: top-level keys must come before every [table])",
        ),
        // [secret-limits.NAME].
        (
            "limits for an unknown user",
            users(&format!("alice = \"{SECRET}\"\n[secret-limits.mallory]\nquota = \"1gib\"\n")),
            "invalid value for secret-limits: \"mallory\": expected the name of a configured user (alice)",
        ),
        (
            "bad expires date",
            with("[secret-limits.default]\nexpires = \"2026-02-30\"\n"),
            "invalid value for secret-limits.default.expires: \"2026-02-30\": expected an RFC 3339 time like 2026-12-31T23:59:59Z or a date like 2026-12-31",
        ),
        (
            "expires without a time zone",
            with("[secret-limits.default]\nexpires = 2026-12-31T10:00:00\n"),
            "invalid value for secret-limits.default.expires: 2026-12-31T10:00:00: expected an RFC 3339 time like 2026-12-31T23:59:59Z or a date like 2026-12-31",
        ),
        (
            "bad quota-reset",
            with("[secret-limits.default]\nquota-reset = \"weekly\"\n"),
            "invalid value for secret-limits.default.quota-reset: \"weekly\": expected none or monthly",
        ),
        (
            "bad quota",
            with("[secret-limits.default]\nquota = \"a lot\"\n"),
            "invalid value for secret-limits.default.quota: \"a lot\": expected a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes",
        ),
        (
            "bad max-ips",
            with("[secret-limits.default]\nmax-ips = -1\n"),
            "invalid value for secret-limits.default.max-ips: -1: expected a whole number from 1 to 4294967295 (0 means the default)",
        ),
        (
            "bad rate-limit",
            with("[secret-limits.default]\nrate-limit = \"fast\"\n"),
            "invalid value for secret-limits.default.rate-limit: \"fast\": expected a rate in bytes per second like 1mib, 500kib (base 2), 8mbit, 500kbit (base 10) or a number of bytes",
        ),
        (
            "bad default rate-limit",
            with("[secret-limits-default]\nrate-limit = -8\n"),
            "invalid value for secret-limits-default.rate-limit: -8: expected a rate in bytes per second like 1mib, 500kib (base 2), 8mbit, 500kbit (base 10) or a number of bytes",
        ),
        (
            "bad default max-ips",
            with("[secret-limits-default]\nmax-ips = \"two\"\n"),
            "invalid value for secret-limits-default.max-ips: \"two\": expected a whole number from 1 to 4294967295 (0 means the default)",
        ),
        (
            "bad default quota",
            with("[secret-limits-default]\nquota = \"a lot\"\n"),
            "invalid value for secret-limits-default.quota: \"a lot\": expected a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes",
        ),
        (
            "default limits not a table",
            with("secret-limits-default = 3\n"),
            "invalid value for secret-limits-default: 3: expected a table",
        ),
        // [network.dc-overrides].
        (
            "dc-overrides with a hostname",
            with("[network.dc-overrides]\n2 = [\"dc2.example:443\"]\n"),
            "invalid value for network.dc-overrides.2: \"dc2.example:443\": expected a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)",
        ),
        (
            "dc-overrides with a non-integer key",
            with("[network.dc-overrides]\nmain = [\"127.0.0.1:443\"]\n"),
            "invalid value for network.dc-overrides: \"main\": expected DC numbers as keys: integers from -32768 to 32767 like 2, 203 or -2",
        ),
        (
            "dc-overrides key out of range",
            with("[network.dc-overrides]\n40000 = [\"127.0.0.1:443\"]\n"),
            "invalid value for network.dc-overrides: \"40000\": expected DC numbers as keys: integers from -32768 to 32767 like 2, 203 or -2",
        ),
        (
            "dc-overrides with an empty list",
            with("[network.dc-overrides]\n2 = []\n"),
            "invalid value for network.dc-overrides.2: []: expected a non-empty array of literal \"IP:port\" strings",
        ),
        (
            "dc-overrides with a single string",
            with("[network.dc-overrides]\n2 = \"127.0.0.1:443\"\n"),
            "invalid value for network.dc-overrides.2: \"127.0.0.1:443\": expected a non-empty array of literal \"IP:port\" strings",
        ),
        // Numbers.
        (
            "error-rate out of range",
            with("[defense.anti-replay]\nerror-rate = 150.0\n"),
            "invalid value for defense.anti-replay.error-rate: 150.0: expected a number greater than 0 and less than 100",
        ),
        (
            "negative error-rate",
            with("[defense.anti-replay]\nerror-rate = -0.5\n"),
            "invalid value for defense.anti-replay.error-rate: -0.5: expected a number greater than 0 and less than 100",
        ),
        (
            "string where an integer is expected",
            with("concurrency = \"many\"\n"),
            "invalid value for concurrency: \"many\": expected a whole number from 1 to 4294967295 (0 means the default)",
        ),
        (
            "negative count",
            with("[network.keep-alive]\ncount = -1\n"),
            "invalid value for network.keep-alive.count: -1: expected a whole number from 1 to 4294967295 (0 means the default)",
        ),
        (
            "count above u32",
            with("[throttle]\nmax-connections = 5000000000\n"),
            "invalid value for throttle.max-connections: 5000000000: expected a whole number from 1 to 4294967295 (0 means the default)",
        ),
        (
            "port out of range",
            with("[domain-fronting]\nport = 65536\n"),
            "invalid value for domain-fronting.port: 65536: expected a port from 1 to 65535",
        ),
        (
            "boolean as a string",
            with("debug = \"yes\"\n"),
            "invalid value for debug: \"yes\": expected true or false",
        ),
        (
            "section that is not a table",
            with("network = \"direct\"\n"),
            "invalid value for network: \"direct\": expected a table",
        ),
        (
            "secrets written as a string",
            format!("bind-to = \"127.0.0.1:1\"\nsecrets = \"{SECRET}\"\n"),
            "invalid value for secrets: a string (not shown): expected a table of name = \"secret\" (for one secret, use `secret`)",
        ),
        (
            "limits that are not a table",
            with("[secret-limits]\ndefault = 5\n"),
            "invalid value for secret-limits.default: 5: expected a table",
        ),
        // Ad tags: every message names the key and the rule, never the value.
        (
            "ad tag too short",
            with("ad-tag = \"0123\"\n"),
            "invalid ad tag ad-tag: it has 4 characters; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "ad tag with a non-hex character",
            with("ad-tag = \"0123456789abcdef0123456789abcdeg\"\n"),
            "invalid ad tag ad-tag: it holds characters other than 0-9 and a-f; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "ee secret pasted as the ad tag",
            with(&format!("ad-tag = \"{SECRET}\"\n")),
            "invalid ad tag ad-tag: this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "dd secret pasted as a user's ad tag",
            with(&format!("[secret-ad-tags]\ndefault = \"dd{KEY_HEX}\"\n")),
            "invalid ad tag secret-ad-tags.default: this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "bare secret key pasted as the ad tag",
            with(&format!("ad-tag = \"{KEY_HEX}\"\n")),
            "invalid ad tag ad-tag: it is the secret key of user default: give @MTProxybot that key, then use the tag it answers with; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "ad tag that is not a string",
            with("ad-tag = 5\n"),
            "invalid ad tag ad-tag: expected a string, found an integer; @MTProxybot's proxy tag is 32 hex characters",
        ),
        (
            "ad tag of an unknown user",
            users(&format!(
                "alice = \"{SECRET}\"\n[secret-ad-tags]\nmallory = \"fedcba9876543210fedcba9876543210\"\n"
            )),
            "invalid value for secret-ad-tags: \"mallory\": expected the name of a configured user (alice)",
        ),
        (
            "top-level key written after [secret-ad-tags]",
            with("[secret-ad-tags]\napi-persist = true\n"),
            "invalid value for secret-ad-tags: \"api-persist\": expected the name of a configured user (default) (`api-persist` is a top-level key: top-level keys must come before every [table])",
        ),
        (
            "middle-proxy source that is neither a URL nor a file",
            with("[middle-proxy]\nsecret-url = \"ftp://u:hunter2@core.example/secret\"\n"),
            "invalid value for middle-proxy.secret-url: \"ftp://u:***@core.example/secret\": expected an existing readable file or an http(s):// URL",
        ),
        (
            "middle-proxy refresh period",
            with("[middle-proxy]\nupdate-each = \"hourly\"\n"),
            "invalid value for middle-proxy.update-each: \"hourly\": expected a non-negative Go duration like 300ms, 10s, 1h30m",
        ),
        // Features that need an address.
        (
            "statsd on without an address",
            with("[stats.statsd]\nenabled = true\n"),
            "stats.statsd.address is required (stats.statsd.enabled is true)",
        ),
        (
            "prometheus on without an address",
            with("[stats.prometheus]\nenabled = true\n"),
            "stats.prometheus.bind-to is required (stats.prometheus.enabled is true)",
        ),
        (
            "API on a public address without a token",
            with("api-bind-to = \"0.0.0.0:9000\"\n"),
            "api-token is required (api-bind-to 0.0.0.0:9000 is not a loopback address: without a token the API is open to all)",
        ),
        // TOML itself.
        (
            "TOML syntax error",
            "bind-to = \"127.0.0.1:1\"\nsecret = = 5\n".to_owned(),
            "config is not valid TOML: line 2, column 10: invalid string: expected `\"`, `'`",
        ),
        (
            "unterminated string holding a secret",
            format!("bind-to = \"127.0.0.1:1\"\nsecret = \"{SECRET}\n"),
            "config is not valid TOML: line 2, column 89: invalid basic string",
        ),
        (
            "duplicate user",
            users(&format!("alice = \"{SECRET}\"\nalice = \"{SECRET}\"\n")),
            "config is not valid TOML: line 4, column 1: duplicate key `alice` in table `secrets`",
        ),
    ]
}

#[test]
fn malformed_configs_give_one_exact_line() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let got = match Config::from_toml_str(text) {
            Ok(_) => "<loaded>".to_owned(),
            Err(e) => e.to_string(),
        };
        if got != *expected {
            failures.push(format!("{name}:\n  expected: {expected}\n  got:      {got}"));
        }
        assert!(!got.contains('\n'), "{name}: more than one line: {got}");
        assert!(!got.contains(KEY_HEX), "{name}: a secret leaked: {got}");
        assert!(!got.contains("hunter2"), "{name}: a password leaked: {got}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
