//! The proxy's first flight looks like its fronting site's (issue 18), end to end on the
//! runtime this binary was built with, each test in a loopback-only network namespace.
//!
//! ```text
//! site (OpenSSL s_server | rustls) ◄── learning probes ── proxy (learn-from-fronting = true)
//! hello (real captures re-signed for a user, our encoder's two kinds)
//!    ├─► site  ─► its flight ─┐
//!    └─► proxy ─► its flight ─┴─► same ServerHello layout, same record types (the site's
//!                                 ApplicationData records merged into one), total within 10 %
//! ```
//! Then a FakeTLS session through the proxy to a fake DC still relays bytes exactly, and a
//! proxy whose learning fails (nothing listens at the fronting port) warns once and serves.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mtg_app::flight_learn::PROBES_PER_KIND;
use mtg_proto::Secret;
use mtg_proto::client::{DEFAULT_HELLO_LEN, FakeTlsHello};
use mtg_proto::doppel::HelloKind;
use mtg_proto::tls::client_hello::RANDOM_LEN;
use mtg_proto::tls::server_flight::ObservedFlight;
use mtg_tests::config_text::{numbered_user, pattern, users_config};
use mtg_tests::flight_capture::{
    CLIENT_RANDOM_OFFSET, CapturedFlight, capture_flight, flight_verifies, summary,
};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::proxy_under_test::{ProxyUnderTest, RUNTIME};
use mtg_tests::runtime::block_on;
use mtg_tests::tls_site::OpensslSite;
use mtg_tests::{DcMode, FakeDc, FrontingSite, ProxyClient, netns};
use rand::RngCore;

/// The SNI of the captured hellos: the test user's secret and the sites' certificates name it.
const HOST: &str = "storage.googleapis.com";
/// How long learning may take (two kinds, [`PROBES_PER_KIND`] probes each, each read until
/// the site is quiet for 500 ms).
const LEARN_TIMEOUT: Duration = Duration::from_secs(60);
/// The proxy's flight may differ from the site's by this share of the site's bytes.
const TOLERANCE: f64 = 0.10;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");

fn user() -> Secret {
    numbered_user(1, HOST)
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as u32
}

/// A hello to send to both, and how to check the proxy's answer to it.
struct Hello {
    name: String,
    bytes: Vec<u8>,
    client_random: [u8; RANDOM_LEN],
    encoder: Option<FakeTlsHello>,
}

/// The real Telegram ClientHellos the core's tests keep (`mtg-proto/tests/data/faketls`,
/// `client-hello-ok-*.json`, from 9seconds/mtg), each re-signed for [`user`] now, with a
/// fresh session id (the proxy's anti-replay key, which two captures share).
fn captured_hellos() -> Vec<Hello> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtg-proto/tests/data/faketls");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("client-hello-ok-")))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no captures in {}", dir.display());
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("read a capture");
            let json: serde_json::Value = serde_json::from_str(&text).expect("a capture is JSON");
            assert_eq!(json["host"], HOST, "{}: SNI", path.display());
            let full = json["full"].as_str().expect("a `full` field");
            let mut bytes = base64::engine::general_purpose::STANDARD.decode(full).expect("base64 `full`");
            let sid_at = CLIENT_RANDOM_OFFSET + RANDOM_LEN;
            let sid_len = usize::from(bytes[sid_at]);
            rand::rng().fill_bytes(&mut bytes[sid_at + 1..sid_at + 1 + sid_len]);
            let client_random = mtg_tests::flight_capture::resign_hello(&mut bytes, &user(), unix_now())
                .unwrap_or_else(|| panic!("{}: not a whole ClientHello", path.display()));
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("capture").to_owned();
            Hello { name, bytes, client_random, encoder: None }
        })
        .collect()
}

