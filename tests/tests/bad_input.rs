//! Hostile input to the API and the logs: a table of malformed API requests (bad tokens, bad
//! JSON, wrong methods, unknown users and paths, huge bodies), each answered with its exact
//! 4xx status and a JSON `{"error": ...}` body; and no secret or API token in the proxy's log
//! at trace level while it serves, fronts, adds, removes and reloads users.
//! (Command-line cases are in `mtg-app/tests/bad_cli.rs`, config files in `config_errors.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client::{self, Answer};
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, closed_port, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "input.example";
const TOKEN: &str = "tok-7f3a9c1e5b";

fn user(byte: u8) -> Secret {
    Secret::fake_tls([byte; 16], HOST).unwrap()
}

fn api_config(dc: SocketAddr, front: SocketAddr, users: &[(&str, &Secret)], tables: &str) -> String {
    let top = format!("api-bind-to = \"{}\"\napi-token = \"{TOKEN}\"", closed_port());
    proxy_config(users, &[(2, dc)], front, Timeouts::default(), &top, tables)
}

/// One malformed request and what must come back.
struct Case {
    method: &'static str,
    path: &'static str,
    auth: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
}

fn case(method: &'static str, path: &'static str, body: &str, status: u16, error: &'static str) -> Case {
    Case { method, path, auth: Some("Bearer tok-7f3a9c1e5b"), body: body.as_bytes().to_vec(), status, error }
}

