//! The HTTP listeners (stats API, Prometheus) under slow and idle clients, with the proxy as
//! a child process:
//! - 1000 clients on each port send half a request head, then nothing; the proxy cuts each
//!   10 s after its accept (between 10 s after the client started connecting and 10 s plus a
//!   margin after its last byte), answering nothing. They come in waves of 250 per port, below
//!   the 256-connection cap, while a relay session echoes byte-exact throughout and
//!   `GET /stats` and scrapes are answered.
//! - At most 256 connections per listener: a 257th waits in the listen backlog until a slow
//!   one is cut, while the other listener answers at once.
//! - A keep-alive connection left idle is closed 30 s after its last response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::api_client;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, closed_port, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess, raise_fd_limit};
use mtg_tests::runtime::{block_on, handle};
use mtg_tests::{DcMode, FakeDc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "http.example";
const TOKEN: &str = "tok-3c51d9e0a7";
/// The proxy's limits under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CAP: usize = 256;
/// How late a cut may come.
const MARGIN: Duration = Duration::from_secs(2);
const SLOW_PER_PORT: usize = 1000;
/// Slow clients on each port at once: below the cap, so real requests still find a slot.
const WAVE: usize = 250;
/// Half a request head.
const HALF_HEAD: &[u8] = b"GET /stats HTTP/1.1\r\nHost: slow\r\nAuthoriz";

fn alice() -> Secret {
    Secret::fake_tls([0x5c; 16], HOST).unwrap()
}

/// A proxy with the API (token required) and the Prometheus endpoint on `/metrics`.
fn start_proxy(dc: &FakeDc) -> ProxyProcess {
    let top = format!("api-bind-to = \"{}\"\napi-token = \"{TOKEN}\"", closed_port());
    let tables = format!(
        "[stats.prometheus]\nenabled = true\nbind-to = \"{}\"\nhttp-path = \"/metrics\"\n",
        closed_port()
    );
    let alice = alice();
    let config = proxy_config(
        &[("alice", &alice)],
        &[(2, dc.addr())],
        closed_port(),
        Timeouts::default(),
        &top,
        &tables,
    );
    ProxyProcess::start(BIN, &config, &Launch::default())
}

/// How one slow client ended.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// From the start of its connect (before the proxy could accept it) to the close.
    since_connecting: Duration,
    /// From its last byte to the close.
    since_last_byte: Duration,
    /// Bytes the proxy sent it.
    answered: usize,
}

/// Connects, sends half a head (then says so on `sent`) and waits for the proxy to close
/// (`None` if it has not after 20 s). `open` counts the clients connected and not yet cut.
async fn slow_client(
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
) -> std::io::Result<Option<Cut>> {
    let connecting = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(HALF_HEAD).await?;
    let last_byte = Instant::now();
    open.fetch_add(1, Ordering::Relaxed);
    if let Some(sent) = sent {
        let _ = sent.send(());
    }
    let mut answered = 0;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answered += n,
            }
        }
    })
    .await;
    open.fetch_sub(1, Ordering::Relaxed);
    Ok(closed.ok().map(|()| Cut {
        since_connecting: connecting.elapsed(),
        since_last_byte: last_byte.elapsed(),
        answered,
    }))
}

/// `count` slow clients on `addr`, `wave` at a time (the next wave once the last is cut).
async fn slow_waves(
    addr: SocketAddr,
    count: usize,
    wave: usize,
    open: Arc<AtomicUsize>,
) -> std::io::Result<Vec<Option<Cut>>> {
    let mut cuts = Vec::with_capacity(count);
    for _ in 0..count.div_ceil(wave) {
        let tasks: Vec<_> =
            (0..wave).map(|_| tokio::spawn(slow_client(addr, Arc::clone(&open), None))).collect();
        for task in tasks {
            cuts.push(task.await.expect("a slow client panicked")?);
        }
    }
    Ok(cuts)
}

/// `GET path` on a fresh connection (`Connection: close`); returns the status and body.
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    api_client::request(addr, "GET", path, auth, "")
}

/// Checks the cuts of one port: all cut, in the window, unanswered.
fn check_cuts(port: &str, cuts: &[Option<Cut>], expected: usize) {
    let cut: Vec<Cut> = cuts.iter().flatten().copied().collect();
    assert_eq!(cut.len(), expected, "{port}: every slow client was cut within 20 s");
    let earliest = cut.iter().map(|c| c.since_connecting).min().unwrap();
    let latest = cut.iter().map(|c| c.since_last_byte).max().unwrap();
    eprintln!(
        "{port}: {} slow clients cut, {earliest:?} after connecting at the earliest, {latest:?} after their last byte at the latest",
        cut.len()
    );
    assert!(earliest >= REQUEST_TIMEOUT, "{port}: a slow client was cut early: {earliest:?}");
    assert!(latest <= REQUEST_TIMEOUT + MARGIN, "{port}: a slow client was cut late: {latest:?}");
    assert!(cut.iter().all(|c| c.answered == 0), "{port}: a slow head got an answer");
}

