//! Per-user limits that bind live sessions, end to end (both runtimes): `max-ips` counts the
//! distinct client addresses with live sessions (sources 127.0.0.2/.3/.4, and the PROXY
//! header's address behind a load balancer) and never trips on a client's burst from one
//! address; crossing the quota ends all of the user's sessions with a bounded overshoot;
//! reaching `expires` ends a live session no earlier than the instant and within a second;
//! `disabled` at a reload and through the API ends live sessions, re-enabling admits again;
//! `[secret-limits-default]` applies to users without their own table and reloads live.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::{EeOptions, ProxyClient};
use mtg_tests::config_text::{numbered_user, users_config};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use serde_json::Value;

const HOST: &str = "front.example";

fn user(n: u8) -> Secret {
    numbered_user(n, HOST)
}

fn config(names: &[&str], dc: SocketAddr, front: &FrontingSite, extra: &str) -> String {
    users_config(names, HOST, dc, front.addr().port(), extra)
}

fn from(last: u8) -> EeOptions {
    EeOptions { source: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))), ..EeOptions::default() }
}

/// A session of user `n` from 127.0.0.`last` that relays one echo; `None` when refused.
async fn session(addr: SocketAddr, n: u8, options: EeOptions) -> Option<ProxyClient> {
    let mut c = ProxyClient::connect_ee_with(addr, &user(n), 2, &options).await.ok()?;
    c.send(b"ping").await.ok()?;
    (c.recv_exact(4).await.ok()? == b"ping").then_some(c)
}

fn stats(proxy: &ProxyUnderTest) -> Value {
    serde_json::from_str(&proxy.stats_json()).unwrap()
}

/// Waits (bounded) until `pred` holds on the `/stats` JSON.
fn wait_stats(proxy: &ProxyUnderTest, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred(&stats(proxy)) {
        assert!(Instant::now() < deadline, "{what}: {}", proxy.stats_json());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn max_ips_counts_distinct_live_addresses_and_spares_a_burst_from_one() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let extra = "[secret-limits.a]\nmax-ips = 2\n[secret-limits.b]\nmax-ips = 1\n\
                 [stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n";
    let proxy = ProxyUnderTest::start(&config(&["a", "b", "c"], dc.addr(), &front, extra));
    let addr = proxy.addr();

    let (two, three) = block_on(async move {
        let two = session(addr, 1, from(2)).await.expect(".2 admitted");
        let three = [
            session(addr, 1, from(3)).await.expect(".3 admitted"),
            session(addr, 1, from(3)).await.expect("a second session from .3"),
        ];
        assert!(session(addr, 1, from(4)).await.is_none(), ".4 is a third address: fronted");
        let two_again = session(addr, 1, from(2)).await.expect("a known address may open more");
        ([two, two_again], three)
    });
    let s = stats(&proxy);
    assert_eq!((s["users"]["a"]["max_ips"].as_u64(), s["users"]["a"]["ips"].as_u64()), (Some(2), Some(2)));
    assert_eq!(s["users"]["a"]["connections"], 4);
    // Every user shows its live distinct addresses; `max_ips` only where it is set.
    assert!(s["users"]["c"].get("max_ips").is_none() && s["users"]["c"]["ips"].is_u64());
    // The refusal was fronted like a wrong secret: the site got the hello; it is counted.
    assert!(front.wait_until(Duration::from_secs(5), |c| c.len() == 1));
    let metrics = request(proxy.metrics().unwrap(), "GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("mtg_user_fronted_by_limit_total{user=\"a\",reason=\"max_ips\"} 1\n"),
        "{metrics}"
    );

    // .3 counts until its last session ends.
    let [first, second] = three;
    drop(first);
    wait_stats(&proxy, "one .3 session ended", |s| s["users"]["a"]["connections"] == 3);
    assert_eq!(stats(&proxy)["users"]["a"]["ips"], 2);
    assert!(block_on(session(addr, 1, from(4))).is_none(), ".3 still has a session");
    drop(second);
    wait_stats(&proxy, ".3 gone", |s| s["users"]["a"]["ips"] == 1);
    let four = block_on(session(addr, 1, from(4))).expect(".4 admitted once .3's sessions ended");

    // b (max-ips = 1): a client's start-up burst of 8 parallel connections from one address.
    let burst = block_on(async move {
        let all: Vec<_> =
            (0..8).map(|_| tokio::spawn(async move { session(addr, 2, from(2)).await })).collect();
        let mut sessions = Vec::new();
        for task in all {
            sessions.push(task.await.expect("a burst task"));
        }
        sessions
    });
    assert!(burst.iter().all(Option::is_some), "the burst from one address is admitted whole");
    let s = stats(&proxy);
    assert_eq!(
        (s["users"]["b"]["connections"].as_u64(), s["users"]["b"]["ips"].as_u64()),
        (Some(8), Some(1))
    );
    drop((two, four, burst));
}

#[test]
fn behind_proxy_protocol_the_header_address_counts() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let extra = "[secret-limits.a]\nmax-ips = 1\n";
    let text = config(&["a"], dc.addr(), &front, extra)
        .replace("[secrets]", "proxy-protocol-listener = true\n[secrets]");
    let proxy = ProxyUnderTest::start(&text);
    let addr = proxy.addr();
    let header = |client: &str| EeOptions {
        preamble: format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").into_bytes(),
        ..EeOptions::default()
    };
    block_on(async move {
        // All from 127.0.0.1 on the wire; the headers name two different clients.
        let one = session(addr, 1, header("198.51.100.1")).await.expect("first client");
        let again = session(addr, 1, header("198.51.100.1")).await.expect("same client again");
        assert!(session(addr, 1, header("198.51.100.2")).await.is_none(), "a second client: fronted");
        drop((one, again));
    });
}

