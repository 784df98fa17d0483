//! Metrics end to end on the runtime this binary was built with: real sessions through the
//! proxy to the fake DC and the fronting site, then the Prometheus endpoint is scraped (exact
//! values, `promtool check metrics`) and statsd lines are received over UDP in each tag style.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_proto::client::FakeTlsHello;
use mtg_tests::client::ProxyClient;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const HOST: &str = "front.example";

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

/// A config with `users`, DC 2 at `dc`, fronting to `front`, plus `sections`.
fn config(users: &[(&str, &Secret)], dc: SocketAddr, front: &FrontingSite, sections: &str) -> String {
    let mut text = "bind-to = \"127.0.0.1:1\"\n[secrets]\n".to_owned();
    for (name, secret) in users {
        text.push_str(&format!("{name} = \"{}\"\n", secret.to_hex()));
    }
    text.push_str(&format!(
        "[domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.timeout]\nhandshake = \"2s\"\n\
         idle = \"30s\"\ntcp = \"2s\"\n[network.dc-overrides]\n2 = [\"{dc}\"]\n{sections}",
        front.addr().port()
    ));
    text
}

const PROMETHEUS: &str =
    "[stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n";

/// `GET path` with an optional `Accept`; returns (status, content type, body).
fn scrape(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<i64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics_text(proxy: &ProxyUnderTest) -> String {
    let (status, _, body) = scrape(proxy.metrics().unwrap(), "/metrics", None);
    assert_eq!(status, 200);
    body
}

fn wait_idle(proxy: &ProxyUnderTest) {
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(10)), "sessions did not end");
}

