//! `rate-limit` end to end (both runtimes): one and two sessions of a 1 MiB/s user moving
//! 3 MiB take about 2.5 to 3 s (0.5 s of burst) while an unlimited user downloads at the
//! same time; the two sessions share the rate fairly; a reload raising the rate speeds up a
//! live session, and so does a rate set through `POST /secrets` (listed by `GET /secrets`);
//! middle-proxy sessions wait for tokens on their answers; `/stats` and Prometheus show the
//! rate and the time spent limited.
//!
//! Downloads come from fake DCs that flood a fixed number of bytes per session; times are
//! measured on the client from the first byte received. The bounds are loose enough for a
//! loaded machine: the lower ones are the limiter's (it cannot go faster than its tokens), the
//! upper ones only catch a limiter far slower than its rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::ProxyClient;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use serde_json::Value;

const HOST: &str = "front.example";
const MIB: usize = 1 << 20;
/// Read size of the measuring client.
const STEP: usize = 16 * 1024;

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

/// Users `limited` (1 MiB/s unless `extra` says otherwise) and `free`; DC `n` of `dcs` is the
/// n-th fake DC (from 2).
fn config(dcs: &[&FakeDc], front: &FrontingSite, extra: &str) -> String {
    let mut text = format!(
        "bind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\n[secrets]\nlimited = \"{}\"\nfree = \"{}\"\n\
         [domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.dc-overrides]\n",
        user(1).to_hex(),
        user(2).to_hex(),
        front.addr().port()
    );
    for (i, dc) in dcs.iter().enumerate() {
        text.push_str(&format!("{} = [\"{}\"]\n", i + 2, dc.addr()));
    }
    text.push_str(extra);
    text
}

/// When a download started (first byte) and ended, and how many bytes had arrived by `at`
/// (if given) — all on the client.
struct Download {
    first: Instant,
    last: Instant,
    /// (time, total bytes) after every read.
    marks: Vec<(Instant, usize)>,
}

impl Download {
    fn bytes_at(&self, at: Instant) -> usize {
        self.marks.iter().take_while(|(t, _)| *t <= at).last().map_or(0, |&(_, n)| n)
    }
}

/// Downloads `total` bytes as user `n` from DC `dc`.
async fn download(addr: SocketAddr, n: u8, dc: i16, total: usize) -> Download {
    let mut client = ProxyClient::connect_ee(addr, &user(n), dc).await.expect("connect");
    let mut marks = Vec::with_capacity(total / STEP + 1);
    let mut got = 0;
    let mut first = None;
    while got < total {
        let step = STEP.min(total - got);
        client.recv_exact(step).await.expect("download");
        got += step;
        let now = Instant::now();
        first.get_or_insert(now);
        marks.push((now, got));
    }
    let last = marks.last().map(|m| m.0).unwrap_or_else(Instant::now);
    Download { first: first.unwrap_or(last), last, marks }
}

fn stats(proxy: &ProxyUnderTest) -> Value {
    serde_json::from_str(&proxy.stats_json()).unwrap()
}

/// The tests of this file run one at a time: each measures a rate against wall-clock time,
/// and on a small machine the others' full-speed transfers would take the CPU it measures with.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn one_session_moves_at_the_rate_while_an_unlimited_user_is_not_held_back() {
    let _serial = one_at_a_time();
    let limited_dc = FakeDc::start(DcMode::Flood { bytes: 3 * MIB as u64 });
    let free_dc = FakeDc::start(DcMode::Flood { bytes: 4 * MIB as u64 });
    let front = FrontingSite::start(HOST);
    let extra = "[secret-limits.limited]\nrate-limit = \"1mib\"\n\
                 [stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n";
    let proxy = ProxyUnderTest::start(&config(&[&limited_dc, &free_dc], &front, extra));
    let addr = proxy.addr();
    let (limited, free) =
        block_on(async move { tokio::join!(download(addr, 1, 2, 3 * MIB), download(addr, 2, 3, 4 * MIB)) });
    let took = limited.last - limited.first;
    eprintln!("one session: 3 MiB in {took:?}; unlimited 4 MiB in {:?}", free.last - free.first);
    assert!(took >= Duration::from_millis(2400), "3 MiB at 1 MiB/s took {took:?}");
    assert!(took <= Duration::from_secs(4), "3 MiB at 1 MiB/s took {took:?}");
    assert_eq!(free.marks.last().unwrap().1, 4 * MIB, "the unlimited user got everything");

    let s = stats(&proxy);
    assert_eq!(s["users"]["limited"]["rate_limit"], MIB as u64);
    assert!(s["users"]["limited"]["rate_limited_ms"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["users"]["free"].get("rate_limit").is_none() && s["users"]["free"].get("rate_limited_ms").is_none()
    );
    let metrics = request(proxy.metrics().unwrap(), "GET", "/metrics", None, "").1;
    assert!(metrics.contains("mtg_user_rate_limited_milliseconds_total{user=\"limited\"} "), "{metrics}");
    assert!(!metrics.contains("mtg_user_rate_limited_milliseconds_total{user=\"free\"}"), "{metrics}");
}

