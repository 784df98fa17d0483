//! Fast mode (`fast-mode = true`, issue 17) end to end over loopback, on the runtime this binary
//! was built with (`cargo test -p mtg-tests --test fast_mode_e2e` = tokio, add
//! `--no-default-features --features smol` for smol): byte-exact relay both ways for FakeTLS
//! and `dd` clients, with doppelganger shaping, across a reload, and tagged users through a
//! middle proxy (fast mode ignored, with one warning).
//!
//! That a session runs in fast mode is seen on the wire: the fake DC keeps the first bytes it
//! sent as encrypted ([`DcConnection::sent_head`]) and the client the first payload bytes it
//! received before decrypting them ([`ProxyClient::wire_head`]). In fast mode they are the
//! same bytes; without it the two legs carry unrelated ciphertexts.

use std::net::SocketAddr;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client::request;
use mtg_tests::client::ReceivedRecord;
use mtg_tests::config_text::{Timeouts, pattern, proxy_config};
use mtg_tests::fake_bootstrap::{Doc, FakeBootstrap};
use mtg_tests::fake_dc::{DcConnection, WIRE_HEAD, flood_byte};
use mtg_tests::fake_middle::{FakeMiddle, test_secret};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite, ProxyClient};

const HOST: &str = "front.example";
const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const TAG: &str = "0123456789abcdef0123456789abcdef";

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

fn dave() -> Secret {
    Secret::secured([0x22; 16]).unwrap()
}

/// Alice (`ee`) and dave (`dd`), DC 2 at `dc`, `top` keys, `tables` appended.
fn config(dc: SocketAddr, front: &FrontingSite, top: &str, tables: &str) -> String {
    proxy_config(
        &[("alice", &alice()), ("dave", &dave())],
        &[(2, dc)],
        front.addr(),
        Timeouts::default(),
        top,
        &format!("[secured]\nenabled = true\n{tables}"),
    )
}

/// A connected client of `secret` (`ee` or `dd`).
async fn connect(proxy: SocketAddr, secret: &Secret) -> std::io::Result<ProxyClient> {
    match secret.kind() {
        mtg_proto::SecretKind::FakeTls => ProxyClient::connect_ee(proxy, secret, 2).await,
        mtg_proto::SecretKind::Secured => ProxyClient::connect_dd(proxy, secret, 2).await,
    }
}

/// The fake DC's connection `index` once it sent at least [`WIRE_HEAD`] bytes.
fn dc_head(dc: &FakeDc, index: usize) -> DcConnection {
    assert!(
        dc.wait_until(WAIT, |c| c.get(index).is_some_and(|c| c.sent_head.len() == WIRE_HEAD)),
        "DC connection {index} sent no {WIRE_HEAD} bytes"
    );
    dc.snapshot().swap_remove(index)
}

/// One echo session of `secret` moving `len` bytes each way, byte-exact; returns the client's
/// wire head.
fn echo_session(proxy: SocketAddr, secret: &Secret, len: usize, seed: u32) -> Vec<u8> {
    let secret = secret.clone();
    let payload = pattern(len, seed);
    let (echoed, head) = block_on({
        let payload = payload.clone();
        async move {
            let mut client = connect(proxy, &secret).await?;
            let echoed = client.echo(&payload).await?;
            std::io::Result::Ok((echoed, client.wire_head().to_vec()))
        }
    })
    .unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs from what was sent");
    head
}

#[test]
fn faketls_and_dd_clients_relay_byte_exact_both_ways_with_the_dc_bytes_passed_as_they_are() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, "fast-mode = true", ""));
    for (index, secret) in [alice(), dave()].iter().enumerate() {
        let len = 3 << 20;
        let head = echo_session(proxy.addr(), secret, len, index as u32);
        let conn = dc_head(&dc, index);
        assert_eq!(conn.bytes_received, len as u64, "client → DC byte count");
        assert_eq!(conn.received, pattern(len, index as u32), "client → DC bytes");
        assert_eq!(head, conn.sent_head, "{:?}: the client got the DC's bytes as they are", secret.kind());
    }
}