/// A stream that counts the bytes read and written through it.
struct Counting {
    inner: tokio::net::TcpStream,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTPS GET for the fronting site's page through the proxy; returns (bytes the client
/// wrote, bytes it read, the response).
fn fronted_https_get(proxy: SocketAddr, front: &FrontingSite) -> (u64, u64, Vec<u8>) {
    let config = front.client_config();
    block_on(async move {
        let (read, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let counting = Counting { inner: tcp, read: read.clone(), written: written.clone() };
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, counting).await.unwrap();
        tls.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = Vec::new();
        // The site may close without close_notify: the data is there all the same.
        let _ = tls.read_to_end(&mut response).await;
        drop(tls);
        (written.load(Ordering::Relaxed), read.load(Ordering::Relaxed), response)
    })
}

#[test]
fn prometheus_counts_sessions_traffic_and_fronting_exactly() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[("alice", &user(1))], dc.addr(), &front, PROMETHEUS));
    let addr = proxy.addr();

    // One session held open: the gauges show it.
    let (tx_hold, rx_hold) = std::sync::mpsc::channel::<()>();
    let (tx_up, rx_up) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        block_on(async move {
            let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
            client.send(&[7u8; 1000]).await.unwrap();
            assert_eq!(client.recv_exact(1000).await.unwrap(), vec![7u8; 1000]);
            tx_up.send(()).unwrap();
            let _ = tokio::task::spawn_blocking(move || rx_hold.recv()).await;
        });
    });
    rx_up.recv_timeout(Duration::from_secs(10)).unwrap();
    let live = metrics_text(&proxy);
    let dc_series = "telegram_ip=\"127.0.0.1\",dc=\"2\"";
    assert_eq!(value(&live, "mtg_client_connections{ip_family=\"ipv4\"}"), Some(1), "{live}");
    assert_eq!(value(&live, &format!("mtg_telegram_connections{{{dc_series}}}")), Some(1), "{live}");
    assert_eq!(value(&live, "mtg_user_connections{user=\"alice\"}"), Some(1), "{live}");
    drop(tx_hold);
    held.join().unwrap();

    // A second session, 3000 bytes each way.
    block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        client.send(&[9u8; 3000]).await.unwrap();
        client.recv_exact(3000).await.unwrap();
    });
    // A browser gets the website through the proxy.
    let (written, read, response) = fronted_https_get(addr, &front);
    assert!(String::from_utf8_lossy(&response).contains("mtg-tests-fronting-marker-5c1e"));
    wait_idle(&proxy);

    let text = metrics_text(&proxy);
    let (dc_in, dc_out): (u64, u64) =
        dc.snapshot().iter().fold((0, 0), |(i, o), c| (i + c.bytes_received, o + c.bytes_sent));
    assert_eq!((dc_in, dc_out), (4000, 4000), "what the DC saw, init frames aside");
    for (series, want) in [
        (format!("mtg_telegram_traffic_total{{{dc_series},direction=\"from_client\"}}"), 4000),
        (format!("mtg_telegram_traffic_total{{{dc_series},direction=\"to_client\"}}"), 4000),
        (format!("mtg_telegram_connections{{{dc_series}}}"), 0),
        ("mtg_user_traffic_total{user=\"alice\",direction=\"from_client\"}".to_owned(), 4000),
        ("mtg_user_traffic_total{user=\"alice\",direction=\"to_client\"}".to_owned(), 4000),
        ("mtg_user_connections{user=\"alice\"}".to_owned(), 0),
        ("mtg_client_connections{ip_family=\"ipv4\"}".to_owned(), 0),
        ("mtg_domain_fronting_total".to_owned(), 1),
        ("mtg_domain_fronting_connections{ip_family=\"ipv4\"}".to_owned(), 0),
        ("mtg_domain_fronting_traffic_total{direction=\"from_client\"}".to_owned(), written as i64),
        ("mtg_domain_fronting_traffic_total{direction=\"to_client\"}".to_owned(), read as i64),
        ("mtg_replay_attacks_total".to_owned(), 0),
        ("mtg_concurrency_limited_total".to_owned(), 0),
    ] {
        assert_eq!(value(&text, &series), Some(want), "{series} in:\n{text}");
    }
    let site_got: usize = front.snapshot().iter().map(|c| c.first_bytes.len()).sum();
    assert_eq!(site_got as u64, written, "the site got every byte the client sent");

    // promtool accepts the classic text.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // OpenMetrics when asked for; other paths are not the metrics.
    let metrics = proxy.metrics().unwrap();
    let (status, content_type, om) = scrape(metrics, "/metrics/", Some("application/openmetrics-text"));
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(om.contains("# TYPE mtg_telegram_traffic counter\n"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let (_, content_type, _) = scrape(metrics, "/metrics", None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(scrape(metrics, "/", None).0, 404);
    assert_eq!(scrape(metrics, "/stats", None).0, 404);
}

#[test]
fn user_limits_and_replays_are_counted() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let sections = format!(
        "[defense.anti-replay]\nenabled = true\n[secret-limits.bob]\ndisabled = true\n\
         [secret-limits.carol]\nmax-connections = 1\n{PROMETHEUS}"
    );
    let users = [("alice", &user(1)), ("bob", &user(2)), ("carol", &user(3))];
    let proxy = ProxyUnderTest::start(&config(&users, dc.addr(), &front, &sections));
    let addr = proxy.addr();

    block_on(async move {
        assert!(ProxyClient::connect_ee(addr, &user(2), 2).await.is_err(), "disabled bob is fronted");
        let mut first = ProxyClient::connect_ee(addr, &user(3), 2).await.unwrap();
        // carol's second session sees the ServerHello, then the close (the frame it sends
        // after may meet a reset).
        if let Ok(mut second) = ProxyClient::connect_ee(addr, &user(3), 2).await {
            let _ = second.wait_closed().await;
        }
        first.send(b"ping").await.unwrap();
        assert_eq!(first.recv_exact(4).await.unwrap(), b"ping");
    });

    // A replayed hello.
    let mut hello = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    FakeTlsHello::build(&user(1), now, &mut rand::rng(), &mut hello).unwrap();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&hello).unwrap();
        let mut answer = [0u8; 1024];
        assert!(s.read(&mut answer).unwrap() > 0, "the proxy or the site answers the hello");
    }
    wait_idle(&proxy);

    let text = metrics_text(&proxy);
    for (series, want) in [
        ("mtg_user_fronted_by_limit_total{user=\"bob\",reason=\"disabled\"}", 1),
        ("mtg_user_throttled_total{user=\"carol\"}", 1),
        ("mtg_user_traffic_total{user=\"carol\",direction=\"from_client\"}", 4),
        ("mtg_user_connections{user=\"carol\"}", 0),
        ("mtg_replay_attacks_total", 1),
        ("mtg_domain_fronting_total", 2),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert_eq!(value(&text, "mtg_user_connections{user=\"bob\"}"), None, "bob never got a session");
}

#[test]
fn connections_over_the_concurrency_limit_are_counted() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let text = config(&[("alice", &user(1))], dc.addr(), &front, PROMETHEUS);
    let proxy = ProxyUnderTest::start(&text.replacen("\n[secrets]", "\nconcurrency = 1\n[secrets]", 1));
    // One connection in its handshake fills the only slot; the next two are closed at once.
    let _held = TcpStream::connect(proxy.addr()).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while proxy.active() < 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..2 {
        let mut refused = TcpStream::connect(proxy.addr()).unwrap();
        refused.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "closed without a byte");
    }
    let text = metrics_text(&proxy);
    assert_eq!(value(&text, "mtg_concurrency_limited_total"), Some(2), "{text}");
    assert_eq!(value(&text, "mtg_client_connections{ip_family=\"ipv4\"}"), Some(1), "{text}");
}