#[test]
fn crossing_the_quota_ends_every_session_of_the_user_with_a_bounded_overshoot() {
    const QUOTA: u64 = 4 << 20;
    const CHUNK: usize = 256 << 10;
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let extra = format!("[secret-limits.a]\nquota = {QUOTA}\n");
    let proxy = ProxyUnderTest::start(&config(&["a", "b"], dc.addr(), &front, &extra));
    let addr = proxy.addr();

    let (heavy_end, idle_end, other_alive) = block_on(async move {
        let mut idle = session(addr, 1, EeOptions::default()).await.expect("idle session");
        let mut other = session(addr, 2, EeOptions::default()).await.expect("another user");
        let mut heavy = session(addr, 1, EeOptions::default()).await.expect("heavy session");
        let idle_closed = async move {
            let closed = idle.wait_closed().await;
            (Instant::now(), closed)
        };
        let heavy_moves = async move {
            // Echo rounds until the proxy cuts the session (bounded: 3× the quota).
            for _ in 0..(3 * QUOTA as usize / (2 * CHUNK)) {
                if heavy.send(&vec![7u8; CHUNK]).await.is_err() || heavy.recv_exact(CHUNK).await.is_err() {
                    return Instant::now();
                }
            }
            panic!("the session outlived three times its quota");
        };
        let (heavy_end, (idle_end, closed)) = tokio::join!(heavy_moves, idle_closed);
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        other.send(b"still").await.unwrap();
        (heavy_end, idle_end, other.recv_exact(5).await.unwrap() == b"still")
    });
    assert!(other_alive, "another user's session is not touched");
    // The idle session ended with the heavy one (its own reads saw nothing to count).
    let apart = if idle_end > heavy_end { idle_end - heavy_end } else { heavy_end - idle_end };
    assert!(apart < Duration::from_secs(1), "sessions ended {apart:?} apart");
    wait_stats(&proxy, "sessions gone", |s| s["users"]["a"]["connections"] == 0);
    let used = stats(&proxy)["users"]["a"]["quota_used"].as_u64().unwrap();
    assert!(used >= QUOTA, "ended before the quota: {used}");
    assert!(used <= QUOTA + (1 << 20) + CHUNK as u64, "overshoot {} bytes", used - QUOTA);
    // The next session is fronted.
    assert!(block_on(session(addr, 1, EeOptions::default())).is_none());
}

#[test]
fn reaching_expires_ends_a_live_session_on_time() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires = now.as_secs() + 3;
    let at = UNIX_EPOCH + Duration::from_secs(expires);
    let extra = format!(
        "[secret-limits.a]\nexpires = \"{}\"\n",
        mtg_app::users::stats_json::rfc3339_ms(expires as i64 * 1000)
    );
    let proxy = ProxyUnderTest::start(&config(&["a"], dc.addr(), &front, &extra));
    let addr = proxy.addr();
    let ended = block_on(async move {
        let mut c = session(addr, 1, EeOptions::default()).await.expect("admitted before expiry");
        let closed = c.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        SystemTime::now()
    });
    assert!(ended >= at, "ended {:?} before expires", at.duration_since(ended).unwrap_or_default());
    let late = ended.duration_since(at).unwrap();
    assert!(late < Duration::from_secs(1), "ended {late:?} after expires");
    assert!(block_on(session(addr, 1, EeOptions::default())).is_none(), "expired: fronted");
    drop(proxy);
}

