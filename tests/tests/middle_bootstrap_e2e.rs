//! The middle-proxy bootstrap end to end, on the runtime this binary was built with: the proxy
//! fetches the proxy secret and lists from a fake bootstrap server (`fake_bootstrap`) and
//! publishes the snapshot sessions route by; bad answers keep the last good copy; a restart
//! with the server down starts from `cache-dir`; with nothing reachable untagged users are
//! still served; a rotated secret is picked up at the next refresh; a `Date` 120 s off turns
//! middle proxies off with a warning. Waits are on the fake's request counters, the store's
//! generation and log lines, never on sleeps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, closed_port, proxy_config};
use mtg_tests::fake_bootstrap::{
    Doc, FakeBootstrap, config_text, default_secret, middle_section, secret_with,
};
use mtg_tests::fake_middle::{FakeMiddle, test_secret};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const WAIT: Duration = Duration::from_secs(20);
const TAG: &str = "0123456789abcdef0123456789abcdef";

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], "front.example").unwrap()
}

fn bob() -> Secret {
    Secret::fake_tls([0x22; 16], "front.example").unwrap()
}

/// The fake middle proxies the lists name (nothing needs to listen there for the bootstrap).
fn middle_proxies() -> Vec<(i16, SocketAddr)> {
    vec![
        (2, "127.0.0.1:18881".parse().unwrap()),
        (-2, "127.0.0.1:18881".parse().unwrap()),
        (4, "127.0.0.1:18882".parse().unwrap()),
    ]
}

/// A config with alice (tagged through `ad-tag` when `tagged`) and bob (always tagged through
/// `[secret-ad-tags]`), DC 2 at `dc`, and this `[middle-proxy]` table.
fn config(dc: SocketAddr, alice_tagged: bool, middle: &str) -> String {
    let top = if alice_tagged { format!("ad-tag = \"{TAG}\"") } else { String::new() };
    let tables = format!("[secret-ad-tags]\nbob = \"{}\"\n{middle}", TAG.replace('0', "f"));
    proxy_config(
        &[("alice", &alice()), ("bob", &bob())],
        &[(2, dc)],
        closed_port(),
        Timeouts::default(),
        &top,
        &tables,
    )
}

/// A fresh cache directory for one test.
fn cache_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtg-middle-e2e-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cache_key(dir: &std::path::Path) -> String {
    format!("cache-dir = {:?}", dir.display().to_string())
}

/// A full direct session of `secret`: FakeTLS handshake, then `req_pq_multi` answered by the DC.
fn served(proxy: SocketAddr, secret: &Secret) -> bool {
    let secret = secret.clone();
    block_on(async move {
        let mut client = ProxyClient::connect_ee(proxy, &secret, 2).await?;
        client.req_pq().await
    })
    .is_ok()
}

/// Waits until a whole refresh started after the caller's last change was handled: requests
/// are counted once answered, so the answer numbered `seen + 1` may predate the change, the
/// one numbered `seen + 2` does not, and the refresh that follows it (`seen + 3`) starts only
/// once the one before was processed.
fn settled(server: &FakeBootstrap, doc: Doc) {
    let seen = server.requests(doc);
    assert!(server.wait_requests(doc, seen + 3, WAIT), "no refresh of {doc:?}");
}

