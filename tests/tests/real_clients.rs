//! Real third-party clients (TDLib via `tdjson`, Telethon), each run in a loopback-only network
//! namespace (see `mtg_tests::netns`). Needs root and
//! `pip install -r tests/clients/requirements.txt`.
//!
//! The first two tests pin down what the clients send first, with a silent recorder in place
//! of the proxy; the others run them through the real proxy to the fake DC, one through a
//! proxy whose first flight is shaped after an OpenSSL fronting site's, the last through a
//! proxy in fast mode.

use std::time::Duration;

use mtg_app::flight_learn::{self, PROBES_PER_KIND};
use mtg_proto::doppel::HelloKind;
use mtg_proto::obfs2::{self, TAG_PADDED_INTERMEDIATE};
use mtg_proto::{
    HandshakeConfig, HandshakeContext, HelloStep, NoReplayCheck, Secret, ServerHandshake, UserTable,
};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::recorder::{self, Recorder};
use mtg_tests::tls_site::OpensslSite;
use mtg_tests::{DcMode, FakeDc, mtproto, netns, real_clients};

const HOST: &str = "front.example";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ee() -> Secret {
    Secret::fake_tls(*b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef", HOST).unwrap()
}

fn dd() -> Secret {
    Secret::secured(*b"\xfe\xdc\xba\x98\x76\x54\x32\x10\xfe\xdc\xba\x98\x76\x54\x32\x10").unwrap()
}

fn key(secret: &Secret) -> [u8; 16] {
    secret.to_bytes()[1..17].try_into().unwrap()
}

/// A proxy config for one user whose DCs all point at the fake DC.
fn config(secret: &Secret, dc: std::net::SocketAddr, secured: bool) -> String {
    let dcs: String = (1..=5).map(|n| format!("{n} = [\"{dc}\"]\n")).collect();
    format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\nuser = \"{}\"\n[network.dc-overrides]\n{dcs}[secured]\nenabled = {secured}\n",
        secret.to_hex()
    )
}

fn require_clients() {
    if let Err(e) = real_clients::check_installed() {
        panic!("real clients not installed: {e}");
    }
}

#[test]
fn tdlib_sends_a_faketls_hello_that_mtg_proto_accepts() {
    if !netns::enter("tdlib_sends_a_faketls_hello_that_mtg_proto_accepts") {
        return;
    }
    require_clients();
    let rec = Recorder::start();
    let result = real_clients::tdlib_ping(rec.addr(), &ee(), Duration::from_secs(5));
    println!("tdlib result: {}", result.json);
    let first = rec.wait_first(Duration::from_secs(10)).expect("TDLib connected to the proxy port");
    let hello = &first.bytes;
    let record_len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    println!(
        "tdlib first bytes: {} bytes, record payload {record_len}, first 16 {}, sni {:?}, extensions {:04x?}",
        hello.len(),
        hex(&hello[..16]),
        recorder::hello_sni(hello),
        recorder::hello_extensions(hello),
    );
    assert_eq!(&hello[..3], &[0x16, 0x03, 0x01], "a TLS handshake record");
    assert_eq!(hello.len(), 5 + record_len, "one record, nothing after it before the answer");
    assert_eq!(recorder::hello_sni(hello).unwrap(), [HOST]);

    let users = UserTable::new([&ee()]);
    let hs = ServerHandshake::new(HandshakeConfig::default());
    let mut ctx = HandshakeContext {
        users: &users,
        replay: &mut NoReplayCheck,
        now: first.first_at.unwrap(),
        hint: None,
        full_search: true,
    };
    let step = hs.handle_input(hello, &mut ctx);
    assert!(matches!(step, HelloStep::Authenticated(_)), "mtg-proto step on TDLib's hello: {step:?}");
}

#[test]
fn telethon_sends_a_dd_frame_then_req_pq_multi() {
    if !netns::enter("telethon_sends_a_dd_frame_then_req_pq_multi") {
        return;
    }
    require_clients();
    let rec = Recorder::start();
    let result = real_clients::telethon_dd(rec.addr(), &dd(), 4, Duration::from_secs(6));
    println!("telethon result: {}", result.json);
    let first = rec.wait_first(Duration::from_secs(10)).expect("Telethon connected to the proxy port");
    let bytes = &first.bytes;
    println!("telethon first bytes: {} bytes, first 16 {}", bytes.len(), hex(&bytes[..16]));
    assert!(bytes.len() > 64, "frame then req_pq_multi");
    let frame: [u8; 64] = bytes[..64].try_into().unwrap();
    let (header, mut cipher) = obfs2::respond(&frame, Some(&key(&dd())));
    println!("telethon frame: tag {}, dc {}", hex(&header.tag), header.dc);
    assert_eq!(header.tag, TAG_PADDED_INTERMEDIATE);
    assert_eq!(header.dc, 4);
    let mut rest = bytes[64..].to_vec();
    cipher.decrypt(&mut rest);
    let f = mtproto::split_frame(&rest).unwrap().expect("a whole frame");
    println!(
        "telethon first packet: frame payload {} bytes (with padding), total {}",
        f.payload.len(),
        rest.len()
    );
    let msg = mtproto::parse_unencrypted(f.payload).unwrap();
    mtproto::parse_req_pq_multi(msg.body).expect("req_pq_multi");
}

