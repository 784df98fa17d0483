//! Users end to end (both runtimes): `/stats` numbers after known traffic, and the fair-share
//! throttle refusing a capped user's next session while others still connect; refused and
//! capped `dd` users fronted and closed like `ee` ones.

use std::net::SocketAddr;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::ProxyClient;
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

#[test]
fn stats_count_sessions_and_payload_bytes_exactly() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&["alice", "bob", "carol"], dc.addr(), &front, ""));
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());

    // alice: 3 sessions of 1000 bytes each way; bob: 2 of 5000; carol: none.
    let clients = block_on(async move {
        let mut clients = Vec::new();
        for (n, sessions, size) in [(1u8, 3, 1000usize), (2, 2, 5000)] {
            for _ in 0..sessions {
                let mut c = ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap();
                c.send(&vec![n; size]).await.unwrap();
                assert_eq!(c.recv_exact(size).await.unwrap(), vec![n; size]);
                clients.push(c);
            }
        }
        clients
    });

    // The relay reports bytes right after moving them: wait for the last reports to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(request(api, "GET", "/stats", None, "").1.contains("\"bytes_out\": 10000")
        && request(api, "GET", "/stats", None, "").1.contains("\"bytes_out\": 3000"))
    {
        assert!(std::time::Instant::now() < deadline, "bob's bytes never reached 10000");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = request(api, "GET", "/stats", None, "");
    assert_eq!(status, 200);
    assert!(body.ends_with('\n'));
    let stats: Value = serde_json::from_str(&body).unwrap();
    // Field order as mtg-multi (checked on the text: JSON objects are unordered once parsed).
    let at = |key: &str| body.find(&format!("\"{key}\":")).unwrap_or(usize::MAX);
    assert!(at("started_at") < at("uptime_seconds") && at("uptime_seconds") < at("total_connections"));
    assert!(at("total_connections") < at("users") && at("users") < usize::MAX);
    assert!(!body.contains("\"throttle\""), "no throttle block without a limit");
    assert!(
        at("connections") < at("bytes_in")
            && at("bytes_in") < at("bytes_out")
            && at("bytes_out") < at("last_seen")
    );
    assert_eq!(stats["total_connections"], 5);
    let u = &stats["users"];
    assert_eq!(
        (
            u["alice"]["connections"].as_u64(),
            u["alice"]["bytes_in"].as_u64(),
            u["alice"]["bytes_out"].as_u64()
        ),
        (Some(3), Some(3000), Some(3000))
    );
    assert_eq!(
        (u["bob"]["connections"].as_u64(), u["bob"]["bytes_in"].as_u64(), u["bob"]["bytes_out"].as_u64()),
        (Some(2), Some(10000), Some(10000))
    );
    assert_eq!(
        u["carol"],
        serde_json::json!({"connections": 0, "bytes_in": 0, "bytes_out": 0, "last_seen": null, "ips": 0})
    );
    assert!(u["alice"]["last_seen"].as_str().unwrap().ends_with('Z'));

    // Sessions end: connections drop to zero, bytes stay.
    drop(clients);
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(5)));
    let stats: Value = serde_json::from_str(&request(api, "GET", "/stats", None, "").1).unwrap();
    assert_eq!(stats["total_connections"], 0);
    assert_eq!(stats["users"]["bob"]["bytes_in"], 10000);

    assert_eq!(request(api, "GET", "/other", None, "").0, 404);
    assert_eq!(request(api, "POST", "/stats", None, "").0, 405);
}

#[test]
fn throttle_caps_the_heavy_users_and_refuses_their_next_session() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    // check-interval is long: the test recomputes the caps itself at known moments.
    let proxy = ProxyUnderTest::start(&config(
        &["a", "b", "c", "d"],
        dc.addr(),
        &front,
        "[throttle]\nmax-connections = 10\ncheck-interval = \"1h\"\n",
    ));
    let addr = proxy.addr();
    let sessions = block_on(async move {
        let mut open = Vec::new();
        for (n, count) in [(1u8, 1), (2, 1), (3, 5), (4, 6)] {
            for _ in 0..count {
                let mut c = ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap();
                c.send(b"hi").await.unwrap();
                c.recv_exact(2).await.unwrap();
                open.push(c);
            }
        }
        open
    });
    proxy.recompute_throttle();
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["throttle"], serde_json::json!({"active": true, "limit": 10, "caps": {"c": 4, "d": 4}}));

    block_on(async move {
        // d is over its cap: the handshake completes, then the proxy closes.
        let mut refused = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        refused.send(b"x").await.ok();
        let closed = refused.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        // a is not capped and still connects.
        let mut fine = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        fine.send(b"ok").await.unwrap();
        assert_eq!(fine.recv_exact(2).await.unwrap(), b"ok");
    });
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["users"]["d"]["connections"], 6, "existing sessions are never cut");
    drop(sessions);
}