#[test]
fn the_snapshot_is_published_from_the_bootstrap_server() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = FakeBootstrap::start(&middle_proxies());
    let prometheus =
        "[stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n";
    let proxy =
        ProxyUnderTest::start(&config(dc.addr(), true, &format!("{}{prometheus}", server.section("1h", ""))));
    assert!(proxy.wait_middle_generation(1, WAIT), "no snapshot published");
    let snapshot = proxy.middle().current().expect("a snapshot, clock not skewed");
    assert_eq!(snapshot.secret.as_bytes(), default_secret());
    assert_eq!(snapshot.secret.key_select(), 0xcafa_f9c4);
    assert_eq!(snapshot.v4.group(2), ["127.0.0.1:18881".parse().unwrap()]);
    assert_eq!(snapshot.v4.group(-2), ["127.0.0.1:18881".parse().unwrap()]);
    assert_eq!(snapshot.v4.group(4), ["127.0.0.1:18882".parse().unwrap()]);
    assert!(snapshot.v6.is_empty(), "the IPv6 list answered 404");
    assert!(!proxy.middle().is_skewed());
    // The three documents were asked for once each; nothing more with update-each = 1h.
    assert!(server.wait_requests(Doc::ConfigV6, 1, WAIT));
    assert_eq!(proxy.middle().generation(), 1);
    assert!(served(proxy.addr(), &alice()), "sessions still work");
    // The metrics: one fetch of each document, the endpoints of the snapshot (2 distinct
    // IPv4 addresses, no IPv6 list).
    let (status, text) = request(proxy.metrics().unwrap(), "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{text}");
    for want in [
        "mtg_middle_proxy_fetches_total{document=\"secret\",outcome=\"ok\"} 1\n",
        "mtg_middle_proxy_fetches_total{document=\"config\",outcome=\"ok\"} 1\n",
        "mtg_middle_proxy_fetches_total{document=\"config_v6\",outcome=\"failed\"} 1\n",
        "mtg_middle_proxy_endpoints{family=\"ipv4\"} 2\n",
        "mtg_middle_proxy_endpoints{family=\"ipv6\"} 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn a_tag_added_by_a_reload_starts_the_bootstrap() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = FakeBootstrap::start(&middle_proxies());
    let dir = cache_dir("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    let untagged = proxy_config(
        &[("alice", &alice())],
        &[(2, dc.addr())],
        closed_port(),
        Timeouts::default(),
        "api-bind-to = \"127.0.0.1:1\"",
        &server.section("1h", ""),
    );
    std::fs::write(&path, &untagged).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    // Without a tag nothing is fetched at start.
    assert_eq!(server.requests(Doc::Secret), 0);
    assert_eq!(proxy.middle().generation(), 0);
    std::fs::write(&path, format!("ad-tag = \"{TAG}\"\n{untagged}")).unwrap();
    let (status, body) = request(proxy.api().unwrap(), "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    // The bootstrap looks for tags every 5 s.
    assert!(proxy.wait_middle_generation(1, WAIT), "a reloaded tag did not start the bootstrap");
    assert_eq!(proxy.middle().current().unwrap().secret.as_bytes(), default_secret());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_answers_keep_the_last_good_snapshot() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = FakeBootstrap::start(&middle_proxies());
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &server.section("1s", "")));
    assert!(proxy.wait_middle_generation(1, WAIT));
    let good = proxy.middle().current().unwrap();
    for (secret, config) in [
        ((200, b"short".to_vec()), (200, b"<html>garbage</html>".to_vec())),
        ((500, Vec::new()), (200, Vec::new())),
        ((404, Vec::new()), (502, Vec::new())),
    ] {
        server.set(Doc::Secret, secret.0, &secret.1);
        server.set(Doc::Config, config.0, &config.1);
        server.set(Doc::ConfigV6, 200, b"proxy_for 2 not-an-address;");
        settled(&server, Doc::Config);
        assert_eq!(proxy.middle().generation(), 1, "a bad answer replaced the snapshot");
        assert_eq!(proxy.middle().current().as_deref(), Some(&*good));
    }
    // Refreshing still works: a new good list is published.
    let moved = config_text(&[(2, "127.0.0.1:18883".parse().unwrap())]);
    server.set(Doc::Config, 200, moved.as_bytes());
    assert!(proxy.wait_middle_generation(2, WAIT), "the good list after bad ones was not published");
    let now = proxy.middle().current().unwrap();
    assert_eq!(now.v4.group(2), ["127.0.0.1:18883".parse().unwrap()]);
    assert_eq!(now.secret, good.secret, "the secret was kept through the bad answers");
}

#[test]
fn a_restart_with_the_server_down_starts_from_the_cache() {
    let dc = FakeDc::start(DcMode::Telegram);
    let dir = cache_dir("restart");
    let server = FakeBootstrap::start(&middle_proxies());
    let v6 = "proxy_for 2 [::1]:18884;\n";
    server.set(Doc::ConfigV6, 200, v6.as_bytes());
    let section = server.section("1h", &cache_key(&dir));
    let first = {
        let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &section));
        assert!(proxy.wait_middle_generation(1, WAIT));
        proxy.middle().current().unwrap()
    };
    assert_eq!(std::fs::read(dir.join("proxy-secret")).unwrap(), default_secret());
    assert_eq!(std::fs::read_to_string(dir.join("proxy-multi-v6.conf")).unwrap(), v6);
    assert!(std::fs::read_to_string(dir.join("proxy-multi.conf")).unwrap().contains("proxy_for 4 "));
    drop(server);
    // Same URLs, nothing listening now: the snapshot is there as soon as the proxy serves.
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &section));
    assert!(proxy.middle().generation() >= 1, "the cache was not loaded before serving");
    assert_eq!(proxy.middle().current().as_deref(), Some(&*first));
    assert_eq!(first.v6.group(2), ["[::1]:18884".parse().unwrap()]);
    assert!(served(proxy.addr(), &alice()));
    drop(proxy);

    // A corrupt cache file is ignored (a warning), the others still load; with the IPv4 list
    // gone bad there is no whole snapshot, but the proxy serves.
    std::fs::write(dir.join("proxy-multi.conf"), b"\x00\x01garbage").unwrap();
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &section));
    assert_eq!(proxy.middle().generation(), 0);
    assert!(served(proxy.addr(), &alice()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_nothing_reachable_and_no_cache_untagged_users_are_served() {
    let dc = FakeDc::start(DcMode::Telegram);
    let nowhere = format!("http://{}", closed_port());
    let section = middle_section(
        &format!("{nowhere}/getProxySecret"),
        &format!("{nowhere}/getProxyConfig"),
        &format!("{nowhere}/getProxyConfigV6"),
        "1s",
        "",
    );
    // alice is untagged, bob is tagged: the bootstrap runs and fails.
    let proxy = ProxyUnderTest::start(&config(dc.addr(), false, &section));
    assert!(served(proxy.addr(), &alice()), "an untagged user was not served");
    assert_eq!(proxy.middle().generation(), 0);
    assert!(proxy.middle().current().is_none());
}

#[test]
fn a_rotated_secret_is_picked_up_at_the_next_refresh() {
    let dc = FakeDc::start(DcMode::Telegram);
    let dir = cache_dir("rotate");
    let server = FakeBootstrap::start(&middle_proxies());
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &server.section("1s", &cache_key(&dir))));
    assert!(proxy.wait_middle_generation(1, WAIT));
    let seen = server.requests(Doc::Secret);
    server.set(Doc::Secret, 200, &secret_with(7));
    assert!(server.wait_requests(Doc::Secret, seen + 1, WAIT), "no refresh");
    assert!(proxy.wait_middle_generation(2, WAIT), "the rotated secret was not published");
    let rotated = proxy.middle().current().unwrap();
    assert_eq!(rotated.secret.as_bytes(), secret_with(7));
    assert_eq!(rotated.v4.group(4), ["127.0.0.1:18882".parse().unwrap()], "the lists stay");
    // Further refreshes with the same answers publish nothing new.
    settled(&server, Doc::Secret);
    assert_eq!(proxy.middle().generation(), 2);
    // The cache holds the new secret.
    assert_eq!(std::fs::read(dir.join("proxy-secret")).unwrap(), secret_with(7));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_date_120_s_off_turns_middle_proxies_off_until_fixed() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = FakeBootstrap::start(&middle_proxies());
    server.set_date_offset(120);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &server.section("1s", "")));
    // The skew is checked before the snapshot of the same refresh is published.
    assert!(proxy.wait_middle_generation(1, WAIT));
    assert!(proxy.middle().is_skewed());
    assert!(proxy.middle().current().is_none(), "middle proxies are on with a skewed clock");
    assert!(served(proxy.addr(), &alice()), "tagged users go direct");
    server.set_date_offset(0);
    settled(&server, Doc::Secret);
    assert!(!proxy.middle().is_skewed(), "a fixed clock was not noticed");
    assert!(proxy.middle().current().is_some());
}