fn cases() -> Vec<Case> {
    let dd = Secret::secured([0x44; 16]).unwrap().to_hex();
    let long_name = format!("{{\"name\": \"{}\", \"host\": \"a.example\"}}", "n".repeat(65));
    let mut cases = vec![
        Case { auth: None, ..case("GET", "/stats", "", 401, "bearer token") },
        Case { auth: Some("Bearer wrong"), ..case("GET", "/stats", "", 401, "bearer token") },
        Case { auth: Some("tok-7f3a9c1e5b"), ..case("GET", "/stats", "", 401, "bearer token") },
        Case { auth: Some("Bearer tok-7f3a9c1e5bX"), ..case("GET", "/stats", "", 401, "bearer token") },
        Case { auth: Some("Bearer "), ..case("POST", "/secrets", "{}", 401, "bearer token") },
        Case { auth: Some("Basic dG9rOg=="), ..case("DELETE", "/secrets/alice", "", 401, "bearer token") },
        case("POST", "/secrets", "{", 400, "bad JSON body"),
        case("POST", "/secrets", "", 400, "bad JSON body"),
        case("POST", "/secrets", "[]", 400, "bad JSON body"),
        case("POST", "/secrets", "null", 400, "bad JSON body"),
        case("POST", "/secrets", "{\"name\": 5, \"host\": \"a.example\"}", 400, "bad JSON body"),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"extra\": 1}",
            400,
            "unknown field",
        ),
        case("POST", "/secrets", "{\"name\": \"x\"}", 400, "exactly one of the fields"),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"secret\": \"00\", \"host\": \"a.example\"}",
            400,
            "exactly one",
        ),
        case("POST", "/secrets", "{\"name\": \"bad name\", \"host\": \"a.example\"}", 400, "field `name`"),
        case("POST", "/secrets", "{\"name\": \"\", \"host\": \"a.example\"}", 400, "field `name`"),
        case("POST", "/secrets", "{\"name\": \"../etc\", \"host\": \"a.example\"}", 400, "field `name`"),
        case("POST", "/secrets", &long_name, 400, "field `name`"),
        case("POST", "/secrets", "{\"name\": \"x\", \"secret\": \"zz\"}", 400, "field `secret`"),
        case("POST", "/secrets", "{\"name\": \"x\", \"secret\": \"ee00112233\"}", 400, "field `secret`"),
        case("POST", "/secrets", "{\"name\": \"x\", \"host\": \"bad host\"}", 400, "field `host`"),
        case("POST", "/secrets", "{\"name\": \"x\", \"host\": \"\"}", 400, "field `host`"),
        case("POST", "/secrets", &format!("{{\"name\": \"x\", \"secret\": \"{dd}\"}}"), 400, "[secured]"),
        case("POST", "/secrets", "{\"name\": \"alice\", \"host\": \"a.example\"}", 409, "already exists"),
        case("DELETE", "/secrets/nobody", "", 404, "no user nobody"),
        case("DELETE", "/secrets/%2e%2e", "", 404, "no user"),
        case("POST", "/secrets/nobody/reset-quota", "", 404, "no user nobody"),
        case("PUT", "/stats", "", 405, "allowed: GET"),
        case("DELETE", "/stats", "", 405, "allowed: GET"),
        case("GET", "/reload", "", 405, "allowed: POST"),
        case("PATCH", "/secrets", "{}", 405, "allowed: GET, POST, PUT"),
        case("GET", "/secrets/alice", "", 405, "allowed: DELETE"),
        case("GET", "/secrets/alice/reset-quota", "", 405, "allowed: POST"),
        // `GET /` is the web panel (no token needed); other methods on it are not.
        case("POST", "/", "", 404, "no such endpoint"),
        case("GET", "/secrets/nobody/links", "", 404, "no user named \"nobody\""),
        case("DELETE", "/secrets/alice/links", "", 405, "allowed: GET"),
        Case { auth: None, ..case("GET", "/secrets/alice/links", "", 401, "bearer token") },
        case("GET", "/nope", "", 404, "no such endpoint"),
        case("GET", "/secrets/a/b/c", "", 404, "no such endpoint"),
        case("POST", "/reload", "", 400, "no config file to reload"),
        // The limit fields: the config's formats, errors name the field.
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"quota\": \"lots\"}",
            400,
            "field `quota`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"quota\": -5}",
            400,
            "field `quota`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"quota\": 1e300}",
            400,
            "field `quota`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"quota_reset\": \"weekly\"}",
            400,
            "field `quota_reset`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"expires\": \"tomorrow\"}",
            400,
            "field `expires`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"expires\": \"9999-12-31T23:00:00-02:00\"}",
            400,
            "field `expires`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"disabled\": \"yes\"}",
            400,
            "field `disabled`",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"max_connections\": -1}",
            400,
            "field `max_connections`",
        ),
        case("POST", "/secrets", "{\"name\": \"alice\", \"quota\": {}}", 400, "field `quota`"),
        // PUT /secrets: validated whole before anything changes.
        case("PUT", "/secrets", "{}", 400, "missing field `secrets`"),
        case("PUT", "/secrets", "{\"secrets\": []}", 400, "bad JSON body"),
        case("PUT", "/secrets", "{\"secrets\": {}}", 400, "field `secrets`: at least one user"),
        case(
            "PUT",
            "/secrets",
            "{\"secrets\": {\"bad name\": {\"secret\": \"00\"}}}",
            400,
            "field `secrets`",
        ),
        case(
            "PUT",
            "/secrets",
            "{\"secrets\": {\"x\": {\"secret\": \"zz\"}}}",
            400,
            "field `secrets.x.secret`",
        ),
        case(
            "PUT",
            "/secrets",
            "{\"secrets\": {\"x\": {\"host\": \"a.example\"}}}",
            400,
            "unknown field `host`",
        ),
        case("PUT", "/secrets", "{\"secrets\": {\"x\": {}}}", 400, "missing field `secret`"),
        // Ad tags (mtg-multi's `ad_tag` fields): 32 hex, the field and the rule named.
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"ad_tag\": \"00\"}",
            400,
            "field `ad_tag`: it has 2 characters; @MTProxybot's proxy tag is 32 hex characters",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"ad_tag\": 5}",
            400,
            "field `ad_tag`: expected a string, found a number",
        ),
        case(
            "POST",
            "/secrets",
            "{\"name\": \"x\", \"host\": \"a.example\", \"ad-tag\": \"\"}",
            400,
            "unknown field `ad-tag`",
        ),
        case("GET", "/adtag/x", "", 404, "no such endpoint"),
        case("POST", "/adtag", "{}", 405, "allowed: GET, PUT, DELETE"),
        case("PUT", "/adtag", "{}", 400, "field `ad_tag` is required; use DELETE /adtag to clear it"),
        case("PUT", "/adtag", "{\"ad_tag\": \"\"}", 400, "field `ad_tag` is required"),
        case("PUT", "/adtag", "{\"ad_tag\": null}", 400, "field `ad_tag` is required"),
        case("PUT", "/adtag", "{\"tag\": \"00\"}", 400, "unknown field `tag`"),
        case("PUT", "/adtag", "\"00\"", 400, "bad JSON body"),
        case(
            "PUT",
            "/adtag",
            "{\"ad_tag\": \"0123456789abcdef0123456789abcdeX\"}",
            400,
            "field `ad_tag`: it holds characters other than 0-9 and a-f; @MTProxybot's proxy tag is 32 hex characters",
        ),
        case(
            "PUT",
            "/adtag",
            "{\"ad_tag\": \"ee0123456789abcdef0123456789abcdef6578616d706c652e636f6d\"}",
            400,
            "field `ad_tag`: this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with",
        ),
        Case { auth: None, ..case("DELETE", "/adtag", "", 401, "bearer token") },
    ];
    // The bare key of a user's secret pasted as a tag (alice's key is 0x91 × 16).
    cases.push(Case {
        body: format!("{{\"ad_tag\": \"{}\"}}", "91".repeat(16)).into_bytes(),
        ..case("PUT", "/adtag", "", 400, "the global ad tag: it is the secret key of user alice")
    });
    let valid = user(0x55).to_hex();
    cases.push(Case {
        body: format!("{{\"secrets\": {{\"a\": {{\"secret\": \"{valid}\"}}}}, \"ad_tag\": \"00\"}}")
            .into_bytes(),
        ..case("PUT", "/secrets", "", 400, "field `ad_tag`: it has 2 characters")
    });
    cases.push(Case {
        body: format!("{{\"secrets\": {{\"a\": {{\"secret\": \"{valid}\", \"ad_tag\": \"zz\"}}}}}}")
            .into_bytes(),
        ..case("PUT", "/secrets", "", 400, "field `secrets.a.ad_tag`: it holds characters other than 0-9")
    });
    for (body, error) in [
        (
            format!("{{\"secrets\": {{\"a\": {{\"secret\": \"{valid}\"}}, \"z\": {{\"secret\": \"zz\"}}}}}}"),
            "field `secrets.z.secret`",
        ),
        (
            format!("{{\"secrets\": {{\"a\": {{\"secret\": \"{valid}\", \"quota\": \"x\"}}}}}}"),
            "field `secrets.a.quota`",
        ),
        (format!("{{\"secrets\": {{\"a\": {{\"secret\": \"{dd}\"}}}}}}"), "[secured]"),
    ] {
        cases.push(Case { body: body.into_bytes(), ..case("PUT", "/secrets", "", 400, error) });
    }
    cases.push(Case {
        body: vec![0xff, 0xfe, b'{', 0x80],
        ..case("POST", "/secrets", "", 400, "bad JSON body")
    });
    cases.push(Case {
        body: vec![b' '; 200 * 1024],
        ..case("POST", "/secrets", "", 413, "larger than 64 KiB")
    });
    cases.push(Case {
        body: vec![b' '; 200 * 1024],
        ..case("PUT", "/secrets", "", 413, "larger than 64 KiB")
    });
    cases
}