#[test]
fn a_start_up_burst_within_a_users_limits_is_admitted_while_the_throttle_is_active() {
    // A Telegram app opens several connections at once when it starts. With the throttle
    // capping the heavy users, and the light user limited to one address and a rate, all of
    // its burst from one address gets through.
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &["a", "b", "c", "d"],
        dc.addr(),
        &front,
        "[throttle]\nmax-connections = 10\ncheck-interval = \"1h\"\n\
         [secret-limits.a]\nmax-ips = 1\nrate-limit = \"1mib\"\n",
    ));
    let addr = proxy.addr();
    let heavy = block_on(async move {
        let mut open = Vec::new();
        for (n, count) in [(3u8, 6), (4, 6)] {
            for _ in 0..count {
                open.push(ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap());
            }
        }
        open
    });
    proxy.recompute_throttle();
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["throttle"]["active"], true, "{stats}");
    let echoed = block_on(async move {
        let burst: Vec<_> = (0..8u8)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c = ProxyClient::connect_ee(addr, &user(1), 2).await.ok()?;
                    c.send(&[i; 4]).await.ok()?;
                    (c.recv_exact(4).await.ok()? == [i; 4]).then_some(c)
                })
            })
            .collect();
        let mut kept = Vec::new();
        for attempt in burst {
            kept.extend(attempt.await.unwrap());
        }
        kept
    });
    assert_eq!(echoed.len(), 8, "every connection of the burst was served");
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(
        (stats["users"]["a"]["connections"].as_u64(), stats["users"]["a"]["ips"].as_u64()),
        (Some(8), Some(1))
    );
    drop((echoed, heavy));
}

#[test]
fn concurrent_handshakes_of_a_capped_user_never_pass_its_cap() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &["a", "b"],
        dc.addr(),
        &front,
        "[throttle]\nmax-connections = 10\ncheck-interval = \"1h\"\n",
    ));
    let addr = proxy.addr();
    // a = 2, b = 30 → fair 5 (a leaves, budget 8) → b capped at 8.
    let first = block_on(async move {
        let mut open = Vec::new();
        for (n, count) in [(1u8, 2), (2, 30)] {
            for _ in 0..count {
                open.push(ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap());
            }
        }
        open
    });
    proxy.recompute_throttle();
    assert_eq!(
        serde_json::from_str::<Value>(&proxy.stats_json()).unwrap()["throttle"]["caps"],
        serde_json::json!({"b": 8})
    );
    drop(first);
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(5)));

    // 50 handshakes of b at once with the cap still 8: exactly 8 get through.
    let admitted = block_on(async move {
        let attempts: Vec<_> = (0..50)
            .map(|_| {
                tokio::spawn(async move {
                    let mut c = ProxyClient::connect_ee(addr, &user(2), 2).await.ok()?;
                    c.send(b"ping").await.ok()?;
                    let echoed = c.recv_exact(4).await.ok()?;
                    (echoed == b"ping").then_some(c)
                })
            })
            .collect();
        let mut kept = Vec::new();
        for a in attempts {
            if let Ok(Some(c)) = a.await {
                kept.push(c);
            }
        }
        kept
    });
    assert_eq!(admitted.len(), 8);
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["users"]["b"]["connections"], 8);
}

