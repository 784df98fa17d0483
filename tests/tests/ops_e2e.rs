//! What operators run next to the proxy, end to end on the runtime this binary was built
//! with: `log-format = "json"` (every line of a real run's log is one JSON object with the
//! text format's fields) and the Grafana dashboard in `contrib/grafana/` (every metric its
//! queries use is in a real scrape after real traffic).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::closed_port;
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "front.example";
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/grafana/mtg-multi.json");

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

/// A config with users `alice` (1) and `bob` (2), DC 2 at `dc`, fronting to `front`, the top
/// level keys `top` and then `sections`.
fn config(dc: SocketAddr, front: &FrontingSite, top: &str, sections: &str) -> String {
    format!(
        "bind-to = \"{}\"\n{top}\n[secrets]\nalice = \"{}\"\nbob = \"{}\"\n\
         [domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.timeout]\nhandshake = \"2s\"\n\
         idle = \"30s\"\ntcp = \"2s\"\n[network.dc-overrides]\n2 = [\"{dc}\"]\n{sections}",
        closed_port(),
        user(1).to_hex(),
        user(2).to_hex(),
        front.addr().port()
    )
}

/// One relayed session of `alice` (`len` bytes echoed by the fake DC), and one connection
/// that is not a client (fronted to the site).
fn traffic(proxy: SocketAddr, len: usize) {
    block_on(async move {
        let mut client = ProxyClient::connect_ee(proxy, &user(1), 2).await.unwrap();
        let payload = mtg_tests::config_text::pattern(len, 7);
        client.send(&payload).await.unwrap();
        assert_eq!(client.recv_exact(len).await.unwrap(), payload);
        client.shutdown().await.unwrap();
    });
    let mut probe = TcpStream::connect(proxy).unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    probe.write_all(b"GET / HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = probe.read_to_end(&mut answer);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_text_fields() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let text = config(dc.addr(), &front, "log-format = \"json\"\ndebug = true", "");
    let proxy = ProxyProcess::start(BIN, &text, &Launch::default());
    traffic(proxy.addr(), 4096);
    assert!(front.wait_until(Duration::from_secs(10), |c| !c.is_empty()), "the probe was not fronted");
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{log}");
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let object = object.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.get(key).is_some_and(serde_json::Value::is_string), "no {key} in {line}");
        }
        let level = object["level"].as_str().unwrap();
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level), "{line}");
        assert!(
            !line.contains(&user(1).to_hex()) && !line.contains(&user(1).to_base64url()),
            "secret logged"
        );
        messages.push((object["message"].as_str().unwrap().to_owned(), object.clone()));
    }
    let serving = messages.iter().find(|(m, _)| m == "serving").map(|(_, o)| o).expect("a serving line");
    // The text line's fields, at the top level of the object.
    assert_eq!(serving["users"], serde_json::json!(2), "{serving:?}");
    assert_eq!(serving["target"], "mtg_app::run", "{serving:?}");
    assert!(serving["listen"].as_str().is_some_and(|l| l.contains("127.0.0.1:")), "{serving:?}");
    assert!(serving.contains_key("api") && serving.contains_key("metrics"), "{serving:?}");
    assert!(messages.iter().any(|(m, _)| m == "stopped"), "no stopped line:\n{log}");
    assert!(messages.len() > 3, "the debug run logged only {} lines:\n{log}", messages.len());
}

/// The sample names in a Prometheus text scrape.
fn sample_names(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `mtg_…` metric name in the dashboard's panel queries and template variables.
fn dashboard_metrics(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    walk(dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard has only {} queries", queries.len());
    let mut names = std::collections::BTreeSet::new();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("mtg_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// `GET /metrics` from the Prometheus endpoint.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn grafana_dashboard_queries_only_metrics_a_real_scrape_has() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard file")).expect("JSON");
    let wanted = dashboard_metrics(&dashboard);
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let sections = format!(
        "[secret-limits.bob]\ndisabled = true\n[defense.anti-replay]\nenabled = true\n\
         [stats.prometheus]\nenabled = true\nbind-to = \"{}\"\nhttp-path = \"/metrics\"\n",
        closed_port()
    );
    let proxy = ProxyProcess::start(BIN, &config(dc.addr(), &front, "", &sections), &Launch::default());
    let addr = proxy.addr();
    traffic(addr, 64 * 1024);
    block_on(async move {
        // bob is disabled: fronted, counted as a limit; a key nobody has: a probe search.
        assert!(ProxyClient::connect_ee(addr, &user(2), 2).await.is_err(), "disabled bob got in");
        let stranger = Secret::fake_tls([9; 16], HOST).unwrap();
        assert!(ProxyClient::connect_ee(addr, &stranger, 2).await.is_err(), "an unknown key got in");
    });
    let metrics = proxy.metrics().expect("the metrics address");
    // Counters of an event are exported once it happened: scrape until they all are (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let missing = loop {
        let names = sample_names(&scrape(metrics));
        let missing: Vec<&String> = wanted.iter().filter(|m| !names.contains(*m)).collect();
        if missing.is_empty() || std::time::Instant::now() >= deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        // A poll interval between scrapes, not a synchronisation: the loop ends on the answer.
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "queried by the dashboard, absent from the scrape:\n{}",
        scrape(metrics)
    );
    for name in ["mtg_user_traffic_total", "mtg_client_connections", "mtg_telegram_traffic_total"] {
        assert!(wanted.contains(name), "the dashboard does not show {name}");
    }
}