/// Receives statsd datagrams until `done` holds for the lines so far (10 s at most).
fn receive_until(socket: &UdpSocket, lines: &mut Vec<String>, done: impl Fn(&[String]) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while !done(lines) {
        assert!(Instant::now() < until, "statsd lines so far: {lines:#?}");
        if let Ok(n) = socket.recv(&mut buf) {
            let datagram = std::str::from_utf8(&buf[..n]).unwrap();
            lines.extend(datagram.split('\n').map(str::to_owned));
        }
    }
}

/// Sums the values of the lines of the form `before` + number + `after` (`templates[which]`).
fn sum(lines: &[String], templates: &[(String, String)], which: usize) -> i64 {
    let (before, after) = &templates[which];
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(before.as_str())?.strip_suffix(after.as_str())?.parse::<i64>().ok())
        .sum()
}

#[test]
fn statsd_lines_follow_each_tag_format() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    for format in ["datadog", "influxdb", "graphite"] {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let sections = format!(
            "[stats.statsd]\nenabled = true\naddress = \"{}\"\ntag-format = \"{format}\"\n",
            socket.local_addr().unwrap()
        );
        let proxy = ProxyUnderTest::start(&config(&[("alice", &user(1))], dc.addr(), &front, &sections));
        let addr = proxy.addr();
        // (name, tags) → the text before and after the value.
        let template = |name: &str, tags: &[(&str, &str)], kind: &str| -> (String, String) {
            let join = |first: &str, sep: &str, pair: &str| -> String {
                tags.iter()
                    .enumerate()
                    .map(|(i, (k, v))| format!("{}{k}{pair}{v}", if i == 0 { first } else { sep }))
                    .collect()
            };
            match format {
                "datadog" => (format!("mtg.{name}:"), format!("|{kind}{}", join("|#", ",", ":"))),
                "influxdb" => (format!("mtg.{name}{}:", join(",", ",", "=")), format!("|{kind}")),
                _ => (format!("mtg.{name}{}:", join(";", ";", "=")), format!("|{kind}")),
            }
        };
        let dc_tags = [("telegram_ip", "127.0.0.1"), ("dc", "2")];
        let templates = [
            template("client_connections", &[("ip_family", "ipv4")], "g"),
            template("telegram_connections", &dc_tags, "g"),
            template("user_connections", &[("user", "alice")], "g"),
            template("telegram_traffic", &[dc_tags[0], dc_tags[1], ("direction", "from_client")], "c"),
            template("telegram_traffic", &[dc_tags[0], dc_tags[1], ("direction", "to_client")], "c"),
            template("user_traffic", &[("user", "alice"), ("direction", "from_client")], "c"),
            template("user_traffic", &[("user", "alice"), ("direction", "to_client")], "c"),
        ];

        let (tx_hold, rx_hold) = std::sync::mpsc::channel::<()>();
        let held = std::thread::spawn(move || {
            block_on(async move {
                let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
                client.send(&[1u8; 500]).await.unwrap();
                client.recv_exact(500).await.unwrap();
                client.send(&[2u8; 200]).await.unwrap();
                client.recv_exact(200).await.unwrap();
                let _ = tokio::task::spawn_blocking(move || rx_hold.recv()).await;
            });
        });
        let mut lines = Vec::new();
        // While the session is open, a flush reports it up: exactly `+1` on each gauge.
        let up = format!("{}+1{}", templates[0].0, templates[0].1);
        receive_until(&socket, &mut lines, |l| l.contains(&up));
        assert!(lines.contains(&format!("{}+1{}", templates[1].0, templates[1].1)), "{format}: {lines:#?}");
        assert!(lines.contains(&format!("{}+1{}", templates[2].0, templates[2].1)), "{format}: {lines:#?}");
        drop(tx_hold);
        held.join().unwrap();
        wait_idle(&proxy);
        // Then the counters reach the exact byte counts and the gauges come back down.
        receive_until(&socket, &mut lines, |l| {
            (3..7).all(|i| sum(l, &templates, i) == 700) && (0..3).all(|i| sum(l, &templates, i) == 0)
        });
        let down = format!("{}-1{}", templates[0].0, templates[0].1);
        assert!(lines.contains(&down), "{format}: {lines:#?}");
        for line in &lines {
            let known = templates.iter().any(|(before, after)| {
                line.strip_prefix(before.as_str())
                    .and_then(|l| l.strip_suffix(after.as_str()))
                    .is_some_and(|n| n.parse::<i64>().is_ok())
            });
            assert!(known, "{format}: unexpected line {line:?}");
        }
    }
}
