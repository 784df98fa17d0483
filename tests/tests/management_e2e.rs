//! The management API (both runtimes): list, add (with a secret or a host), remove, reset a
//! quota, the ad tags (`/adtag`, `ad_tag` in `/secrets`, mtg-multi's shapes); errors name what
//! is wrong; `api-persist` rewrites only the users of the file.

use std::net::SocketAddr;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::OFFLINE_MIDDLE_PROXY;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use serde_json::{Value, json};

const HOST: &str = "front.example";

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

fn request(api: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    api_client::request(api, method, path, Some("Bearer t"), body)
}

#[test]
fn users_are_managed_at_run_time_and_persisted() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dir = std::env::temp_dir().join(format!("mtg-manage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "# my proxy\nbind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\napi-token = \"t\"\napi-persist = true\n[secrets]\nalice = \"{}\"\n[domain-fronting]\nhost = \"127.0.0.1\"\nport = {} # the local site\n[network.dc-overrides]\n2 = [\"{}\"]\n[secret-limits.alice]\nquota = \"1kib\"\n",
            user(1).to_hex(),
            front.addr().port(),
            dc.addr()
        ),
    )
    .unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());

    // Errors say what is wrong.
    assert_eq!(request(api, "POST", "/secrets", "{\"name\": \"bob\"").0, 400);
    let (status, body) = request(api, "POST", "/secrets", "{\"nmae\": \"bob\", \"host\": \"x.example\"}");
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `nmae`"), "{body}");
    let (status, body) = request(api, "POST", "/secrets", "{\"name\": \"bob\", \"secret\": \"ee00\"}");
    assert_eq!(status, 400);
    assert!(body.contains("field `secret`: secret key is shorter than 16 bytes"), "{body}");
    assert_eq!(request(api, "DELETE", "/secrets/nobody", "").0, 404);
    assert_eq!(request(api, "POST", "/secrets/nobody/reset-quota", "").0, 404);
    // An existing user is updated, not re-added by host.
    let (status, body) = request(api, "POST", "/secrets", "{\"name\": \"alice\", \"host\": \"x.example\"}");
    assert_eq!(status, 409);
    assert!(body.contains("already exists"), "{body}");
    let (status, body) = request(api, "POST", "/secrets", "{\"name\": \"alice\", \"quota\": \"1kib\"}");
    assert_eq!(status, 200, "an update keeps the secret: {body}");
    assert!(body.contains(&user(1).to_hex()) && body.contains("\"quota\":1024"), "{body}");
    assert_eq!(request(api, "PUT", "/stats", "").0, 405);

    // Add bob with a known secret and carol by host (the proxy generates her key).
    let (status, _) = request(
        api,
        "POST",
        "/secrets",
        &format!("{{\"name\": \"bob\", \"secret\": \"{}\"}}", user(2).to_base64url()),
    );
    assert_eq!(status, 201);
    let (status, body) =
        request(api, "POST", "/secrets", "{\"name\": \"carol\", \"host\": \"front.example\"}");
    assert_eq!(status, 201, "{body}");
    let carol: Value = serde_json::from_str(&body).unwrap();
    let carol = Secret::parse(carol["carol"]["secret"].as_str().unwrap()).unwrap();
    let listed: Value = serde_json::from_str(&request(api, "GET", "/secrets", "").1).unwrap();
    assert_eq!(listed.as_object().unwrap().keys().collect::<Vec<_>>(), ["alice", "bob", "carol"]);

    let bob_session = block_on({
        let carol = carol.clone();
        async move {
            let mut c = ProxyClient::connect_ee(addr, &carol, 2).await.unwrap();
            c.send(b"carol").await.unwrap();
            assert_eq!(c.recv_exact(5).await.unwrap(), b"carol");
            let mut b = ProxyClient::connect_ee(addr, &user(2), 2).await.unwrap();
            b.send(b"bob").await.unwrap();
            assert_eq!(b.recv_exact(3).await.unwrap(), b"bob");
            b
        }
    });

    // The file has the new users and everything else as it was.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# my proxy\n"), "{text}");
    assert!(text.contains("# the local site"), "{text}");
    assert!(text.contains(&format!("bob = \"{}\"", user(2).to_hex())), "{text}");
    assert!(text.contains(&format!("carol = \"{}\"", carol.to_hex())), "{text}");
    assert!(text.contains("[secret-limits.alice]"), "{text}");

    // Removing bob closes his session and makes his secret a wrong one.
    assert_eq!(request(api, "DELETE", "/secrets/bob", "").0, 200);
    block_on(async move {
        let mut b = bob_session;
        if let Err(e) = b.wait_closed().await {
            assert_ne!(e.kind(), std::io::ErrorKind::TimedOut);
        }
        assert!(ProxyClient::connect_ee(addr, &user(2), 2).await.is_err());
    });
    assert!(!std::fs::read_to_string(&path).unwrap().contains("bob ="));

    // alice uses up her 1 KiB quota; reset-quota lets her in again.
    block_on(async move {
        let mut a = ProxyClient::connect_ee(addr, &user(1), 2).await.unwrap();
        a.send(&[1u8; 600]).await.unwrap();
        a.recv_exact(600).await.unwrap();
        drop(a);
    });
    // The relay reports bytes right after moving them: wait for the last report to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while request(api, "GET", "/stats", "").1.find("\"quota_used\": 1200").is_none() {
        assert!(std::time::Instant::now() < deadline, "quota usage never reached 1200");
        std::thread::sleep(Duration::from_millis(10));
    }
    block_on(async move {
        assert!(ProxyClient::connect_ee(addr, &user(1), 2).await.is_err(), "over quota");
    });
    assert_eq!(request(api, "POST", "/secrets/alice/reset-quota", "").0, 200);
    block_on(async move {
        assert!(ProxyClient::connect_ee(addr, &user(1), 2).await.is_ok(), "quota reset");
    });
    assert_eq!(request(api, "DELETE", "/secrets/carol", "").0, 200);
    assert_eq!(request(api, "DELETE", "/secrets/alice", "").0, 409, "the last user stays");
    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}