#[test]
fn the_skew_warning_and_its_end_are_logged() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = FakeBootstrap::start(&middle_proxies());
    server.set_date_offset(-120);
    let text = config(dc.addr(), true, &server.section("1s", ""));
    let proxy = ProxyProcess::start(BIN, &text, &Launch::default());
    let line = proxy
        .wait_for_line(
            "s off Telegram's; middle proxies are off, tagged users go direct until it is fixed",
            WAIT,
        )
        .unwrap_or_else(|| panic!("no skew warning:\n{}", proxy.log()));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("clock is -12") || line.contains("clock is -11"), "{line}");
    assert!(proxy.wait_for_line("middle-proxy snapshot published", WAIT).is_some(), "{}", proxy.log());
    // One warning per streak, not one per refresh.
    let seen = server.requests(Doc::Secret);
    assert!(server.wait_requests(Doc::Secret, seen + 3, WAIT), "no refreshes");
    assert_eq!(proxy.count_lines("middle proxies are off"), 1, "{}", proxy.log());
    server.set_date_offset(0);
    let fixed = proxy.wait_for_line("middle proxies are on", WAIT);
    assert!(fixed.is_some(), "no line when the clock was fixed:\n{}", proxy.log());
    assert!(fixed.unwrap().contains("INFO"));
    // The IPv6 list answers 404: warned about once, whatever the number of refreshes.
    assert_eq!(proxy.count_lines("middle-proxy IPv6 config unreachable"), 1, "{}", proxy.log());
}

#[test]
fn handshakes_failing_on_two_endpoints_fetch_the_secret_again() {
    // Both middle proxies use a secret the bootstrap has not served yet: Telegram rotated it.
    let dc = FakeDc::start(DcMode::Telegram);
    let (a, b) = (FakeMiddle::start(), FakeMiddle::start());
    let server = FakeBootstrap::start(&[(2, a.addr()), (2, b.addr())]);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), true, &server.section("1h", "")));
    assert!(proxy.wait_middle_generation(1, WAIT));
    let fetched = server.requests(Doc::Secret);
    server.set(Doc::Secret, 200, test_secret().as_bytes());
    // The stale secret fails on both endpoints: the client is served direct, and the
    // failures ask for the secret again long before `update-each` (1h).
    assert!(served(proxy.addr(), &alice()), "not served direct");
    assert_eq!((a.seen().handshakes, b.seen().handshakes), (0, 0));
    assert!(server.wait_requests(Doc::Secret, fetched + 1, WAIT), "no refetch after failing handshakes");
    assert!(proxy.wait_middle_generation(2, WAIT), "the new secret was not published");
    // The new secret is tried at once (the old one's backoff ended) and works.
    let addr = proxy.addr();
    let nonce = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        client.req_pq().await.map(|res| res.nonce)
    })
    .expect("resPQ");
    let answered = [&a, &b].iter().filter(|m| m.seen().res_pq_nonces.contains(&nonce)).count();
    assert_eq!(answered, 1, "a middle proxy answered with the new secret");
    assert_eq!(dc.req_pq_nonces().len(), 1, "only the first client went direct");
}