#[test]
fn malformed_api_requests_get_exact_4xx_codes_and_json_errors() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let (alice, bob) = (user(0x91), user(0x92));
    let proxy =
        ProxyUnderTest::start(&api_config(dc.addr(), front.addr(), &[("alice", &alice), ("bob", &bob)], ""));
    let api = proxy.api().unwrap();
    let cases = cases();
    assert!(cases.len() >= 30, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let Answer { status, content_type, body } =
            api_client::request_bytes(api, c.method, c.path, c.auth, &c.body);
        let error =
            serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_owned));
        let ok = status == c.status
            && content_type == "application/json"
            && error.as_deref().is_some_and(|e| e.contains(c.error));
        if !ok {
            failures.push(format!("{} {}: {status} {content_type:?} {body:?}", c.method, c.path));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The last user cannot be removed; nothing above changed the users.
    let ok = |method, path: &str| api_client::request(api, method, path, Some("Bearer tok-7f3a9c1e5b"), "");
    assert_eq!(ok("DELETE", "/secrets/bob").0, 200);
    let (status, body) = ok("DELETE", "/secrets/alice");
    assert_eq!((status, body.as_str()), (409, "{\"error\":\"cannot remove the last user\"}\n"));
    let listed: Value = serde_json::from_str(&ok("GET", "/secrets").1).unwrap();
    assert_eq!(listed.as_object().unwrap().keys().collect::<Vec<_>>(), ["alice"]);
    // The proxy still serves.
    let addr = proxy.addr();
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice, 2).await.unwrap();
        client.send(b"after the table").await.unwrap();
        client.recv_exact(15).await.unwrap()
    });
    assert_eq!(echoed, b"after the table");
}