#[test]
fn disabled_at_reload_or_through_the_api_ends_live_sessions_and_the_default_table_applies() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let base = config(&["a", "b", "c"], dc.addr(), &front, "");
    let path = mtg_tests::temp_file::TempFile::new("mtg-limits-live-", "config.toml", &base);
    let proxy = ProxyUnderTest::start_file(&path);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());

    // a disabled by a reload: its live session ends at once, b's goes on.
    let (mut a, mut b) = block_on(async move {
        (
            session(addr, 1, EeOptions::default()).await.unwrap(),
            session(addr, 2, EeOptions::default()).await.unwrap(),
        )
    });
    std::fs::write(&path, format!("{base}[secret-limits.a]\ndisabled = true\n")).unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    let reloaded = Instant::now();
    block_on(async move {
        let closed = a.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
    });
    assert!(reloaded.elapsed() < Duration::from_secs(1), "ended {:?} after the reload", reloaded.elapsed());
    assert!(block_on(session(addr, 1, EeOptions::default())).is_none(), "disabled: fronted");

    // Enabled again by a reload, with a default table for the users without their own.
    std::fs::write(&path, format!("{base}[secret-limits-default]\nmax-ips = 3\n")).unwrap();
    assert_eq!(request(api, "POST", "/reload", None, "").0, 200);
    let a = block_on(session(addr, 1, EeOptions::default())).expect("re-enabled: admitted");
    let s = stats(&proxy);
    assert_eq!((s["users"]["a"]["max_ips"].as_u64(), s["users"]["a"]["ips"].as_u64()), (Some(3), Some(1)));
    assert_eq!(s["users"]["c"]["max_ips"], 3);

    // b disabled through the API: its live session ends.
    let (status, body) = request(
        api,
        "POST",
        "/secrets",
        None,
        &format!(r#"{{"name": "b", "secret": "{}", "disabled": true, "max_ips": 2}}"#, user(2).to_hex()),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let changed = Instant::now();
    block_on(async move {
        let closed = b.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
    });
    assert!(changed.elapsed() < Duration::from_secs(1));
    let (_, listed) = request(api, "GET", "/secrets", None, "");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!((listed["b"]["max_ips"].as_u64(), listed["b"]["disabled"].as_bool()), (Some(2), Some(true)));
    assert!(listed["c"].get("max_ips").is_none(), "GET /secrets shows own limits only");
    drop((a, proxy));
}

/// The proxy serving alice (`limits` in her table) through a fake middle proxy (global ad tag).
struct Middle {
    proxy: ProxyUnderTest,
    middle: mtg_tests::fake_middle::FakeMiddle,
    _dc: FakeDc,
    _front: FrontingSite,
}

fn through_a_middle_proxy(limits: &str) -> Middle {
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start(HOST);
    let middle = mtg_tests::fake_middle::FakeMiddle::start();
    let text = format!(
        "ad-tag = \"0123456789abcdef0123456789abcdef\"\n{}[secret-limits.a]\n{limits}{}",
        config(&["a"], dc.addr(), &front, ""),
        mtg_tests::config_text::OFFLINE_MIDDLE_PROXY
    );
    let proxy = ProxyUnderTest::start(&text);
    proxy.route_to_middle(middle.addr());
    Middle { proxy, middle, _dc: dc, _front: front }
}

#[test]
fn through_a_middle_proxy_crossing_the_quota_ends_every_session_of_the_user() {
    // One req_pq exchange is well over 100 bytes of payload.
    let m = through_a_middle_proxy("quota = 100\n");
    let addr = m.proxy.addr();
    block_on(async move {
        let mut idle = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        let mut busy = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        busy.req_pq().await.expect("the first exchange passes");
        let started = Instant::now();
        for c in [&mut busy, &mut idle] {
            let closed = c.wait_closed().await;
            assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        }
        assert!(started.elapsed() < Duration::from_secs(1), "ended after {:?}", started.elapsed());
    });
    assert!(m.middle.seen().requests.len() <= 2, "nothing more was forwarded");
    wait_stats(&m.proxy, "sessions gone", |s| s["users"]["a"]["connections"] == 0);
    let used = stats(&m.proxy)["users"]["a"]["quota_used"].as_u64().unwrap();
    assert!((100..=100 + (1 << 20)).contains(&used), "{used}");
}

#[test]
fn through_a_middle_proxy_reaching_expires_ends_a_live_session_on_time() {
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 2;
    let at = UNIX_EPOCH + Duration::from_secs(expires);
    let m = through_a_middle_proxy(&format!(
        "expires = \"{}\"\n",
        mtg_app::users::stats_json::rfc3339_ms(expires as i64 * 1000)
    ));
    let addr = m.proxy.addr();
    let ended = block_on(async move {
        let mut c = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        c.req_pq().await.expect("through the middle proxy");
        let closed = c.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        SystemTime::now()
    });
    assert!(m.middle.wait_until(Duration::from_secs(5), |seen| seen.requests.len() == 1));
    assert!(ended >= at, "ended {:?} before expires", at.duration_since(ended).unwrap_or_default());
    let late = ended.duration_since(at).unwrap();
    assert!(late < Duration::from_secs(1), "ended {late:?} after expires");
}
