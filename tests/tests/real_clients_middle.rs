//! Real third-party clients (TDLib via `tdjson`, Telethon) through the proxy in middle-proxy
//! mode (issue 13): a tagged user, the proxy's middle-proxy snapshot pointing DC 2 (and the
//! default) at a fake middle proxy. Each test runs in a loopback-only network namespace (see
//! `mtg_tests::netns`) on the runtime this binary was built with
//! (`cargo test -p mtg-tests --test real_clients_middle`; add
//! `--no-default-features --features smol` for smol). Needs root and
//! `pip install -r tests/clients/requirements.txt`.

use std::time::Duration;

use mtg_proto::Secret;
use mtg_proto::middle::rpc;
use mtg_tests::config_text::OFFLINE_MIDDLE_PROXY;
use mtg_tests::fake_middle::{FakeMiddle, Request};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::{DcMode, FakeDc, netns, real_clients};

const HOST: &str = "front.example";
const GLOBAL_TAG: &str = "0123456789abcdef0123456789abcdef";
const BOB_TAG: &str = "fedcba9876543210fedcba9876543210";
const WAIT: Duration = Duration::from_secs(10);

/// What every request from a tagged client carries.
const TAGGED: u32 = rpc::FLAG_HAS_AD_TAG | rpc::FLAG_MAGIC | rpc::FLAG_EXTMODE2;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tag_bytes(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Alice (`ee`, the global tag only).
fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

/// Bob (`ee`, his own tag in `[secret-ad-tags]`).
fn bob() -> Secret {
    Secret::fake_tls([0x22; 16], HOST).unwrap()
}

/// Carol (`dd`, for Telethon in secured mode).
fn carol() -> Secret {
    Secret::secured(*b"\xfe\xdc\xba\x98\x76\x54\x32\x10\xfe\xdc\xba\x98\x76\x54\x32\x10").unwrap()
}

fn require_clients() {
    if let Err(e) = real_clients::check_installed() {
        panic!("real clients not installed: {e}");
    }
}

/// The proxy (one user `name` = `secret`, the global tag, bob's own tag when he is the user,
/// every DC overridden to the fake DC, `[middle-proxy]` offline), the fake DC and the fake
/// middle proxy the published snapshot names for DC 2 and the default.
struct Setup {
    proxy: ProxyUnderTest,
    dc: FakeDc,
    middle: FakeMiddle,
}

fn setup(name: &str, secret: &Secret, secured: bool) -> Setup {
    let dc = FakeDc::start(DcMode::Telegram);
    let middle = FakeMiddle::start();
    let dcs: String = (1..=5).map(|n| format!("{n} = [\"{}\"]\n", dc.addr())).collect();
    let own_tag =
        if name == "bob" { format!("[secret-ad-tags]\nbob = \"{BOB_TAG}\"\n") } else { String::new() };
    let config = format!(
        "bind-to = \"127.0.0.1:1\"\nad-tag = \"{GLOBAL_TAG}\"\n[secrets]\n{name} = \"{}\"\n{own_tag}\
         [network.dc-overrides]\n{dcs}[secured]\nenabled = {secured}\n{OFFLINE_MIDDLE_PROXY}",
        secret.to_hex()
    );
    let proxy = ProxyUnderTest::start(&config);
    proxy.route_to_middle(middle.addr());
    Setup { proxy, dc, middle }
}

/// The one line a closing note can quote.
fn print_request(client: &str, req: &Request) {
    println!(
        "{client} via fake middle proxy: flags {:#010x}, ad tag {}, client {}, ours {}, packet {} bytes, \
         unencrypted constructor {}",
        req.flags,
        req.ad_tag.map(|t| hex(&t)).unwrap_or_else(|| "none".to_owned()),
        req.client,
        req.ours,
        req.packet.len(),
        req.packet
            .get(20..24)
            .filter(|_| req.packet[..8] == [0; 8])
            .map(|c| format!("{:#010x}", u32::from_le_bytes(c.try_into().unwrap())))
            .unwrap_or_else(|| "none (encrypted)".to_owned())
    );
}

/// Checks every request against the tag and flags a tagged intermediate-transport client sends.
fn check_requests(requests: &[Request], tag: &str, proxy_port: u16) {
    assert!(!requests.is_empty(), "at least one RPC_PROXY_REQ");
    for req in requests {
        assert_eq!(req.flags & TAGGED, TAGGED, "HAS_AD_TAG | MAGIC | EXTMODE2 in {:#x}", req.flags);
        assert_eq!(
            req.flags & rpc::FLAG_INTERMEDIATE,
            rpc::FLAG_INTERMEDIATE,
            "intermediate in {:#x}",
            req.flags
        );
        assert_eq!(req.flags & rpc::FLAG_PAD, 0, "PAD is never sent: {:#x}", req.flags);
        assert_eq!(req.ad_tag, Some(tag_bytes(tag)), "the configured tag");
        assert!(req.client.ip().is_loopback(), "the client's address {}", req.client);
        assert_eq!(req.ours.port(), proxy_port, "our client-facing port");
    }
    let first = &requests[0];
    assert_eq!(first.flags & rpc::FLAG_NOT_ENCRYPTED, rpc::FLAG_NOT_ENCRYPTED, "the first one is req_pq");
    assert_eq!(u32::from_le_bytes(first.packet[20..24].try_into().unwrap()), 0xbe7e_8ef1, "req_pq_multi");
}

fn tdlib_through_the_middle_proxy(name: &str, secret: &Secret, tag: &str) {
    require_clients();
    let s = setup(name, secret, false);
    let result = real_clients::tdlib_ping(s.proxy.addr(), secret, Duration::from_secs(15));
    println!("tdlib result: {}", result.json);
    assert!(s.middle.wait_until(WAIT, |seen| !seen.requests.is_empty() && !seen.res_pq_nonces.is_empty()));
    let seen = s.middle.seen();
    for req in &seen.requests {
        print_request(&format!("tdlib ({name})"), req);
    }
    check_requests(&seen.requests, tag, s.proxy.addr().port());
    assert!(result.ok(), "TDLib ping failed: {}\n{}", result.json, result.stderr);
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
}

#[test]
fn tdlib_pings_through_the_middle_proxy_with_the_global_tag() {
    if !netns::enter("tdlib_pings_through_the_middle_proxy_with_the_global_tag") {
        return;
    }
    tdlib_through_the_middle_proxy("alice", &alice(), GLOBAL_TAG);
}

#[test]
fn tdlib_pings_through_the_middle_proxy_with_a_per_user_tag() {
    if !netns::enter("tdlib_pings_through_the_middle_proxy_with_a_per_user_tag") {
        return;
    }
    tdlib_through_the_middle_proxy("bob", &bob(), BOB_TAG);
}

#[test]
fn telethon_reaches_the_middle_proxy_with_the_tag() {
    if !netns::enter("telethon_reaches_the_middle_proxy_with_the_tag") {
        return;
    }
    require_clients();
    let s = setup("carol", &carol(), true);
    let result = real_clients::telethon_dd(s.proxy.addr(), &carol(), 2, Duration::from_secs(8));
    println!("telethon result: {}", result.json);
    assert!(s.middle.wait_until(WAIT, |seen| !seen.requests.is_empty() && !seen.res_pq_nonces.is_empty()));
    let seen = s.middle.seen();
    for req in &seen.requests {
        print_request("telethon (carol)", req);
    }
    check_requests(&seen.requests, GLOBAL_TAG, s.proxy.addr().port());
    assert_eq!(seen.res_pq_nonces.len(), 1, "the fake answered Telethon's req_pq_multi with resPQ");
    // Telethon read that resPQ: it fails only at the next step, on the fake's key fingerprint.
    assert!(
        result.stdout.contains("could not find a valid key for fingerprints"),
        "Telethon parsed the resPQ: {}\n{}",
        result.json,
        result.stderr
    );
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
}
