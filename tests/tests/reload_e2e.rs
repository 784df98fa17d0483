//! Live reload under load (both runtimes): 200 live sessions, one user removed and one added
//! through `POST /reload`: the removed user's sessions close, every other session keeps
//! relaying, the new user connects; an invalid file is refused whole. A reload of ad tags
//! reaches new sessions and closes none; a bad tag is refused naming the key.

use std::net::SocketAddr;

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::OFFLINE_MIDDLE_PROXY;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const HOST: &str = "front.example";

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

fn config(users: &[(&str, u8)], dc: SocketAddr, front: &FrontingSite) -> String {
    let mut text = String::from("bind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\n[secrets]\n");
    for (name, n) in users {
        text.push_str(&format!("{name} = \"{}\"\n", user(*n).to_hex()));
    }
    text.push_str(&format!(
        "[domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.dc-overrides]\n2 = [\"{dc}\"]\n",
        front.addr().port()
    ));
    text
}

#[test]
fn reload_under_load_closes_only_removed_users() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dir = std::env::temp_dir().join(format!("mtg-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, config(&[("alice", 1), ("bob", 2), ("carol", 3)], dc.addr(), &front)).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());

    let sessions = block_on(async move {
        let mut sessions = Vec::new();
        for i in 0..200u32 {
            let n = (i % 3) as u8 + 1;
            let mut c = ProxyClient::connect_ee(addr, &user(n), 2).await.unwrap();
            c.send(&i.to_le_bytes()).await.unwrap();
            assert_eq!(c.recv_exact(4).await.unwrap(), i.to_le_bytes());
            sessions.push((n, c));
        }
        sessions
    });
    assert_eq!(proxy.active(), 200);

    // carol removed, dave added.
    std::fs::write(&path, config(&[("alice", 1), ("bob", 2), ("dave", 4)], dc.addr(), &front)).unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "{\"added\":[\"dave\"],\"removed\":[\"carol\"],\"rekeyed\":[],\"relimited\":[],\"retagged\":[]}\n"
    );

    let (kept, closed) = block_on(async move {
        let (mut kept, mut closed) = (0, 0);
        for (n, mut c) in sessions {
            if n == 3 {
                // Closed by the proxy (FIN or RST), not left hanging.
                if let Err(e) = c.wait_closed().await {
                    assert_ne!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut,
                        "a removed user's session stayed open"
                    );
                }
                closed += 1;
            } else {
                c.send(b"still").await.unwrap();
                assert_eq!(c.recv_exact(5).await.unwrap(), b"still");
                kept += 1;
            }
        }
        let mut dave = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        dave.send(b"new").await.unwrap();
        assert_eq!(dave.recv_exact(3).await.unwrap(), b"new");
        // carol's secret is now a wrong secret: fronted.
        assert!(ProxyClient::connect_ee(addr, &user(3), 2).await.is_err());
        (kept, closed)
    });
    assert_eq!((kept, closed), (134, 66));

    // An invalid file is refused whole; the running users stay.
    std::fs::write(&path, "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"not a secret\"\n").unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 400);
    assert!(body.contains("invalid secret secrets.alice"), "{body}");
    block_on(async move {
        let mut c = ProxyClient::connect_ee(addr, &user(4), 2).await.unwrap();
        c.send(b"ok").await.unwrap();
        assert_eq!(c.recv_exact(2).await.unwrap(), b"ok");
    });
    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reload_of_ad_tags_closes_no_session() {
    const TAG_A: &str = "0123456789abcdef0123456789abcdef";
    const TAG_B: &str = "fedcba9876543210fedcba9876543210";
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dir = std::env::temp_dir().join(format!("mtg-reload-tags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    // Tags start the middle-proxy bootstrap: its sources stay on loopback.
    let base = format!("{}{OFFLINE_MIDDLE_PROXY}", config(&[("alice", 1), ("bob", 2)], dc.addr(), &front));
    std::fs::write(&path, &base).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    let (addr, api) = (proxy.addr(), proxy.api().unwrap());
    let sessions = block_on(async move {
        let mut sessions = Vec::new();
        for i in 0..20u32 {
            let mut c = ProxyClient::connect_ee(addr, &user((i % 2) as u8 + 1), 2).await.unwrap();
            c.send(&i.to_le_bytes()).await.unwrap();
            assert_eq!(c.recv_exact(4).await.unwrap(), i.to_le_bytes());
            sessions.push(c);
        }
        sessions
    });

    // A global tag (a top-level key: before the tables) and bob's own.
    let tagged =
        format!("ad-tag = \"{TAG_A}\"\n{base}[secret-ad-tags]\nbob = \"{}\"\n", TAG_B.to_uppercase());
    std::fs::write(&path, &tagged).unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "{\"added\":[],\"removed\":[],\"rekeyed\":[],\"relimited\":[],\"retagged\":[\"alice\",\"bob\"]}\n"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&request(api, "GET", "/secrets", None, "").1).unwrap();
    assert_eq!(listed["alice"]["effective_ad_tag"], TAG_A);
    assert_eq!(listed["alice"].get("ad_tag"), None);
    assert_eq!(listed["bob"]["ad_tag"], TAG_B);
    assert_eq!(listed["bob"]["effective_ad_tag"], TAG_B);
    assert_eq!(request(api, "GET", "/adtag", None, ""), (200, format!("{{\"ad_tag\":\"{TAG_A}\"}}\n")));

    // A bad tag is refused whole, naming the key and the rule; the tags stay.
    std::fs::write(&path, tagged.replace(TAG_A, &user(1).to_hex())).unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 400);
    assert!(
        body.contains("invalid ad tag ad-tag: this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with; @MTProxybot's proxy tag is 32 hex characters"),
        "{body}"
    );
    assert!(!body.contains(&user(1).to_hex()[2..34]), "the secret is not echoed: {body}");
    assert_eq!(request(api, "GET", "/adtag", None, "").1, format!("{{\"ad_tag\":\"{TAG_A}\"}}\n"));

    // Tags removed again: retagged, nothing closed.
    std::fs::write(&path, &base).unwrap();
    let (status, body) = request(api, "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("\"retagged\":[\"alice\",\"bob\"]}\n"), "{body}");
    // Still served: none was closed.
    assert_eq!(proxy.active(), 20);
    block_on(async move {
        for mut c in sessions {
            c.send(b"still").await.unwrap();
            assert_eq!(c.recv_exact(5).await.unwrap(), b"still");
        }
    });
    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}
