//! Fleet mode (`[cluster]`) against a real `redis-server` on loopback, both runtimes: three
//! instances share their users (a change through one API reaches the others), a quota counts
//! across instances, `cluster-wide` max-connections and max-ips hold across them, a killed instance's
//! heartbeat and counts expire, and a Redis outage under traffic drops no session and loses
//! or doubles no byte. One case uses a password-protected Redis.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::api_client;
use mtg_tests::client::{EeOptions, ProxyClient};
use mtg_tests::config_text::{Timeouts, closed_port, numbered_user, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::redis_server::RedisServer;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "front.example";
/// Every wait on the fleet is bounded by this (heartbeats expire after 5 s).
const BOUND: Duration = Duration::from_secs(30);

fn user(n: u8) -> Secret {
    numbered_user(n, HOST)
}

/// The config of instance `name`: its own users (seeded only by the first instance), the API,
/// `[cluster]` on `redis`, and `extra` tables.
fn config(name: &str, redis: &str, dc: &FakeDc, front: &FrontingSite, extra: &str) -> String {
    let (alice, zed) = (user(1), user(9));
    let top = format!("api-bind-to = \"{}\"", closed_port());
    let tables = format!("[cluster]\nredis = \"{redis}\"\nname = \"{name}\"\nkey-prefix = \"t\"\n{extra}");
    let users: &[(&str, &Secret)] = if name == "a" { &[("alice", &alice)] } else { &[("zed", &zed)] };
    proxy_config(users, &[(2, dc.addr())], front.addr(), Timeouts::default(), &top, &tables)
}

fn api(proxy: &ProxyProcess, method: &str, path: &str, body: &str) -> (u16, String) {
    api_client::request(proxy.api().expect("the API is on"), method, path, None, body)
}

fn json(proxy: &ProxyProcess, path: &str) -> Value {
    let (status, body) = api(proxy, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "not within {BOUND:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// A session of `secret` through `addr` that echoes 5 bytes; `None` when refused.
fn session(addr: SocketAddr, secret: &Secret) -> Option<ProxyClient> {
    session_from(addr, secret, None)
}

/// Like [`session`], from the loopback address `source` when given.
fn session_from(addr: SocketAddr, secret: &Secret, source: Option<IpAddr>) -> Option<ProxyClient> {
    let secret = secret.clone();
    let options = EeOptions { source, ..EeOptions::default() };
    block_on(async move {
        let mut c = ProxyClient::connect_ee_with(addr, &secret, 2, &options).await.ok()?;
        c.send(b"hello").await.ok()?;
        (c.recv_exact(5).await.ok()? == b"hello").then_some(c)
    })
}

/// Sends `chunks` × 64 KiB through `client` (a session of `proxy`) and reads the echo back:
/// 2 × that counts.
fn echo(proxy: &ProxyProcess, client: ProxyClient, chunks: usize) -> ProxyClient {
    let moved = block_on(async move {
        let mut c = client;
        let payload = vec![0x5a; 64 << 10];
        for i in 0..chunks {
            c.send(&payload).await.map_err(|e| format!("send {i}: {e}"))?;
            let back = c.recv_exact(payload.len()).await.map_err(|e| format!("echo {i}: {e}"))?;
            assert_eq!(back.len(), payload.len());
        }
        Ok::<_, String>(c)
    });
    moved.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()))
}

/// Waits until `user` is (or is not) among `proxy`'s users. The tests poll the API rather
/// than hellos: each hello of an unknown user counts toward the probe limit (4 per 10 s from
/// one network), after which the proxy tries only the address's last user.
fn wait_listed(proxy: &ProxyProcess, user: &str, listed: bool) {
    wait_until(&format!("{user} listed = {listed} on {}", proxy.addr()), || {
        json(proxy, "/secrets").get(user).is_some() == listed
    });
}

/// The fleet's numbers for `user` as `proxy` sees them (`/stats?scope=cluster`).
fn fleet_user(proxy: &ProxyProcess, user: &str, field: &str) -> u64 {
    json(proxy, "/stats?scope=cluster")["totals"]["users"][user][field].as_u64().unwrap_or(0)
}

#[test]
fn three_instances_share_users_quotas_and_caps() {
    let redis = RedisServer::start(None);
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let a = ProxyProcess::start(BIN, &config("a", &redis.url(), &dc, &front, ""), &Launch::default());
    let b = ProxyProcess::start(BIN, &config("b", &redis.url(), &dc, &front, ""), &Launch::default());
    let c = ProxyProcess::start(BIN, &config("c", &redis.url(), &dc, &front, ""), &Launch::default());
    assert!(a.log().contains("seeded the fleet's users"), "{}", a.log());
    // b and c serve the seeded users, not their own config's.
    for p in [&b, &c] {
        assert!(session(p.addr(), &user(1)).is_some(), "alice through {}", p.addr());
        assert!(session(p.addr(), &user(9)).is_none(), "zed was never in the fleet");
    }

    // A user added on A connects through B and C.
    let started = Instant::now();
    let body = format!("{{\"name\": \"bob\", \"secret\": \"{}\"}}", user(2).to_hex());
    assert_eq!(api(&a, "POST", "/secrets", &body).0, 201);
    wait_listed(&b, "bob", true);
    wait_listed(&c, "bob", true);
    eprintln!("bob added on A was served by B and C {:?} after the API call", started.elapsed());
    assert!(session(b.addr(), &user(2)).is_some() && session(c.addr(), &user(2)).is_some());

    // Removed on C: refused everywhere.
    assert_eq!(api(&c, "DELETE", "/secrets/bob", "").0, 200);
    for p in [&a, &b, &c] {
        wait_listed(p, "bob", false);
        assert!(session(p.addr(), &user(2)).is_none(), "bob refused on {}", p.addr());
    }

    // A 3 MiB quota used across A (2 MiB) and B (1 MiB) refuses the user on C.
    let body = format!("{{\"name\": \"carol\", \"secret\": \"{}\", \"quota\": \"3mib\"}}", user(3).to_hex());
    assert_eq!(api(&a, "POST", "/secrets", &body).0, 201);
    wait_listed(&b, "carol", true);
    wait_listed(&c, "carol", true);
    let on_a = echo(&a, session(a.addr(), &user(3)).expect("carol on A"), 16);
    drop(on_a);
    wait_until("B sees carol's 2 MiB", || fleet_user(&b, "carol", "quota_used") >= 2 << 20);
    // On B she may move up to 2 MiB more: B closes her session once the fleet's usage
    // (A's 2 MiB, read from Redis, plus B's own) reaches 3 MiB.
    let on_b = session(b.addr(), &user(3)).expect("carol on B");
    let echoed = block_on(async move {
        let mut c = on_b;
        let payload = vec![0x5a; 64 << 10];
        for i in 0..16 {
            let ok = c.send(&payload).await.is_ok() && c.recv_exact(payload.len()).await.is_ok();
            if !ok {
                return i;
            }
        }
        16
    });
    assert!((7..=8).contains(&echoed), "B ended carol's session after {echoed} × 64 KiB echoed");
    wait_until("carol refused on C", || session(c.addr(), &user(3)).is_none());
    let used = fleet_user(&c, "carol", "quota_used");
    assert!(used >= 3 << 20, "C counts {used}");

    // A cluster-wide max-connections of 4 holds across instances.
    let body = format!(
        "{{\"name\": \"dave\", \"secret\": \"{}\", \"max_connections\": 4, \"cluster_wide\": [\"max-connections\"]}}",
        user(4).to_hex()
    );
    assert_eq!(api(&b, "POST", "/secrets", &body).0, 201);
    wait_listed(&a, "dave", true);
    wait_listed(&c, "dave", true);
    let on_a = [session(a.addr(), &user(4)).expect("dave 1"), session(a.addr(), &user(4)).expect("dave 2")];
    wait_until("B sees dave's 2 sessions on A", || fleet_user(&b, "dave", "connections") == 2);
    let on_b = [(); 2].map(|()| {
        session(b.addr(), &user(4))
            .unwrap_or_else(|| panic!("dave refused on B: {}\n{}", json(&b, "/stats?scope=cluster"), b.log()))
    });
    wait_until("C sees dave's 4 sessions", || fleet_user(&c, "dave", "connections") == 4);
    // C's own view of the others may lag one beat: it refuses once it has read them.
    wait_until("dave refused on C", || session(c.addr(), &user(4)).is_none());
    wait_until("A is at the fleet's cap too", || session(a.addr(), &user(4)).is_none());
    drop(on_a);
    wait_until("dave admitted on C again", || session(c.addr(), &user(4)).is_some());

    // A cluster-wide max-ips of 1 holds across instances: an address live on one instance
    // takes the user's only address on the others; the same address is admitted anywhere.
    let body = format!(
        "{{\"name\": \"erin\", \"secret\": \"{}\", \"max_ips\": 1, \"cluster_wide\": [\"max-ips\"]}}",
        user(5).to_hex()
    );
    assert_eq!(api(&a, "POST", "/secrets", &body).0, 201);
    wait_listed(&b, "erin", true);
    wait_listed(&c, "erin", true);
    let (one, two): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let erin_a = session_from(a.addr(), &user(5), Some(one)).expect("erin from .1 on A");
    // B reads A's beat (connections and addresses come in the same beat).
    wait_until("B sees erin's session on A", || fleet_user(&b, "erin", "connections") == 1);
    assert!(session_from(b.addr(), &user(5), Some(two)).is_none(), "erin from .2 refused on B");
    let erin_b = session_from(b.addr(), &user(5), Some(one)).expect("erin from .1 on B too");
    drop(erin_a);
    wait_until("C sees erin only on B", || {
        fleet_user(&c, "erin", "connections") == 1 && fleet_user(&a, "erin", "connections") == 1
    });
    assert!(session_from(c.addr(), &user(5), Some(two)).is_none(), "B's .1 still takes erin's address");
    drop(erin_b);
    wait_until("C sees no session of erin", || fleet_user(&c, "erin", "connections") == 0);
    assert!(session_from(c.addr(), &user(5), Some(two)).is_some(), "erin's address is free again");

    // A reload keeps the fleet's users (B's file names only zed).
    assert_eq!(api(&b, "POST", "/reload", "").0, 200);
    assert!(session(b.addr(), &user(1)).is_some() && session(b.addr(), &user(9)).is_none());

    // /cluster lists the live instances; a killed one's heartbeat and counts expire.
    let live = |p: &ProxyProcess| {
        let listed = json(p, "/cluster");
        listed["instances"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
    };
    wait_until("a, b, c listed", || live(&a) == ["a", "b", "c"]);
    let on_c = session(c.addr(), &user(1)).expect("alice on C");
    wait_until("A sees alice on C", || fleet_user(&a, "alice", "connections") == 1);
    drop(c); // SIGKILL: no goodbye
    drop(on_c);
    let gone = wait_until("c's heartbeat expired", || live(&a) == ["a", "b"]);
    eprintln!("c's heartbeat expired {gone:?} after the kill");
    assert_eq!(fleet_user(&a, "alice", "connections"), 0);
    assert_eq!(fleet_user(&a, "dave", "connections"), 2, "b's two sessions");
    drop(on_b);
}

#[test]
fn a_redis_outage_drops_no_session_and_loses_no_byte() {
    const PASSWORD: &str = "s3cret-fleet-pw";
    let mut redis = RedisServer::start(Some(PASSWORD));
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let cache = tempfile::tempdir().unwrap();
    let limits = format!(
        "cache-file = \"{}\"\n[secret-limits.alice]\nquota = \"1gib\"\n",
        cache.path().join("users.json").display()
    );
    let a = ProxyProcess::start(BIN, &config("a", &redis.url(), &dc, &front, &limits), &Launch::default());
    let b = ProxyProcess::start(BIN, &config("b", &redis.url(), &dc, &front, ""), &Launch::default());

    let session_a = echo(&a, session(a.addr(), &user(1)).expect("alice on A"), 4);
    redis.stop();
    wait_until("A notices the outage", || json(&a, "/cluster")["reachable"] == false);
    // Traffic goes on: the live session and a new one (the last known users).
    let session_a = echo(&a, session_a, 8);
    let other = echo(&a, session(a.addr(), &user(1)).expect("a new session during the outage"), 2);
    drop(other);
    redis.start_again();
    let session_a = echo(&a, session_a, 4);
    // 18 chunks of 64 KiB both ways, and two 5-byte hellos both ways.
    let expected = 2 * 18 * (64 << 10) + 2 * 2 * 5;
    wait_until("B reads alice's exact fleet usage", || fleet_user(&b, "alice", "quota_used") == expected);
    // Not a byte more once A has gone through two more rounds (each flushes, then beats).
    let beat_of_a = || json(&b, "/cluster")["instances"]["a"]["seen_at"].clone();
    for _ in 0..2 {
        let seen = beat_of_a();
        wait_until("a new beat of A", || beat_of_a() != seen);
    }
    assert_eq!(fleet_user(&b, "alice", "quota_used"), expected, "no batch counted twice");
    drop(session_a);

    let log = a.log();
    assert_eq!(log.matches("the fleet's Redis is unreachable").count(), 1, "logged once per outage:\n{log}");
    assert!(!log.contains(PASSWORD) && !b.log().contains(PASSWORD), "the password is never logged");

    // Without Redis, a start serves the cached users; without a cache it fails clearly.
    redis.stop();
    drop(a);
    let again =
        ProxyProcess::start(BIN, &config("a", &redis.url(), &dc, &front, &limits), &Launch::default());
    assert!(session(again.addr(), &user(1)).is_some(), "the cached alice is served");
    let path = cache.path().join("no-cache.toml");
    std::fs::write(&path, config("d", &redis.url(), &dc, &front, "")).unwrap();
    let out = std::process::Command::new(BIN).arg(&path).output().expect("run the proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the fleet's Redis at redis://127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("cache-file") && !stderr.contains(PASSWORD), "{stderr}");
}

#[test]
fn a_tls_redis_with_a_private_ca() {
    let redis = RedisServer::start_tls(Some("tls-pw"));
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let trust = Launch {
        env: vec![("SSL_CERT_FILE".to_owned(), redis.ca_file().display().to_string())],
        ..Launch::default()
    };
    let a = ProxyProcess::start(BIN, &config("a", &redis.url(), &dc, &front, ""), &trust);
    assert!(a.log().contains("joined the fleet redis=rediss://127.0.0.1:"), "{}", a.log());
    let body = format!("{{\"name\": \"bob\", \"secret\": \"{}\"}}", user(2).to_hex());
    assert_eq!(api(&a, "POST", "/secrets", &body).0, 201, "written to Redis over TLS");
    wait_until("a heartbeat over TLS", || json(&a, "/cluster")["instances"]["a"].is_object());
    assert!(session(a.addr(), &user(2)).is_some());
    // Without the CA the server is not trusted: a clear error, no password.
    let path = tempfile::tempdir().unwrap();
    let file = path.path().join("c.toml");
    std::fs::write(&file, config("b", &redis.url(), &dc, &front, "")).unwrap();
    let out = std::process::Command::new(BIN).arg(&file).env_remove("SSL_CERT_FILE").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains("tls-pw") && !a.log().contains("tls-pw"), "{stderr}");
}