#[test]
fn limits_front_refused_users_and_quota_survives_a_restart() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dir = std::env::temp_dir().join(format!("mtg-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("usage.json");
    let text = config(&["a", "b", "c", "d"], dc.addr(), &front, "")
        .replace("[secrets]", &format!("usage-state-file = \"{}\"\n[secrets]", state.display()))
        + "[secret-limits.a]\nquota = \"1kib\"\n[secret-limits.b]\nexpires = \"2020-01-01\"\n[secret-limits.c]\ndisabled = true\n[secret-limits.d]\nmax-connections = 2\n";

    let proxy = ProxyUnderTest::start(&text);
    let addr = proxy.addr();
    block_on(async move {
        // a crosses its 1 KiB quota mid-session: 1000 bytes pass, the next 500 cross it and
        // the session is cut.
        let mut a = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        a.send(&[7u8; 500]).await.unwrap();
        assert_eq!(a.recv_exact(500).await.unwrap(), vec![7u8; 500]);
        a.send(&[7u8; 500]).await.unwrap();
        let closed = a.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        // Its next session is fronted: the answer is not our signed flight.
        assert!(ProxyClient::connect_ee(addr, &user(1), 2).await.is_err(), "over quota → fronted");
        // Expired and disabled users are fronted too.
        assert!(ProxyClient::connect_ee(addr, &user(2), 2).await.is_err(), "expired → fronted");
        assert!(ProxyClient::connect_ee(addr, &user(3), 2).await.is_err(), "disabled → fronted");
        // d may hold two sessions; the third is closed after the handshake.
        let d1 = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        let d2 = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        let mut d3 = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        d3.send(b"x").await.ok();
        let closed = d3.wait_closed().await;
        assert!(closed.is_ok() || closed.unwrap_err().kind() != std::io::ErrorKind::TimedOut);
        drop((a, d1, d2));
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let ended = |s: &Value| s["users"]["a"]["connections"] == 0 && s["users"]["d"]["connections"] == 0;
    while !ended(&serde_json::from_str(&proxy.stats_json()).unwrap()) {
        assert!(std::time::Instant::now() < deadline, "the sessions never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["users"]["a"]["quota"], 1024);
    // The crossing 500 bytes, and maybe their echo if it came back before the cut.
    let used = stats["users"]["a"]["quota_used"].as_u64().unwrap();
    assert!(used == 1500 || used == 2000, "{used}");
    assert_eq!(stats["users"]["b"]["expires_at"], "2020-01-01T00:00:00.000Z");
    assert_eq!(stats["users"]["c"]["disabled"], true);
    assert!(stats["users"]["d"].get("quota").is_none());
    // Three fronted hellos reached the site byte for byte.
    assert!(front.wait_until(Duration::from_secs(5), |c| c.len() >= 3));
    drop(proxy);

    // After a restart the usage is still there: a is still fronted.
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&format!("\"quota_used\": {used}")), "{saved}");
    let proxy = ProxyUnderTest::start(&text);
    let addr = proxy.addr();
    block_on(async move {
        assert!(
            ProxyClient::connect_ee(addr, &user(1), 2).await.is_err(),
            "still over quota after a restart"
        );
    });
    let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
    assert_eq!(stats["users"]["a"]["quota_used"], used);
    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn api_token_is_required_when_set() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let text =
        config(&["a"], dc.addr(), &front, "").replace("[secrets]", "api-token = \"s3cret-token\"\n[secrets]");
    let proxy = ProxyUnderTest::start(&text);
    let api = proxy.api().unwrap();
    let get = |auth: Option<&str>| request(api, "GET", "/stats", auth, "").0;
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("Bearer wrong")), 401);
    assert_eq!(get(Some("s3cret-token")), 401);
    assert_eq!(get(Some("Bearer s3cret-token")), 200);
}

#[test]
fn throttle_recomputes_on_its_own_every_check_interval() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &["a", "b"],
        dc.addr(),
        &front,
        "[throttle]\nmax-connections = 2\ncheck-interval = \"100ms\"\n",
    ));
    let addr = proxy.addr();
    let open = block_on(async move {
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap());
        }
        open
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let throttle = loop {
        let stats: Value = serde_json::from_str(&proxy.stats_json()).unwrap();
        if stats["throttle"]["active"] == true || std::time::Instant::now() > deadline {
            break stats["throttle"].clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(throttle, serde_json::json!({"active": true, "limit": 2, "caps": {"a": 2}}));
    drop(open);
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(5)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while serde_json::from_str::<Value>(&proxy.stats_json()).unwrap()["throttle"]["active"] == true {
        assert!(std::time::Instant::now() < deadline, "throttle did not deactivate");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a `dd` client's first bytes (its frame) on a fresh connection and returns the frame
/// and everything the proxy answers until it closes.
fn dd_answer(addr: SocketAddr, secret: &Secret) -> (Vec<u8>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut frame = Vec::new();
    let _session = mtg_proto::client::ClientSession::start(secret, 2, &mut rand::rng(), &mut frame);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    // A reset after the fronting site's alert is fine: what arrived before it is kept.
    let _ = stream.read_to_end(&mut answer);
    (frame, answer)
}

#[test]
fn dd_users_refused_are_fronted_and_over_their_cap_are_closed_unanswered() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let off = Secret::secured([7; 16]).unwrap();
    let capped = Secret::secured([8; 16]).unwrap();
    let proxy = ProxyUnderTest::start(&format!(
        "bind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\n[secrets]\noff = \"{}\"\ncapped = \"{}\"\n\
         [domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.dc-overrides]\n2 = [\"{}\"]\n\
         [secured]\nenabled = true\n[secret-limits.off]\ndisabled = true\n\
         [secret-limits.capped]\nmax-connections = 1\n",
        off.to_hex(),
        capped.to_hex(),
        front.addr().port(),
        dc.addr()
    ));
    let addr = proxy.addr();
    let first = {
        let capped = capped.clone();
        block_on(async move {
            let mut first = ProxyClient::connect_dd(addr, &capped, 2).await.unwrap();
            first.send(b"ok").await.unwrap();
            assert_eq!(first.recv_exact(2).await.unwrap(), b"ok");
            first
        })
    };
    // Over its cap: closed without a byte, and not fronted.
    let (_, answer) = dd_answer(addr, &capped);
    assert!(answer.is_empty(), "over the cap: {answer:02x?}");
    assert_eq!(front.connections(), 0, "a capped dd client is closed, not fronted");
    // Disabled: fronted like a wrong secret, its frame replayed byte for byte.
    let (frame, _) = dd_answer(addr, &off);
    assert!(
        front.wait_until(Duration::from_secs(5), |c| c.len() == 1 && c[0].first_bytes == frame),
        "the refused dd client's frame reaches the fronting site: {:?}",
        front.snapshot().iter().map(|c| c.first_bytes.len()).collect::<Vec<_>>()
    );
    drop(first);
}
