use std::net::IpAddr;

use super::prometheus::Format;
use super::*;
use crate::config::TagFormat;

fn datadog() -> StatsdSettings {
    StatsdSettings {
        address: "127.0.0.1:8125".parse().unwrap(),
        prefix: "mtg.".into(),
        tag_format: TagFormat::Datadog,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_fresh_store_exposes_the_unlabelled_counters_at_zero() {
    let text = Metrics::new("mtg").prometheus_text(Format::OpenMetrics);
    for name in ["domain_fronting", "concurrency_limited", "replay_attacks"] {
        assert!(
            text.contains(&format!("\n# TYPE mtg_{name} counter\nmtg_{name}_total 0\n")),
            "{name}: {text}"
        );
    }
    // A labelled family shows once it has a series.
    assert!(!text.contains("client_connections"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn events_reach_their_series_with_mtg_labels() {
    let metrics = Metrics::new("proxy");
    let client = metrics.client_connection(ip("::ffff:10.0.0.1"));
    let (_dc, traffic) = metrics.telegram_connection(ip("149.154.167.51"), 2);
    traffic.add(100, 2500);
    traffic.add(1, 0);
    metrics.concurrency_limited();
    metrics.replay_attack();
    metrics.replay_attack();
    metrics.ip_blocklisted("blocklist");
    metrics.iplist_size("allowlist", 2);
    metrics.user_throttled("alice");
    metrics.user_fronted_by_limit("bob", "quota");
    let mut carry = 0;
    let waited = metrics.user_rate_limited("bob");
    waited.add_ns(&mut carry, 1_500_000);
    waited.add_ns(&mut carry, 600_000);
    let (_user, user_traffic) = metrics.user_connection("alice");
    user_traffic.add(7, 9);
    metrics.middle_proxy_fetch("secret", "ok");
    metrics.middle_proxy_fetch("config_v6", "failed");
    metrics.middle_proxy_fetch("config_v6", "failed");
    metrics.middle_proxy_endpoints("ipv4", 3);
    metrics.middle_proxy_dial("ok");
    metrics.middle_proxy_dial("handshake");
    metrics.middle_proxy_dial("handshake");
    let middle_conn = metrics.middle_proxy_connection("[2001:db8::1]:8888".parse().unwrap());
    let text = metrics.prometheus_text(Format::Text);
    for want in [
        "proxy_client_connections{ip_family=\"ipv4\"} 1\n",
        "proxy_telegram_connections{telegram_ip=\"149.154.167.51\",dc=\"2\"} 1\n",
        "proxy_telegram_traffic_total{telegram_ip=\"149.154.167.51\",dc=\"2\",direction=\"from_client\"} 101\n",
        "proxy_telegram_traffic_total{telegram_ip=\"149.154.167.51\",dc=\"2\",direction=\"to_client\"} 2500\n",
        "# TYPE proxy_telegram_traffic_total counter\n",
        "proxy_concurrency_limited_total 1\n",
        "proxy_replay_attacks_total 2\n",
        "proxy_ip_blocklisted_total{ip_list=\"blocklist\"} 1\n",
        "proxy_iplist_size{ip_list=\"allowlist\"} 2\n",
        "proxy_user_throttled_total{user=\"alice\"} 1\n",
        "proxy_user_fronted_by_limit_total{user=\"bob\",reason=\"quota\"} 1\n",
        "proxy_user_rate_limited_milliseconds_total{user=\"bob\"} 2\n",
        "proxy_user_connections{user=\"alice\"} 1\n",
        "proxy_user_traffic_total{user=\"alice\",direction=\"from_client\"} 7\n",
        "proxy_user_traffic_total{user=\"alice\",direction=\"to_client\"} 9\n",
        "proxy_middle_proxy_fetches_total{document=\"secret\",outcome=\"ok\"} 1\n",
        "proxy_middle_proxy_fetches_total{document=\"config_v6\",outcome=\"failed\"} 2\n",
        "# TYPE proxy_middle_proxy_endpoints gauge\n",
        "proxy_middle_proxy_endpoints{family=\"ipv4\"} 3\n",
        "proxy_middle_proxy_dials_total{outcome=\"ok\"} 1\n",
        "proxy_middle_proxy_dials_total{outcome=\"handshake\"} 2\n",
        "# TYPE proxy_middle_proxy_connections gauge\n",
        "proxy_middle_proxy_connections{endpoint=\"[2001:db8::1]:8888\"} 1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    drop(client);
    drop(middle_conn);
    let text = metrics.prometheus_text(Format::Text);
    assert!(text.contains("proxy_client_connections{ip_family=\"ipv4\"} 0\n"), "{text}");
    assert!(text.contains("proxy_middle_proxy_connections{endpoint=\"[2001:db8::1]:8888\"} 0\n"), "{text}");
}

#[test]
fn statsd_gets_changes_since_the_last_flush_only() {
    let metrics = Metrics::new("mtg");
    let settings = datadog();
    assert!(metrics.statsd_lines(&settings).is_empty(), "nothing happened yet");

    let first = metrics.client_connection(ip("127.0.0.1"));
    let second = metrics.client_connection(ip("127.0.0.1"));
    let (fronted, traffic) = metrics.fronting(ip("::1"));
    traffic.add(517, 0);
    traffic.add(0, 1200);
    metrics.iplist_size("blocklist", 0);
    assert_eq!(
        metrics.statsd_lines(&settings),
        [
            "mtg.client_connections:+2|g|#ip_family:ipv4",
            "mtg.domain_fronting_connections:+1|g|#ip_family:ipv6",
            "mtg.iplist_size:0|g|#ip_list:blocklist",
            "mtg.domain_fronting_traffic:517|c|#direction:from_client",
            "mtg.domain_fronting_traffic:1200|c|#direction:to_client",
            "mtg.domain_fronting:1|c",
        ]
    );
    assert!(metrics.statsd_lines(&settings).is_empty(), "nothing changed since");

    drop((first, second, fronted));
    traffic.add(3, 0);
    metrics.iplist_size("blocklist", 0);
    // A connection opened and closed between two flushes nets to nothing.
    drop(metrics.client_connection(ip("127.0.0.1")));
    assert_eq!(
        metrics.statsd_lines(&settings),
        [
            "mtg.client_connections:-2|g|#ip_family:ipv4",
            "mtg.domain_fronting_connections:-1|g|#ip_family:ipv6",
            "mtg.domain_fronting_traffic:3|c|#direction:from_client",
        ]
    );
    metrics.iplist_size("blocklist", 12);
    assert_eq!(metrics.statsd_lines(&settings), ["mtg.iplist_size:12|g|#ip_list:blocklist"]);
}

#[test]
fn the_config_decides_the_exporters() {
    let text = "bind-to = \"127.0.0.1:3128\"\nsecret = \"ee1c27db9906d56d6e2d439db13bc506696c6f63616c686f7374\"\n\
                [stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:3130\"\nhttp-path = \"/metrics/\"\n\
                metric-prefix = \"xyz\"\n[stats.statsd]\nenabled = true\naddress = \"127.0.0.1:8125\"\n\
                tag-format = \"graphite\"\n";
    let config = Config::from_toml_str(text).unwrap().config;
    let metrics = Metrics::from_config(&config);
    assert_eq!(
        metrics.prometheus(),
        Some(&PrometheusEndpoint { bind_to: "127.0.0.1:3130".parse().unwrap(), path: "/metrics".into() })
    );
    assert_eq!(
        metrics.statsd(),
        Some(&StatsdSettings {
            address: "127.0.0.1:8125".parse().unwrap(),
            prefix: "mtg.".into(),
            tag_format: TagFormat::Graphite
        })
    );
    assert!(metrics.prometheus_text(Format::Text).contains("xyz_replay_attacks_total 0\n"));

    let off = Config::from_toml_str(&text.replace("enabled = true", "enabled = false")).unwrap();
    let metrics = Metrics::from_config(&off.config);
    assert_eq!((metrics.prometheus(), metrics.statsd()), (None, None));
}