#[test]
fn two_sessions_share_the_rate_fairly() {
    let _serial = one_at_a_time();
    let limited_dc = FakeDc::start(DcMode::Flood { bytes: 3 * MIB as u64 / 2 });
    let free_dc = FakeDc::start(DcMode::Flood { bytes: 4 * MIB as u64 });
    let front = FrontingSite::start(HOST);
    let extra = "[secret-limits-default]\nrate-limit = \"8388608\"\n[secret-limits.limited]\nrate-limit = \"8mbit\"\n\
                 [secret-limits.free]\n";
    // 8mbit is 1 000 000 bytes/s; `free` has a table of its own without a rate.
    let proxy = ProxyUnderTest::start(&config(&[&limited_dc, &free_dc], &front, extra));
    let addr = proxy.addr();
    let (a, b, free) = block_on(async move {
        tokio::join!(
            download(addr, 1, 2, 3 * MIB / 2),
            download(addr, 1, 2, 3 * MIB / 2),
            download(addr, 2, 3, 4 * MIB)
        )
    });
    assert_eq!(free.marks.last().unwrap().1, 4 * MIB);
    let (start, end) = (a.first.min(b.first), a.last.max(b.last));
    let took = end - start;
    assert!(took >= Duration::from_millis(2400), "3 MiB at 1 MB/s took {took:?}");
    assert!(took <= Duration::from_secs(5), "3 MiB at 1 MB/s took {took:?}");
    // Fair: when the first session is done, the other has at least 30 % of what the rate
    // allowed until then.
    let done = a.last.min(b.last);
    eprintln!(
        "two sessions: 3 MiB in {took:?}; at the first end ({:?}) a has {}, b has {}",
        done - start,
        a.bytes_at(done),
        b.bytes_at(done)
    );
    let allowed = 1_000_000.0 * (done - start).as_secs_f64();
    for (name, d) in [("a", &a), ("b", &b)] {
        let got = d.bytes_at(done) as f64;
        assert!(got >= 0.3 * allowed, "session {name} got {got} of {allowed} bytes by {:?}", done - start);
    }
    assert_eq!(stats(&proxy)["users"]["limited"]["rate_limit"], 1_000_000);
}

#[test]
fn a_reload_raising_the_rate_speeds_up_a_live_session() {
    let _serial = one_at_a_time();
    let total = 12 * MIB;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let dir = std::env::temp_dir().join(format!("mtg-rate-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    let base = config(&[&dc], &front, "");
    std::fs::write(&path, format!("{base}[secret-limits.limited]\nrate-limit = \"256kib\"\n")).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());
    let path_for_reload = path.clone();
    let (d, reloaded) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.expect("connect");
        let mut marks = Vec::new();
        let mut got = 0;
        let mut reloaded = None;
        let started = Instant::now();
        while got < total {
            client.recv_exact(STEP).await.expect("download");
            got += STEP;
            let now = Instant::now();
            marks.push((now, got));
            // 1 MiB in (the burst and more at 256 KiB/s): raise the rate to 4 MiB/s.
            if reloaded.is_none() && got >= MIB {
                let slow = now - started;
                assert!(slow >= Duration::from_millis(1500), "1 MiB at 256 KiB/s took {slow:?}");
                std::fs::write(
                    &path_for_reload,
                    format!("{base}[secret-limits.limited]\nrate-limit = \"32mbit\"\n"),
                )
                .unwrap();
                let (status, body) = request(api, "POST", "/reload", None, "");
                assert_eq!(status, 200, "{body}");
                reloaded = Some(Instant::now());
            }
            if reloaded.is_some_and(|at| now - at > Duration::from_secs(3)) {
                break;
            }
        }
        let d = Download { first: started, last: marks.last().unwrap().0, marks };
        (d, reloaded.expect("reloaded"))
    });
    let _ = d.first;
    // Over the window 0.5 s to 1.5 s after the reload: well above the old 256 KiB/s, at most
    // the new 4 MB/s and its burst.
    let from = reloaded + Duration::from_millis(500);
    let to = reloaded + Duration::from_millis(1500);
    assert!(d.last >= to, "the download ended {:?} after the reload", d.last - reloaded);
    let moved = d.bytes_at(to) - d.bytes_at(from);
    eprintln!("reload: {moved} bytes in the second from 0.5 s after the reload");
    assert!(moved >= MIB, "{moved} bytes in the second after the reload");
    assert!(moved <= 4_000_000 + 2_000_000 + 2 * STEP, "{moved} bytes in the second after the reload");
    assert_eq!(stats(&proxy)["users"]["limited"]["rate_limit"], 4_000_000);
}