#[test]
fn without_fast_mode_the_legs_carry_different_bytes_and_a_reload_turns_it_on_for_new_sessions() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let api = "api-bind-to = \"127.0.0.1:1\"";
    std::fs::write(&path, config(dc.addr(), &front, api, "")).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    let addr = proxy.addr();

    // A live session started without fast mode.
    let (before_tx, before_rx) = std::sync::mpsc::channel::<()>();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let live = std::thread::spawn(move || {
        block_on(async move {
            let mut client = connect(addr, &alice()).await?;
            let first = client.echo(&pattern(100_000, 1)).await?;
            let _ = opened_tx.send(client.wire_head().to_vec());
            let _ = before_rx.recv();
            // After the reload, the same session keeps relaying as it started.
            let second = client.echo(&pattern(100_000, 2)).await?;
            std::io::Result::Ok((first, second))
        })
    });
    let old_head = opened_rx.recv_timeout(WAIT).expect("the first session relayed");
    assert_ne!(old_head, dc_head(&dc, 0).sent_head, "without fast mode the legs differ");

    std::fs::write(&path, config(dc.addr(), &front, &format!("{api}\nfast-mode = true"), "")).unwrap();
    let (status, body) = request(proxy.api().unwrap(), "POST", "/reload", None, "");
    assert_eq!(status, 200, "{body}");
    before_tx.send(()).unwrap();
    let (first, second) = live.join().unwrap().unwrap();
    assert_eq!((first, second), (pattern(100_000, 1), pattern(100_000, 2)), "the live session relays");

    for (index, secret) in [(1, alice()), (2, dave())] {
        let head = echo_session(addr, &secret, 200_000, 3);
        assert_eq!(head, dc_head(&dc, index).sent_head, "{:?}: new sessions run in fast mode", secret.kind());
    }
}

/// Connects alice, reads the whole flood of `total` bytes, checks its bytes, closes; returns
/// the records and the client's wire head.
fn download(proxy: &ProxyUnderTest, total: usize) -> (Vec<ReceivedRecord>, Vec<u8>) {
    let addr = proxy.addr();
    let (payload, records, head) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let payload = client.recv_exact(total).await?;
        client.shutdown().await?;
        std::io::Result::Ok((payload, client.records().to_vec(), client.wire_head().to_vec()))
    })
    .unwrap();
    assert!(payload.iter().enumerate().all(|(i, &b)| b == flood_byte(i as u64)), "flood bytes differ");
    assert_eq!(records.iter().map(|r| r.len).sum::<usize>(), total, "record payloads add up");
    (records, head)
}

#[test]
fn doppelganger_record_sizes_hold_in_fast_mode() {
    let total = 2 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        dc.addr(),
        &front,
        "fast-mode = true",
        "[defense.doppelganger]\ndrs = true\n",
    ));
    let (records, head) = download(&proxy, total);
    // The DRS schedule: 40 records of at most 1450 bytes, 20 of at most 4096, then full ones
    // (a record carries what the DC socket holds, up to the schedule's limit).
    for (i, r) in records.iter().enumerate() {
        let limit = match i + 1 {
            1..=40 => 1450,
            41..=60 => 4096,
            _ => 16379,
        };
        assert!(r.len <= limit, "record {} carries {}, the schedule allows {limit}", i + 1, r.len);
    }
    assert!(records.len() > 61 && records.iter().any(|r| r.len == 16379), "{} records", records.len());
    assert_eq!(head, dc_head(&dc, 0).sent_head, "the shaped session ran in fast mode");
}

#[test]
fn tagged_users_go_through_the_middle_proxy_with_one_warning_and_others_run_fast() {
    let dc = FakeDc::start(DcMode::Telegram);
    let middle = FakeMiddle::start();
    let server = FakeBootstrap::start(&[(2, middle.addr())]);
    server.set(Doc::Secret, 200, test_secret().as_bytes());
    let front = FrontingSite::start(HOST);
    let text = proxy_config(
        &[("alice", &alice()), ("dave", &dave())],
        &[(2, dc.addr())],
        front.addr(),
        Timeouts::default(),
        "fast-mode = true",
        &format!(
            "[secret-ad-tags]\nalice = \"{TAG}\"\n[secured]\nenabled = true\n{}",
            server.section("1h", "")
        ),
    );
    let proxy = ProxyProcess::start(BIN, &text, &Launch::default());
    assert!(proxy.wait_for_line("middle-proxy snapshot published", WAIT).is_some(), "{}", proxy.log());
    let addr = proxy.addr();

    // Two tagged sessions: both answered by the middle proxy, none reaches the DC.
    for _ in 0..2 {
        let nonce = block_on(async move {
            let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
            client.req_pq().await.map(|res| res.nonce)
        })
        .expect("resPQ through the middle proxy");
        assert!(middle.seen().res_pq_nonces.contains(&nonce), "the middle proxy answered");
    }
    assert!(dc.req_pq_nonces().is_empty(), "no tagged session went direct");
    let warning = "fast-mode is ignored for sessions through middle proxies";
    assert_eq!(proxy.count_lines(warning), 1, "{}", proxy.log());

    // An untagged user is served direct, in fast mode.
    block_on(async move {
        let mut client = ProxyClient::connect_dd(addr, &dave(), 2).await?;
        client.req_pq().await?;
        client.shutdown().await?;
        client.wait_closed().await
    })
    .expect("resPQ direct");
    assert_eq!(dc.req_pq_nonces().len(), 1);
    let ended = proxy.wait_for_line("fast_mode=", WAIT).expect("the direct session ended");
    assert!(ended.contains("fast_mode=true"), "{ended}");
    assert_eq!(proxy.count_lines(warning), 1, "still one warning: {}", proxy.log());
}