/// Our encoder's hellos of both kinds, signed for [`user`].
fn encoder_hellos() -> Vec<Hello> {
    HelloKind::ALL
        .iter()
        .map(|&kind| {
            let mut bytes = Vec::new();
            let hello = FakeTlsHello::build_kind(
                &user(),
                HOST,
                unix_now(),
                DEFAULT_HELLO_LEN,
                kind,
                &mut rand::rng(),
                &mut bytes,
            )
            .expect("an ee secret builds a hello");
            Hello {
                name: format!("encoder-{}", kind.name()),
                bytes,
                client_random: *hello.random(),
                encoder: Some(hello),
            }
        })
        .collect()
}

/// A proxy for [`user`] learning from the site at `front_port`, DC 2 at `dc`.
fn learning_config(dc: SocketAddr, front_port: u16) -> String {
    users_config(
        &["alice"],
        HOST,
        dc,
        front_port,
        "[network.timeout]\nhandshake = \"5s\"\nidle = \"30s\"\ntcp = \"2s\"\n\
         [defense.doppelganger]\nlearn-from-fronting = true\n",
    )
}

/// Waits until learning has [`PROBES_PER_KIND`] observations of both kinds.
fn wait_learned(proxy: &ProxyUnderTest) {
    let started = Instant::now();
    loop {
        let flights = proxy.doppelganger().flights();
        let counts: Vec<usize> = HelloKind::ALL.iter().map(|&k| flights.observations(k)).collect();
        if counts.iter().all(|&n| n >= PROBES_PER_KIND) {
            eprintln!("[{RUNTIME}] learned after {:?}: observations {counts:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < LEARN_TIMEOUT,
            "learning did not finish in {LEARN_TIMEOUT:?}: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The record types of `flight` with consecutive ApplicationData records merged into one.
fn merged_types(flight: &ObservedFlight) -> Vec<u8> {
    let mut types: Vec<u8> = flight.record_types().collect();
    types.dedup_by(|a, b| *a == 0x17 && *b == 0x17);
    types
}

/// Sends every hello to the site and to the proxy and compares the two flights.
fn compare_flights(site_name: &str, site: SocketAddr, proxy: SocketAddr) {
    let mut hellos = captured_hellos();
    hellos.extend(encoder_hellos());
    for hello in &hellos {
        let of_site = capture_flight(site, &hello.bytes)
            .unwrap_or_else(|e| panic!("{site_name} answering {}: {e}", hello.name));
        let of_proxy = capture_flight(proxy, &hello.bytes)
            .unwrap_or_else(|e| panic!("the proxy answering {}: {e}", hello.name));
        check_pair(site_name, hello, &of_site, &of_proxy);
    }
}

fn check_pair(site_name: &str, hello: &Hello, site: &CapturedFlight, proxy: &CapturedFlight) {
    let (s, p) = (&site.flight, &proxy.flight);
    let alert = if site.close_alert { " (then its close alert, 19 bytes, left out)" } else { "" };
    eprintln!(
        "[{RUNTIME}] {site_name} / {}:\n  site : {}{alert}\n  proxy: {}",
        hello.name,
        summary(s),
        summary(p)
    );
    assert!(
        !proxy.close_alert,
        "{site_name}, hello {}: the proxy sends no record after its flight",
        hello.name
    );
    let what = format!("{site_name}, hello {}", hello.name);
    assert_eq!(p.cipher_suite, s.cipher_suite, "{what}: cipher suite");
    assert_eq!(p.extensions.as_slice(), s.extensions.as_slice(), "{what}: ServerHello extension order");
    assert_eq!(p.key_share, s.key_share, "{what}: key share group and length");
    assert!(s.change_cipher_spec && p.change_cipher_spec, "{what}: both send a ChangeCipherSpec");
    assert_eq!(p.encrypted.as_slice().len(), 1, "{what}: the proxy sends exactly one ApplicationData record");
    assert_eq!(merged_types(p), merged_types(s), "{what}: record types (the site's encrypted ones merged)");
    let (site_len, proxy_len) = (f64::from(s.wire_len()), f64::from(p.wire_len()));
    assert!(
        (proxy_len - site_len).abs() <= TOLERANCE * site_len,
        "{what}: the proxy's flight takes {proxy_len} bytes, the site's {site_len} (more than 10 % apart)"
    );
    assert!(
        flight_verifies(&proxy.bytes, &user(), &hello.client_random),
        "{what}: the proxy's flight carries the user's digest"
    );
    if let Some(encoder) = &hello.encoder {
        let verified = encoder.verify_flight(&proxy.bytes);
        assert!(matches!(verified, Ok(Some(_))), "{what}: the encoder verifies the flight: {verified:?}");
    }
}

/// A FakeTLS session through the proxy to DC 2 (an echo DC) relays 256 KiB both ways exactly.
fn session_relays_exactly(proxy: SocketAddr) {
    let payload = pattern(256 * 1024, 18);
    let echoed = block_on({
        let payload = payload.clone();
        async move {
            let mut client = ProxyClient::connect_ee(proxy, &user(), 2).await?;
            client.send(&payload).await?;
            let got = client.recv_exact(payload.len()).await?;
            client.shutdown().await?;
            std::io::Result::Ok(got)
        }
    })
    .expect("a FakeTLS session through the proxy");
    assert!(echoed == payload, "the echoed bytes differ from the ones sent");
}

#[test]
fn the_flight_follows_an_openssl_site() {
    if !netns::enter("the_flight_follows_an_openssl_site") {
        return;
    }
    let site = OpensslSite::start(HOST);
    let dc = FakeDc::start(DcMode::Echo);
    let proxy = ProxyUnderTest::start(&learning_config(dc.addr(), site.addr().port()));
    wait_learned(&proxy);
    compare_flights("openssl s_server", site.addr(), proxy.addr());
    session_relays_exactly(proxy.addr());
}

#[test]
fn the_flight_follows_a_rustls_site() {
    if !netns::enter("the_flight_follows_a_rustls_site") {
        return;
    }
    let site = FrontingSite::start(HOST);
    let dc = FakeDc::start(DcMode::Echo);
    let proxy = ProxyUnderTest::start(&learning_config(dc.addr(), site.addr().port()));
    wait_learned(&proxy);
    compare_flights("rustls", site.addr(), proxy.addr());
    session_relays_exactly(proxy.addr());
}

#[test]
fn learning_that_fails_warns_once_and_keeps_serving() {
    if !netns::enter("learning_that_fails_warns_once_and_keeps_serving") {
        return;
    }
    let dc = FakeDc::start(DcMode::Echo);
    let closed = mtg_tests::config_text::closed_port();
    // A short raid-each, so that a second failing round happens while the test watches.
    let config = users_config(
        &["alice"],
        HOST,
        dc.addr(),
        closed.port(),
        "[defense.doppelganger]\nlearn-from-fronting = true\nraid-each = \"1s\"\n",
    );
    let launch = Launch { rust_log: Some("info,mtg_app=debug".to_owned()), ..Launch::default() };
    let proxy = ProxyProcess::start(BIN, &config, &launch);
    let warning = "the fake flight keeps its last shape";
    proxy
        .wait_for_line(warning, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no learning warning:\n{}", proxy.log()));
    // Two later rounds failing again are debug lines, not warnings.
    proxy
        .wait_for_lines("still cannot learn the fronting site's first flight", 2, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no later failing rounds:\n{}", proxy.log()));
    assert_eq!(proxy.count_lines(warning), 1, "the failure is warned about once:\n{}", proxy.log());

    for hello in encoder_hellos() {
        let answer = capture_flight(proxy.addr(), &hello.bytes)
            .unwrap_or_else(|e| panic!("the proxy answering {}: {e}", hello.name));
        eprintln!("[{RUNTIME}] unlearned proxy / {}: {}", hello.name, summary(&answer.flight));
        assert_eq!(answer.flight.encrypted.as_slice().len(), 1, "one ApplicationData record");
        let encoder = hello.encoder.as_ref().expect("an encoder hello");
        assert!(matches!(encoder.verify_flight(&answer.bytes), Ok(Some(_))), "the flight verifies");
    }
    session_relays_exactly(proxy.addr());
}