#[test]
fn tdlib_pings_through_the_proxy() {
    if !netns::enter("tdlib_pings_through_the_proxy") {
        return;
    }
    require_clients();
    let dc = FakeDc::start(DcMode::Telegram);
    let proxy = ProxyUnderTest::start(&config(&ee(), dc.addr(), false));
    let result = real_clients::tdlib_ping(proxy.addr(), &ee(), Duration::from_secs(15));
    println!("tdlib result: {}", result.json);
    for c in dc.snapshot() {
        println!(
            "dc connection: header {:?}, req_pq_multi seen {}, bytes received {}, sent {}",
            c.header,
            c.req_pq_nonces.len(),
            c.bytes_received,
            c.bytes_sent
        );
        let mut at = 0;
        while let Ok(Some(f)) = mtproto::split_frame(&c.received[at..]) {
            let body = mtproto::parse_unencrypted(f.payload).map(|m| m.body.len());
            println!(
                "  frame: {} payload bytes (quick-ack {}), unencrypted body {body:?}",
                f.payload.len(),
                f.quick_ack
            );
            at += f.consumed;
        }
    }
    assert!(!dc.req_pq_nonces().is_empty(), "TDLib's req_pq_multi reached the fake DC");
    assert!(result.ok(), "TDLib ping failed: {}\n{}", result.json, result.stderr);
}

#[test]
fn telethon_reaches_the_fake_dc_through_the_proxy() {
    if !netns::enter("telethon_reaches_the_fake_dc_through_the_proxy") {
        return;
    }
    require_clients();
    let dc = FakeDc::start(DcMode::Telegram);
    let proxy = ProxyUnderTest::start(&config(&dd(), dc.addr(), true));
    let result = real_clients::telethon_dd(proxy.addr(), &dd(), 2, Duration::from_secs(8));
    println!("telethon result: {}", result.json);
    assert_eq!(dc.dc_ids(), [2]);
    assert_eq!(dc.req_pq_nonces().len(), 1, "Telethon's req_pq_multi reached the fake DC");
}

#[test]
fn tdlib_and_telethon_connect_through_a_proxy_shaped_after_an_openssl_site() {
    if !netns::enter("tdlib_and_telethon_connect_through_a_proxy_shaped_after_an_openssl_site") {
        return;
    }
    require_clients();
    let dc = FakeDc::start(DcMode::Telegram);
    let site = OpensslSite::start(HOST);
    let dcs: String = (1..=5).map(|n| format!("{n} = [\"{}\"]\n", dc.addr())).collect();
    let proxy = ProxyUnderTest::start(&format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\ntdlib = \"{}\"\ntelethon = \"{}\"\n[domain-fronting]\n\
         host = \"127.0.0.1\"\nport = {}\n[network.dc-overrides]\n{dcs}[secured]\nenabled = true\n\
         [defense.doppelganger]\nlearn-from-fronting = true\n",
        ee().to_hex(),
        dd().to_hex(),
        site.addr().port()
    ));
    // Learning is done once both kinds of hello have their probes' flights.
    let started = std::time::Instant::now();
    loop {
        let flights = proxy.doppelganger().flights();
        let counts: Vec<usize> = HelloKind::ALL.iter().map(|&k| flights.observations(k)).collect();
        if counts.iter().all(|&n| n >= PROBES_PER_KIND) {
            println!(
                "learned after {:?}: {}",
                started.elapsed(),
                flight_learn::describe(&flights).join("; ")
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "learning did not finish: {counts:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    tdlib_and_telethon_reach(&proxy, &dc);
}

/// TDLib (`ee`) pings through `proxy`, then Telethon (`dd`) reaches the fake DC `dc` through it;
/// returns Telethon's result.
fn tdlib_and_telethon_reach(proxy: &ProxyUnderTest, dc: &FakeDc) -> real_clients::ClientResult {
    let result = real_clients::tdlib_ping(proxy.addr(), &ee(), Duration::from_secs(15));
    println!("tdlib result: {}", result.json);
    assert!(!dc.req_pq_nonces().is_empty(), "TDLib's req_pq_multi reached the fake DC");
    assert!(result.ok(), "TDLib ping failed: {}\n{}", result.json, result.stderr);

    let before = dc.req_pq_nonces().len();
    let result = real_clients::telethon_dd(proxy.addr(), &dd(), 2, Duration::from_secs(8));
    println!("telethon result: {}", result.json);
    assert!(dc.req_pq_nonces().len() > before, "Telethon's req_pq_multi reached the fake DC");
    result
}

#[test]
fn tdlib_and_telethon_connect_through_a_fast_mode_proxy() {
    if !netns::enter("tdlib_and_telethon_connect_through_a_fast_mode_proxy") {
        return;
    }
    require_clients();
    let dc = FakeDc::start(DcMode::Telegram);
    let dcs: String = (1..=5).map(|n| format!("{n} = [\"{}\"]\n", dc.addr())).collect();
    let proxy = ProxyUnderTest::start(&format!(
        "bind-to = \"127.0.0.1:1\"\nfast-mode = true\n[secrets]\ntdlib = \"{}\"\ntelethon = \"{}\"\n\
         [network.dc-overrides]\n{dcs}[secured]\nenabled = true\n",
        ee().to_hex(),
        dd().to_hex(),
    ));

    // TDLib's ping succeeds only if it reads the fake DC's resPQ, which reached it as the DC
    // encrypted it (in TLS records).
    let result = tdlib_and_telethon_reach(&proxy, &dc);
    // Telethon read the resPQ (its nonce checked out in step 1) and stopped at step 2: the
    // fake DC's key fingerprint is no real Telegram key.
    let tail = result.json["log_tail"].to_string();
    assert!(tail.contains("Step 2 could not find a valid key"), "Telethon did not read the resPQ: {tail}");
}
