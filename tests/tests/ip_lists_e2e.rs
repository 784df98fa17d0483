//! Block and allow lists end to end over loopback, on the runtime this binary was built with:
//! clients connect from 127.0.0.1, 127.0.0.2 or 127.0.0.3 (bound before connecting); a refused
//! client is closed without a byte answered, a served one completes a session to the fake DC.
//! Lists come from local files or a local HTTP server whose answers the test changes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::client::{Answer, EeOptions, ProxyClient};
use mtg_tests::list_server::{ListServer, Reply};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::temp_file::TempFile;
use mtg_tests::{DcMode, FakeDc};

const HOST: &str = "front.example";
const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

fn from(ip: &str) -> EeOptions {
    EeOptions { source: Some(ip.parse::<IpAddr>().unwrap()), ..EeOptions::default() }
}

/// A config with one user, DC 2 at `dc`, fronting pointed at a closed loopback port, and the
/// list `sections`.
fn config(dc: SocketAddr, sections: &str) -> String {
    format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"{}\"\n[domain-fronting]\nhost = \"127.0.0.1\"\nport = 1\n\
         [network.timeout]\nhandshake = \"2s\"\nidle = \"30s\"\ntcp = \"2s\"\nhttp = \"2s\"\n\
         [network.dc-overrides]\n2 = [\"{dc}\"]\n{sections}",
        alice().to_hex()
    )
}

/// A list section (`blocklist` or `allowlist`) with these sources.
fn section(list: &str, sources: &[&str], update_each: &str) -> String {
    let urls: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[defense.{list}]\nenabled = true\nurls = [{}]\nupdate-each = \"{update_each}\"\n",
        urls.join(", ")
    )
}

/// A list file with `body`, unique to this test.
fn list_file(test: &str, body: &str) -> TempFile {
    TempFile::new(&format!("mtg-lists-e2e-{test}-"), "list.netset", body)
}

/// A full session from `source`: FakeTLS handshake, then `req_pq_multi` answered by the DC.
fn served(proxy: SocketAddr, source: &str) -> bool {
    let options = from(source);
    block_on(async move {
        let mut client = ProxyClient::connect_ee_with(proxy, &alice(), 2, &options).await?;
        client.req_pq().await
    })
    .is_ok()
}

/// What the proxy answers a valid hello from `source` before closing.
fn answer(proxy: SocketAddr, source: &str) -> Answer {
    let options = from(source);
    block_on(async move { ProxyClient::hello_answer(proxy, &alice(), &options).await })
        .unwrap_or_else(|e| panic!("hello from {source}: {e}"))
}

/// Refused: closed (cleanly or by reset) with not one byte sent.
fn refused(proxy: SocketAddr, source: &str) -> bool {
    answer(proxy, source).bytes.is_empty()
}

/// Asks up to 50 times, 100 ms apart, until `source` gets the `want` verdict.
fn eventually_refused(proxy: SocketAddr, source: &str, want: bool) -> bool {
    for _ in 0..50 {
        if refused(proxy, source) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_blocklisted_client_is_closed_unanswered_while_others_get_a_full_session() {
    let dc = FakeDc::start(DcMode::Telegram);
    // The malformed line is skipped (mtg would stop reading the file there).
    let file = list_file("block", "# test list\nnot-an-ip\n127.0.0.2 # the blocked one\n");
    let sections = section("blocklist", &[file.to_str().unwrap()], "6h")
        + "[stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\n";
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &sections));

    let blocked = answer(proxy.addr(), "127.0.0.2");
    assert_eq!(blocked.bytes, Vec::<u8>::new(), "a blocklisted client must get no byte");
    assert_eq!(dc.connections(), 0);
    assert!(served(proxy.addr(), "127.0.0.1"));
    assert!(served(proxy.addr(), "127.0.0.3"));
    assert_eq!(dc.req_pq_nonces().len(), 2, "both served clients reached the DC");
    // The same valid hello from a served address gets the server flight.
    let unblocked = answer(proxy.addr(), "127.0.0.1");
    assert!(unblocked.bytes.starts_with(&[0x16, 0x03, 0x03]), "ServerHello record expected");
    // The list's size and its one refusal are in the metrics.
    let metrics = proxy.metrics().expect("prometheus is enabled");
    let (status, text) = mtg_tests::api_client::request(metrics, "GET", "/", None, "");
    assert_eq!(status, 200, "{text}");
    assert!(text.lines().any(|l| l == "mtg_iplist_size{ip_list=\"blocklist\"} 1"), "{text}");
    assert!(text.lines().any(|l| l == "mtg_ip_blocklisted_total{ip_list=\"blocklist\"} 1"), "{text}");
}

