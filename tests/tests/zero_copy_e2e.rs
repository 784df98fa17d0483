//! The zero-copy download path (`[network] zero-copy`, issue 17) end to end over loopback, on
//! the runtime this binary was built with (`cargo test -p mtg-tests --test zero_copy_e2e` =
//! tokio, add `--no-default-features --features smol` for smol): fast-mode downloads with
//! splice on and off arrive byte for byte, in the records doppelganger shaping allows (`ee`)
//! or bare (`dd`), and carry the DC's bytes as they are.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::config_text::{Timeouts, proxy_config};
use mtg_tests::fake_dc::flood_byte;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite, ProxyClient};

const HOST: &str = "front.example";
const WAIT: Duration = Duration::from_secs(30);
/// Bytes of every download: many full records, and not a whole number of them.
const TOTAL: usize = (8 << 20) + 1001;

fn alice() -> Secret {
    Secret::fake_tls([0x31; 16], HOST).unwrap()
}

fn dave() -> Secret {
    Secret::secured([0x32; 16]).unwrap()
}

/// A fast-mode proxy with dynamic record sizing, `zero-copy` as given, DC 2 at `dc`.
fn start(dc: SocketAddr, front: &FrontingSite, zero_copy: bool) -> ProxyUnderTest {
    start_with(dc, front, zero_copy, "")
}

/// [`start`] with `tables` appended to the config.
fn start_with(dc: SocketAddr, front: &FrontingSite, zero_copy: bool, tables: &str) -> ProxyUnderTest {
    ProxyUnderTest::start(&proxy_config(
        &[("alice", &alice()), ("dave", &dave())],
        &[(2, dc)],
        front.addr(),
        Timeouts::default(),
        "fast-mode = true",
        &format!(
            "[secured]\nenabled = true\n[defense.doppelganger]\ndrs = true\n[network]\nzero-copy = {zero_copy}\n{tables}"
        ),
    ))
}

/// Reads the DC's whole flood through the proxy as `secret`'s client; checks every byte.
/// Returns the record sizes (`ee`) and the client's wire head.
fn download(proxy: SocketAddr, secret: &Secret) -> (Vec<usize>, Vec<u8>) {
    let secret = secret.clone();
    let (payload, records, head) = block_on(async move {
        let mut client = match secret.kind() {
            mtg_proto::SecretKind::FakeTls => ProxyClient::connect_ee(proxy, &secret, 2).await?,
            mtg_proto::SecretKind::Secured => ProxyClient::connect_dd(proxy, &secret, 2).await?,
        };
        let payload = client.recv_exact(TOTAL).await?;
        client.shutdown().await?;
        let records: Vec<usize> = client.records().iter().map(|r| r.len).collect();
        std::io::Result::Ok((payload, records, client.wire_head().to_vec()))
    })
    .expect("the download completes");
    assert_eq!(payload.len(), TOTAL);
    let first_bad = payload.iter().enumerate().position(|(i, &b)| b != flood_byte(i as u64));
    assert_eq!(first_bad, None, "the flood arrives byte for byte");
    (records, head)
}

/// The DC's `index`-th connection's first bytes as it sent them (encrypted).
fn dc_head(dc: &FakeDc, index: usize) -> Vec<u8> {
    let head = mtg_tests::fake_dc::WIRE_HEAD;
    assert!(
        dc.wait_until(WAIT, |c| c.get(index).is_some_and(|c| c.sent_head.len() == head)),
        "DC connection {index} sent no {head} bytes"
    );
    dc.snapshot()[index].sent_head.clone()
}

/// The DRS schedule: 40 records of at most 1450 bytes, 20 of at most 4096, then full ones.
fn check_drs(records: &[usize]) {
    assert_eq!(records.iter().sum::<usize>(), TOTAL, "record payloads add up");
    for (i, &len) in records.iter().enumerate() {
        let limit = match i + 1 {
            1..=40 => 1450,
            41..=60 => 4096,
            _ => 16379,
        };
        assert!(len > 0 && len <= limit, "record {} carries {len}, the schedule allows {limit}", i + 1);
    }
    assert!(records.iter().filter(|&&len| len == 16379).count() > 100, "mostly full records");
}

#[test]
fn fast_mode_downloads_are_byte_exact_in_shaped_records_with_zero_copy_on_and_off() {
    for zero_copy in [true, false] {
        let dc = FakeDc::start(DcMode::Flood { bytes: TOTAL as u64 });
        let front = FrontingSite::start(HOST);
        let proxy = start(dc.addr(), &front, zero_copy);
        let (records, head) = download(proxy.addr(), &alice());
        check_drs(&records);
        assert_eq!(head, dc_head(&dc, 0), "zero-copy {zero_copy}: the DC's bytes as they are");

        let (records, head) = download(proxy.addr(), &dave());
        assert!(records.is_empty(), "dd: no records");
        assert_eq!(head, dc_head(&dc, 1), "zero-copy {zero_copy}, dd: the DC's bytes as they are");
    }
}

#[test]
fn a_spliced_download_waits_for_the_users_rate() {
    let total = 2 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let proxy = start_with(dc.addr(), &front, true, "[secret-limits.alice]\nrate-limit = \"1mib\"\n");
    let addr = proxy.addr();
    let (first, last) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let first_bytes = client.recv_exact(1).await?;
        let first = Instant::now();
        let rest = client.recv_exact(total - 1).await?;
        let last = Instant::now();
        let all: Vec<u8> = first_bytes.into_iter().chain(rest).collect();
        let first_bad = all.iter().enumerate().position(|(i, &b)| b != flood_byte(i as u64));
        assert_eq!(first_bad, None, "the flood arrives byte for byte");
        std::io::Result::Ok((first, last))
    })
    .expect("the download completes");
    // The limiter's lower bound: at most half a second of burst, then 1 MiB/s.
    let took = last - first;
    assert!(took >= Duration::from_millis(1200), "2 MiB at 1 MiB/s took {took:?}");
    let stats: serde_json::Value = serde_json::from_str(&proxy.stats_json()).expect("stats JSON");
    assert!(stats["users"]["alice"]["rate_limited_ms"].as_u64().is_some_and(|ms| ms > 0), "{stats}");
    assert_eq!(stats["users"]["alice"]["bytes_out"], total as u64, "{stats}");
}