#[test]
fn slow_http_heads_are_cut_at_10_s_while_the_proxy_relays_and_answers() {
    let limit = raise_fd_limit(8192);
    assert!(limit >= 4096, "need ~4096 descriptors, the limit is {limit}");
    let dc = FakeDc::start(DcMode::Echo);
    let proxy = start_proxy(&dc);
    let (addr, api, metrics) = (proxy.addr(), proxy.api().unwrap(), proxy.metrics().unwrap());
    let baseline_fds = proxy.settled_fds();

    // A session that relays byte-exact for the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let relayed = {
        let (stop, secret) = (Arc::clone(&stop), alice());
        handle().spawn(async move {
            let mut client = ProxyClient::connect_ee(addr, &secret, 2).await?;
            let mut rounds = 0u32;
            // Bounded: the waves take about a minute.
            while !stop.load(Ordering::Relaxed) && rounds < 3000 {
                let payload = pattern(4096, rounds);
                client.send(&payload).await?;
                let echoed = client.recv_exact(payload.len()).await?;
                if echoed != payload {
                    return Err(std::io::Error::other(format!("round {rounds} echoed other bytes")));
                }
                rounds += 1;
                // Pacing, not synchronisation: a steady trickle rather than a busy loop.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, std::io::Error>(rounds)
        })
    };

    let open = Arc::new(AtomicUsize::new(0));
    let api_waves = handle().spawn(slow_waves(api, SLOW_PER_PORT, WAVE, Arc::clone(&open)));
    let metrics_waves = handle().spawn(slow_waves(metrics, SLOW_PER_PORT, WAVE, Arc::clone(&open)));

    // While the slow ones are held: new sessions relay, the API and the scrape answer, and
    // the proxy's descriptors stay bounded.
    let until = Instant::now() + Duration::from_secs(120);
    let mut held_during_checks = Vec::new();
    let mut most_fds = 0;
    let mut round = 0u32;
    while !(api_waves.is_finished() && metrics_waves.is_finished()) && Instant::now() < until {
        let secret = alice();
        let payload = pattern(1024, round);
        let expected = payload.clone();
        let echoed = block_on(async move {
            let mut client = ProxyClient::connect_ee(addr, &secret, 2).await?;
            client.send(&payload).await?;
            client.recv_exact(1024).await
        })
        .unwrap_or_else(|e| panic!("a new session in round {round}: {e}"));
        assert_eq!(echoed, expected, "round {round}: echoed byte-exact");
        let held = open.load(Ordering::Relaxed);
        let (status, body) = get(api, "/stats", Some(&format!("Bearer {TOKEN}")));
        assert_eq!(status, 200, "round {round}: GET /stats with {held} slow clients held: {body}");
        let stats: serde_json::Value = serde_json::from_str(&body).expect("the stats JSON");
        assert!(stats.is_object(), "{body}");
        let (status, text) = get(metrics, "/metrics", None);
        assert_eq!(status, 200, "round {round}: a scrape with {held} slow clients held");
        assert!(text.contains("# TYPE"), "{text}");
        held_during_checks.push(held);
        most_fds = most_fds.max(proxy.fds());
        round += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let api_cuts =
        block_on(async move { api_waves.await.expect("the API waves panicked") }).expect("connect");
    let metrics_cuts =
        block_on(async move { metrics_waves.await.expect("the metrics waves panicked") }).expect("connect");
    let rounds = block_on(async move { relayed.await.expect("the relay task panicked") })
        .unwrap_or_else(|e| panic!("the long relay session failed: {e}"));

    check_cuts("API", &api_cuts, SLOW_PER_PORT);
    check_cuts("Prometheus", &metrics_cuts, SLOW_PER_PORT);
    let busy = held_during_checks.iter().filter(|&&n| n >= 2 * WAVE * 9 / 10).count();
    eprintln!(
        "{round} check rounds, {busy} with ≥ {} slow clients held; {rounds} relay rounds; \
         proxy descriptors {baseline_fds} at rest, {most_fds} at most",
        2 * WAVE * 9 / 10
    );
    assert!(busy >= 10, "the checks ran while the slow clients were held: {held_during_checks:?}");
    assert!(rounds >= 100, "the long session relayed throughout: {rounds} rounds");
    assert!(
        most_fds <= baseline_fds + 2 * CAP + 16,
        "the HTTP listeners held {most_fds} descriptors (at rest {baseline_fds})"
    );

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!log.contains("panicked"), "a panic in the proxy log");
}