#[test]
fn an_allowlist_serves_only_listed_clients_from_the_first_connection() {
    let dc = FakeDc::start(DcMode::Telegram);
    let file = list_file("allow", "127.0.0.1/32\n");
    let sections = section("allowlist", &[file.to_str().unwrap()], "6h");
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &sections));

    // Loaded before the listener accepts: the very first client is already served.
    assert!(served(proxy.addr(), "127.0.0.1"));
    assert!(refused(proxy.addr(), "127.0.0.2"));
    assert!(refused(proxy.addr(), "127.0.0.3"));
    assert_eq!(dc.req_pq_nonces().len(), 1);
}

#[test]
fn a_url_list_refreshes_and_a_failed_refresh_keeps_the_previous_list() {
    let dc = FakeDc::start(DcMode::Telegram);
    let server = ListServer::start(Reply::List("127.0.0.3\n".into()));
    let sections = section("blocklist", &[&server.url()], "1s");
    // A child process, so the test can read which refreshes the proxy has completed.
    let port = mtg_tests::config_text::closed_port().to_string();
    let text = config(dc.addr(), &sections).replacen("127.0.0.1:1", &port, 1);
    let proxy = ProxyProcess::start(BIN, &text, &Launch::default());
    assert_eq!(server.requests(), 1, "loaded once before listening");
    assert!(served(proxy.addr(), "127.0.0.2"));
    assert!(refused(proxy.addr(), "127.0.0.3"));

    // The served list changes: the next refresh flips both verdicts.
    server.set(Reply::List("127.0.0.2\n".into()));
    assert!(server.wait_requests(2, Duration::from_secs(10)), "no refresh within 10 s");
    assert!(eventually_refused(proxy.addr(), "127.0.0.2", true), "127.0.0.2 is still served");
    assert!(served(proxy.addr(), "127.0.0.3"));

    // Error answers, then hang-ups: two failed refreshes each, the list stays.
    for failure in [Reply::Status(500), Reply::HangUp] {
        let seen = server.requests();
        server.set(failure.clone());
        assert!(server.wait_requests(seen + 2, Duration::from_secs(10)), "no refresh after {failure:?}");
        assert!(refused(proxy.addr(), "127.0.0.2"), "list lost after {failure:?}");
        assert!(served(proxy.addr(), "127.0.0.3"));
    }

    // The server goes away (connections refused): still the same list after two refreshes
    // that failed, each seen completed in the log.
    const FAILED: &str = "sources_failed=1";
    let failed_before = proxy.count_lines(FAILED);
    drop(server);
    let refreshed = proxy.wait_for_lines(FAILED, failed_before + 2, Duration::from_secs(20));
    assert!(refreshed.is_some(), "no two failed refreshes within 20 s:\n{}", proxy.log());
    assert!(refused(proxy.addr(), "127.0.0.2"));
    assert!(served(proxy.addr(), "127.0.0.1"));
}

#[test]
fn behind_a_proxy_protocol_listener_the_header_address_is_checked() {
    let dc = FakeDc::start(DcMode::Telegram);
    let file = list_file("proxied", "198.51.100.0/24\n");
    let sections = section("blocklist", &[file.to_str().unwrap()], "6h");
    let text =
        config(dc.addr(), &sections).replacen("[secrets]", "proxy-protocol-listener = true\n[secrets]", 1);
    let proxy = ProxyUnderTest::start(&text);
    let behind = |client: &str| EeOptions {
        source: Some("127.0.0.2".parse().unwrap()),
        preamble: format!("PROXY TCP4 {client} 203.0.113.9 40000 443\r\n").into_bytes(),
        ..EeOptions::default()
    };

    // The TCP peer (127.0.0.2) is not listed; the address in the header decides.
    let addr = proxy.addr();
    let options = behind("198.51.100.7");
    let blocked = block_on(async move { ProxyClient::hello_answer(addr, &alice(), &options).await }).unwrap();
    assert_eq!(blocked.bytes, Vec::<u8>::new());
    let options = behind("192.0.2.7");
    let session = block_on(async move {
        let mut client = ProxyClient::connect_ee_with(addr, &alice(), 2, &options).await?;
        client.req_pq().await
    });
    assert!(session.is_ok(), "{session:?}");
}