#[test]
fn middle_proxy_sessions_are_limited_on_answers_too() {
    let _serial = one_at_a_time();
    use mtg_tests::mtproto;
    const PACKET: usize = 16 * 1024;
    const SENT: usize = 32;
    const COPIES: usize = 4;
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start(HOST);
    let middle = mtg_tests::fake_middle::FakeMiddle::start();
    middle.set_echo_copies(COPIES);
    let text = format!(
        "ad-tag = \"0123456789abcdef0123456789abcdef\"\n{}[secret-limits.limited]\nrate-limit = \"1mib\"\n{}",
        config(&[&dc], &front, ""),
        mtg_tests::config_text::OFFLINE_MIDDLE_PROXY
    );
    let proxy = ProxyUnderTest::start(&text);
    proxy.route_to_middle(middle.addr());
    let addr = proxy.addr();
    // 512 KiB up (within the burst), 2 MiB of answers back: the answers wait for tokens.
    let (first, last, got) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.expect("connect");
        let (mut first, mut got) = (None, 0);
        for _ in 0..SENT {
            // An "encrypted" packet (non-zero auth_key_id), forwarded as is and echoed.
            let packet = mtproto::frame(&[0x77; PACKET], 0, &mut rand::rng());
            client.send(&packet).await.expect("send");
            for _ in 0..COPIES {
                got += client.recv_frame().await.expect("an answer").len();
                first.get_or_insert_with(Instant::now);
            }
        }
        (first.unwrap(), Instant::now(), got)
    });
    let took = last - first;
    eprintln!("middle: {got} bytes of answers in {took:?}");
    assert!(got >= SENT * COPIES * PACKET);
    // 2 MiB at 1 MiB/s less the 0.5 s burst and the first answer.
    assert!(took >= Duration::from_millis(1200), "2 MiB of answers at 1 MiB/s took {took:?}");
    assert!(took <= Duration::from_secs(5), "2 MiB of answers at 1 MiB/s took {took:?}");
    assert!(stats(&proxy)["users"]["limited"]["rate_limited_ms"].as_u64().unwrap() > 0);
}

#[test]
fn a_rate_set_through_the_api_limits_a_live_session_and_is_listed() {
    let _serial = one_at_a_time();
    const CHUNK: usize = 64 * 1024;
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[&dc], &front, ""));
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());
    let (before, after) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &user(1), 2).await.expect("connect");
        // Echo rounds, lock-step: nothing waits in socket buffers.
        let round = async |client: &mut ProxyClient| {
            client.send(&[5u8; CHUNK]).await.expect("send");
            client.recv_exact(CHUNK).await.expect("echo");
        };
        let started = Instant::now();
        for _ in 0..16 {
            round(&mut client).await;
        }
        let before = started.elapsed();
        // 4mbit = 500 000 bytes/s each way, on the live session.
        let body =
            format!(r#"{{"name": "limited", "secret": "{}", "rate_limit": "4mbit"}}"#, user(1).to_hex());
        let (status, answer) = request(api, "POST", "/secrets", None, &body);
        assert_eq!(status, 200, "{answer}");
        let changed = Instant::now();
        for _ in 0..16 {
            round(&mut client).await;
        }
        (before, changed.elapsed())
    });
    eprintln!("api: 1 MiB echoed in {before:?} unlimited, in {after:?} at 500 kB/s");
    // 1 MiB each way at 500 kB/s, less the 250 kB burst: 1.5 s at least.
    assert!(after >= Duration::from_millis(1200), "1 MiB echoed in {after:?} after the change");
    assert!(after <= Duration::from_secs(8), "1 MiB echoed in {after:?} after the change");
    let listed: Value = serde_json::from_str(&request(api, "GET", "/secrets", None, "").1).unwrap();
    assert_eq!(listed["limited"]["rate_limit"], 500_000, "{listed}");
    assert!(listed["free"].get("rate_limit").is_none(), "{listed}");
}