#[test]
fn a_listener_serves_at_most_256_connections_and_the_rest_wait() {
    let limit = raise_fd_limit(8192);
    assert!(limit >= 2048, "need ~2048 descriptors, the limit is {limit}");
    let dc = FakeDc::start(DcMode::Echo);
    let proxy = start_proxy(&dc);
    let (api, metrics) = (proxy.api().unwrap(), proxy.metrics().unwrap());
    let baseline_fds = proxy.settled_fds();

    // Fill the Prometheus listener with slow clients, one connect after the other so the
    // backlog holds them in that order.
    let open = Arc::new(AtomicUsize::new(0));
    let first_connecting = Instant::now();
    let slow = {
        let open = Arc::clone(&open);
        block_on(async move {
            let mut tasks = Vec::with_capacity(CAP);
            for _ in 0..CAP {
                let (sent, connected) = tokio::sync::oneshot::channel();
                tasks.push(tokio::spawn(slow_client(metrics, Arc::clone(&open), Some(sent))));
                // The next connects once this one has connected and sent its bytes.
                let _ = connected.await;
            }
            tasks
        })
    };
    let last_slow_byte = Instant::now();
    assert_eq!(open.load(Ordering::Relaxed), CAP, "every slow client connected");

    // The 257th: a full request, answered only once a slot frees.
    let waiting = std::thread::spawn(move || {
        let mut s = TcpStream::connect(metrics).expect("connect the 257th");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").expect("send");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        (raw, Instant::now())
    });
    // Meanwhile the other listener answers at once.
    let asked = Instant::now();
    let (status, _) = get(api, "/stats", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_secs(2), "the API waited {:?}", asked.elapsed());
    let held_fds = proxy.fds();
    assert!(
        held_fds <= baseline_fds + CAP + 8,
        "{held_fds} descriptors with the listener full (at rest {baseline_fds})"
    );

    let (raw, answered) = waiting.join().expect("the 257th client");
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "the 257th got {raw:?}");
    let waited = answered - first_connecting;
    eprintln!("the 257th was answered {waited:?} after the first slow client started connecting");
    assert!(waited >= REQUEST_TIMEOUT, "the 257th was served before a slot freed: {waited:?}");
    assert!(answered - last_slow_byte <= REQUEST_TIMEOUT + MARGIN, "the 257th waited too long");

    let cuts = block_on(async move {
        let mut cuts = Vec::with_capacity(CAP);
        for task in slow {
            cuts.push(task.await.expect("a slow client panicked").expect("connect"));
        }
        cuts
    });
    check_cuts("Prometheus, full", &cuts, CAP);
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!log.contains("panicked"), "a panic in the proxy log");
}

/// Sends `request` on `s` and reads one answer (by its `Content-Length`); returns the status.
fn ask(s: &mut TcpStream, request: &str) -> u16 {
    s.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read the head"), 1, "closed before the answer");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).expect("an ASCII head");
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).expect("read the body");
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status")
}

/// Two requests on one keep-alive connection, then silence: returns the time from sending
/// the second request to the close, and from reading its answer to the close.
fn idle_close(addr: SocketAddr, request: String) -> (Duration, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(45))).expect("timeout");
    assert_eq!(ask(&mut s, &request), 200);
    let asked = Instant::now();
    assert_eq!(ask(&mut s, &request), 200, "a second request on the same connection");
    let answered = Instant::now();
    let mut rest = Vec::new();
    let outcome = s.read_to_end(&mut rest);
    assert!(outcome.is_ok() && rest.is_empty(), "closed without more bytes: {outcome:?} {rest:?}");
    (asked.elapsed(), answered.elapsed())
}

#[test]
fn an_idle_keep_alive_connection_is_closed_30_s_after_its_last_response() {
    let dc = FakeDc::start(DcMode::Echo);
    let proxy = start_proxy(&dc);
    let (api, metrics) = (proxy.api().unwrap(), proxy.metrics().unwrap());
    let on_api = std::thread::spawn(move || {
        idle_close(api, format!("GET /stats HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"))
    });
    let on_metrics = std::thread::spawn(move || {
        idle_close(metrics, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n".to_owned())
    });
    for (port, thread) in [("API", on_api), ("Prometheus", on_metrics)] {
        let (since_asked, since_answered) = thread.join().expect("the idle client");
        eprintln!("{port}: closed {since_answered:?} after the last answer");
        assert!(since_asked >= IDLE_TIMEOUT, "{port}: closed early, {since_asked:?} after the last request");
        assert!(since_answered <= IDLE_TIMEOUT + MARGIN, "{port}: closed late, {since_answered:?}");
    }
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!log.contains("panicked"), "a panic in the proxy log");
}