fn call(api: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let (status, text) = request(api, method, path, &body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text:?}")))
}

const TAG_A: &str = "0123456789abcdef0123456789abcdef";
const TAG_B: &str = "fedcba9876543210fedcba9876543210";

#[test]
fn ad_tags_are_managed_at_run_time_without_closing_sessions() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let config = format!(
        "bind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\napi-token = \"t\"\n[secrets]\nalice = \"{}\"\nbob = \"{}\"\n[domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.dc-overrides]\n2 = [\"{}\"]\n{OFFLINE_MIDDLE_PROXY}",
        user(1).to_hex(),
        user(2).to_hex(),
        front.addr().port(),
        dc.addr()
    );
    let proxy = ProxyUnderTest::start(&config);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());
    let view = |n: u8| json!({"secret": user(n).to_hex(), "base64": user(n).to_base64url(), "host": HOST});

    // No tag: GET /adtag says null, users list no tag fields.
    assert_eq!(call(api, "GET", "/adtag", &Value::Null), (200, json!({"ad_tag": null})));
    assert_eq!(call(api, "GET", "/secrets", &Value::Null), (200, json!({"alice": view(1), "bob": view(2)})));

    // Live sessions of both users, which no tag change may close.
    let sessions = block_on(async move {
        let mut sessions = Vec::new();
        for n in [1, 2, 1, 2] {
            let mut c = ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap();
            c.send(b"hi").await.unwrap();
            assert_eq!(c.recv_exact(2).await.unwrap(), b"hi");
            sessions.push(c);
        }
        sessions
    });

    // PUT /adtag: upper case is accepted, stored and shown in lower case.
    let (status, body) = call(api, "PUT", "/adtag", &json!({"ad_tag": TAG_A.to_uppercase()}));
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    assert_eq!(call(api, "GET", "/adtag", &Value::Null), (200, json!({"ad_tag": TAG_A})));
    let mut alice = view(1);
    alice["effective_ad_tag"] = json!(TAG_A);
    assert_eq!(call(api, "GET", "/secrets", &Value::Null).1["alice"], alice);

    // POST /secrets: bob's own tag (update: 200, the view shows both tags).
    let (status, body) = call(api, "POST", "/secrets", &json!({"name": "bob", "ad_tag": TAG_B}));
    let mut bob = view(2);
    bob["ad_tag"] = json!(TAG_B);
    bob["effective_ad_tag"] = json!(TAG_B);
    assert_eq!((status, body), (200, json!({"bob": bob.clone()})));
    // A new user with a tag: 201.
    let (status, body) =
        call(api, "POST", "/secrets", &json!({"name": "carol", "secret": user(3).to_hex(), "ad_tag": TAG_B}));
    let mut carol = view(3);
    carol["ad_tag"] = json!(TAG_B);
    carol["effective_ad_tag"] = json!(TAG_B);
    assert_eq!((status, body), (201, json!({"carol": carol.clone()})));
    assert_eq!(
        call(api, "GET", "/secrets", &Value::Null),
        (200, json!({"alice": alice, "bob": bob, "carol": carol}))
    );

    // An update without `ad_tag` clears the user's own tag, as in mtg-multi: the global applies.
    let (status, body) = call(api, "POST", "/secrets", &json!({"name": "carol"}));
    let mut carol = view(3);
    carol["effective_ad_tag"] = json!(TAG_A);
    assert_eq!((status, body), (200, json!({"carol": carol})));

    // DELETE /adtag: the global tag goes, bob keeps his own.
    assert_eq!(call(api, "DELETE", "/adtag", &Value::Null), (200, json!({"status": "ok"})));
    assert_eq!(call(api, "GET", "/adtag", &Value::Null), (200, json!({"ad_tag": null})));
    let listed = call(api, "GET", "/secrets", &Value::Null).1;
    assert_eq!(listed["alice"], view(1));
    assert_eq!(listed["bob"]["effective_ad_tag"], json!(TAG_B));
    // Clearing again is fine.
    assert_eq!(call(api, "DELETE", "/adtag", &Value::Null), (200, json!({"status": "ok"})));

    // PUT /secrets replaces the users and the tags (the global one from the top-level field).
    let (status, body) = call(
        api,
        "PUT",
        "/secrets",
        &json!({"secrets": {"alice": {"secret": user(1).to_hex()}, "bob": {"secret": user(2).to_hex(), "ad_tag": TAG_A}},
                "ad_tag": TAG_B}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alice"]["effective_ad_tag"], json!(TAG_B));
    assert_eq!(body["alice"].get("ad_tag"), None);
    assert_eq!((&body["bob"]["ad_tag"], &body["bob"]["effective_ad_tag"]), (&json!(TAG_A), &json!(TAG_A)));
    assert_eq!(call(api, "GET", "/adtag", &Value::Null), (200, json!({"ad_tag": TAG_B})));
    // Without the top-level field the global tag goes (mtg-multi replaces the whole set).
    let (status, body) = call(
        api,
        "PUT",
        "/secrets",
        &json!({"secrets": {"alice": {"secret": user(1).to_hex()}, "bob": {"secret": user(2).to_hex()}}}),
    );
    assert_eq!((status, body), (200, json!({"alice": view(1), "bob": view(2)})));

    // Every live session still relays: tag changes reach new sessions only.
    // Still served: none was closed.
    assert_eq!(proxy.active(), 4);
    block_on(async move {
        for mut c in sessions {
            c.send(b"still").await.unwrap();
            assert_eq!(c.recv_exact(5).await.unwrap(), b"still");
        }
    });
    drop(proxy);
}