/// Every text form of `secret` that must never be logged.
fn forms(secret: &Secret) -> Vec<String> {
    vec![secret.to_hex(), secret.to_base64url(), secret.key_hex()]
}

#[test]
fn no_secret_or_token_in_the_log_at_trace_level() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let (alice, dave_dd, carol, erin) =
        (user(0xa1), Secret::secured([0xa2; 16]).unwrap(), user(0xa3), user(0xa4));
    let wrong = user(0xa5);
    let secured = "[secured]\nenabled = true\n";
    let config = api_config(dc.addr(), front.addr(), &[("alice", &alice), ("dave", &dave_dd)], secured);
    let launch = Launch { rust_log: Some("trace".to_owned()), ..Launch::default() };
    let proxy = ProxyProcess::start(BIN, &config, &launch);
    let (addr, api) = (proxy.addr(), proxy.api().expect("the API address is logged"));

    // Sessions: ee and dd relaying, a wrong secret (fronted).
    let (a, d, w) = (alice.clone(), dave_dd.clone(), wrong.clone());
    block_on(async move {
        let mut ee = ProxyClient::connect_ee(addr, &a, 2).await.unwrap();
        ee.send(&pattern(3000, 1)).await.unwrap();
        assert_eq!(ee.recv_exact(3000).await.unwrap(), pattern(3000, 1));
        let mut dd = ProxyClient::connect_dd(addr, &d, 2).await.unwrap();
        dd.send(b"dd payload").await.unwrap();
        assert_eq!(dd.recv_exact(10).await.unwrap(), b"dd payload");
        assert!(ProxyClient::connect_ee(addr, &w, 2).await.is_err(), "a wrong secret is fronted");
    });
    // API: add carol with her secret, add one by host, list, remove carol, a bad token.
    let auth = Some("Bearer tok-7f3a9c1e5b");
    let body = format!("{{\"name\": \"carol\", \"secret\": \"{}\"}}", carol.to_hex());
    assert_eq!(api_client::request(api, "POST", "/secrets", auth, &body).0, 201);
    let (status, made) =
        api_client::request(api, "POST", "/secrets", auth, "{\"name\": \"gen\", \"host\": \"gen.example\"}");
    assert_eq!(status, 201, "{made}");
    let generated =
        Secret::parse(serde_json::from_str::<Value>(&made).unwrap()["gen"]["secret"].as_str().unwrap())
            .unwrap();
    assert_eq!(api_client::request(api, "GET", "/secrets", auth, "").0, 200);
    assert_eq!(api_client::request(api, "DELETE", "/secrets/carol", auth, "").0, 200);
    assert_eq!(api_client::request(api, "GET", "/stats", Some("Bearer nope-nope"), "").0, 401);
    // Reload with erin added to the file.
    let mut text = std::fs::read_to_string(proxy.config_path()).unwrap();
    text = text.replace("[secrets]\n", &format!("[secrets]\nerin = \"{}\"\n", erin.to_hex()));
    std::fs::write(proxy.config_path(), text).unwrap();
    assert_eq!(api_client::request(api, "POST", "/reload", auth, "").0, 200);
    assert!(proxy.wait_for_line("config reloaded", Duration::from_secs(5)).is_some(), "{}", proxy.log());

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    // Nothing in the proxy logs at TRACE today; DEBUG lines show the filter lets all through.
    assert!(log.contains(" DEBUG ") && log.lines().count() >= 8, "the log is at trace level:\n{log}");
    let lower = log.to_lowercase();
    for (name, secret) in
        [("alice", &alice), ("dave", &dave_dd), ("carol", &carol), ("erin", &erin), ("gen", &generated)]
    {
        for form in forms(secret) {
            assert!(!lower.contains(&form.to_lowercase()), "{name}'s secret ({form}) is in the log");
        }
    }
    assert!(!log.contains(TOKEN), "the API token is in the log");
    assert!(!log.contains("nope-nope"), "a presented bearer token is in the log");
}

#[test]
fn network_garbage_closes_only_that_connection() {
    use std::io::{Read, Write};
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let alice = user(0xb1);
    let config = proxy_config(
        &[("alice", &alice)],
        &[(2, dc.addr())],
        front.addr(),
        Timeouts { handshake: "1s", ..Timeouts::default() },
        "proxy-protocol-listener = true",
        "",
    );
    let proxy = ProxyProcess::start(BIN, &config, &Launch::default());
    let addr = proxy.addr();
    let closed_promptly = |wire: &[u8], what: &str| {
        let started = std::time::Instant::now();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(wire);
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{what}: left open");
                    break;
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{what}: closed after {:?}", started.elapsed());
    };
    // A broken PROXY header, a bad v2 header and a TLS record longer than any hello.
    closed_promptly(b"PROXY GARBAGE\r\n", "a PROXY v1 header without fields");
    closed_promptly(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "a PROXY v1 header with a bad port");
    let mut v2 = mtg_proto::proxy_protocol::V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    closed_promptly(&v2, "a PROXY v2 header whose body never comes");
    let mut huge = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    huge.extend(std::iter::repeat_n(0x41, 24 * 1024));
    closed_promptly(&huge, "a 64 KiB TLS record");
    assert!(
        front
            .wait_until(Duration::from_secs(5), |c| c.iter().any(|c| c.first_bytes.starts_with(&huge[..64]))),
        "the oversized record was fronted"
    );
    // Connect-and-close a hundred times: nothing is dialled for an empty connection.
    let fronted_before = front.connections();
    for _ in 0..100 {
        drop(std::net::TcpStream::connect(addr).unwrap());
    }
    // After a valid handshake: bytes that are not TLS records end the session.
    let outcome = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice, 2).await.unwrap();
        client.send(b"fine").await.unwrap();
        assert_eq!(client.recv_exact(4).await.unwrap(), b"fine");
        client.send_raw(b"\x99garbage that is not a TLS record").await.unwrap();
        client.wait_closed().await
    });
    if let Err(e) = outcome {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "garbage after the handshake left the session open"
        );
    }
    // The proxy still serves a valid client.
    let alice = user(0xb1);
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice, 2).await.unwrap();
        client.send(b"still fine").await.unwrap();
        client.recv_exact(10).await.unwrap()
    });
    assert_eq!(echoed, b"still fine");
    // The garbage session's end is logged when its task notices the protocol error.
    let ended = proxy.wait_for_line("reason=protocol error", Duration::from_secs(10));
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(ended.is_some(), "the garbage session ended on a protocol error:\n{log}");
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(!log.contains("panicked"), "a panic in the proxy log:\n{log}");
    assert!(log.contains("reason=protocol error"), "the garbage session ended on a protocol error:\n{log}");
    assert_eq!(front.connections(), fronted_before, "empty connections are not fronted");
}
