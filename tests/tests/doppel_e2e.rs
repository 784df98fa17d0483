//! Doppelganger shaping end to end, on the runtime this binary was built with: the TLS records
//! a FakeTLS client receives from a flooding fake DC (DRS schedule, full records, pacing gaps),
//! the bounded per-session buffer when the client stops reading, and the calibrated size of
//! the handshake's certificate record.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_proto::doppel::{CertSize, Statistics, Weibull};
use mtg_tests::client::ReceivedRecord;
use mtg_tests::fake_dc::flood_byte;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite, ProxyClient};

const HOST: &str = "front.example";

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

/// A one-user config routing DC 2 to `dc`, with `doppelganger` lines in its section.
fn config(dc: SocketAddr, front: &FrontingSite, doppelganger: &str) -> String {
    format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"{}\"\n[domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n\
         [network.timeout]\nhandshake = \"1s\"\nidle = \"30s\"\ntcp = \"2s\"\n[network.dc-overrides]\n2 = [\"{dc}\"]\n\
         [defense.doppelganger]\n{doppelganger}\n",
        alice().to_hex(),
        front.addr().port(),
    )
}

/// Connects, reads the whole flood of `total` bytes, checks its bytes, closes; returns the
/// records received.
fn download(proxy: &ProxyUnderTest, total: usize) -> Vec<ReceivedRecord> {
    let addr = proxy.addr();
    let (payload, records) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let payload = client.recv_exact(total).await?;
        client.shutdown().await?;
        std::io::Result::Ok((payload, client.records().to_vec()))
    })
    .unwrap();
    assert!(payload.iter().enumerate().all(|(i, &b)| b == flood_byte(i as u64)), "flood bytes differ");
    assert_eq!(records.iter().map(|r| r.len).sum::<usize>(), total, "record payloads add up");
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(5)), "the session ended");
    records
}

/// The (smallest, largest) payload of the 1-based record `n` of a DRS burst.
fn drs_bounds(n: usize) -> (usize, usize) {
    match n {
        1..=40 => (1351, 1450),
        41..=60 => (3997, 4096),
        _ => (16379, 16379),
    }
}

#[test]
fn drs_records_follow_the_schedule_then_are_full() {
    // Pacing (k = 10, λ = 10 ms: draws between 5 and 13 ms but for one in a thousand) gives
    // the DC time to refill the proxy's socket between the small records, so each of them
    // fills the window the schedule allows. Full records may come short: loopback delivers the
    // DC's bytes in lumps of about 93 KiB, and a record carries what is there.
    let total = 1 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, "drs = true\npacing = true"));
    proxy.doppelganger().set_statistics(Statistics {
        delays: Weibull { shape: 10.0, scale_ms: 10.0 },
        ..Statistics::default()
    });
    let records = download(&proxy, total);
    let lens: Vec<usize> = records.iter().map(|r| r.len).collect();
    assert!(lens.len() > 61, "the flood reaches the full-record phase: {} records", lens.len());
    for (i, &len) in lens[..60].iter().enumerate() {
        let (lo, hi) = drs_bounds(i + 1);
        assert!(
            lo <= len && len <= hi,
            "record {} carries {len}, schedule says {lo}..={hi}: {lens:?}",
            i + 1
        );
    }
    assert!(lens[60..].iter().all(|&len| len <= 16379), "{lens:?}");
    assert_eq!(lens[60], 16379, "record 61 is full: {lens:?}");
    assert_eq!(proxy.doppelganger().paced_records(), lens.len() as u64);
}

#[test]
fn drs_alone_never_exceeds_the_schedule() {
    let total = 2 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, "drs = true"));
    let records = download(&proxy, total);
    // Without pacing a record carries what the DC socket holds, up to the schedule's limit.
    for (i, r) in records.iter().enumerate() {
        assert!(r.len <= drs_bounds(i + 1).1, "record {} carries {}", i + 1, r.len);
    }
    assert!(records.len() > 61 && records.iter().any(|r| r.len == 16379));
    assert_eq!(proxy.doppelganger().paced_records(), 0, "pacing was not asked for");
}

#[test]
fn without_drs_or_pacing_a_download_is_untimed_with_records_up_to_16379() {
    let total = 8 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: total as u64 });
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, ""));
    let records = download(&proxy, total);
    assert!(records.iter().all(|r| r.len <= 16379));
    assert!(records[..40].iter().any(|r| r.len > 4096), "no small-record warm-up without DRS");
    assert_eq!(proxy.doppelganger().paced_records(), 0, "no record waited for a timer");
}

#[test]
fn a_client_that_stops_reading_stops_the_reads_from_the_dc() {
    let flood = 256u64 << 20;
    let dc = FakeDc::start(DcMode::Flood { bytes: flood });
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, "drs = true"));
    let addr = proxy.addr();
    let client = block_on(async move { ProxyClient::connect_ee(addr, &alice(), 2).await }).unwrap();
    // The DC writes until every buffer between it and the silent client is full, then blocks.
    let sent = |dc: &FakeDc| dc.snapshot().first().map_or(0, |c| c.bytes_sent);
    // The plateau is looked for from the first bytes the DC sent (the proxy dials it after
    // the client's handshake, which may take a while on a loaded machine).
    assert!(
        dc.wait_until(Duration::from_secs(30), |conns| conns.first().is_some_and(|c| c.bytes_sent > 0)),
        "the DC never got to send"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    let mut still = 0;
    while still < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = sent(&dc);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    assert_eq!(still, 5, "the DC kept sending for 30 s (at {last} bytes)");
    // Kernel socket buffers on both legs hold some MiB; the proxy itself holds one record.
    assert!(last > 0 && last < 96 << 20, "the DC got {last} bytes out of {flood} into a silent client");
    drop(client);
}

#[test]
fn calibrated_statistics_size_the_handshake_certificate_record() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, ""));
    let addr = proxy.addr();
    let flight_lens = || {
        block_on(async move {
            let mut lens = Vec::new();
            for _ in 0..8 {
                lens.push(ProxyClient::connect_ee(addr, &alice(), 2).await?.flight_len().unwrap());
            }
            std::io::Result::Ok(lens)
        })
        .unwrap()
    };
    // ServerHello record (5 + 122 with a 32-byte session id) + CCS (6) + AppData header (5).
    let overhead = 5 + 122 + 6 + 5;
    for len in flight_lens() {
        assert!((2500..=4699).contains(&(len - overhead)), "uncalibrated: {}", len - overhead);
    }
    let cert = CertSize { mean: 1500, jitter: 120 };
    proxy.doppelganger().set_statistics(Statistics { cert: Some(cert), ..Statistics::default() });
    for len in flight_lens() {
        assert!((1380..1620).contains(&(len - overhead)), "calibrated: {}", len - overhead);
    }
}

#[test]
fn learning_from_a_local_https_site_calibrates_new_sessions() {
    use mtg_app::doppel_learn::LearnSettings;
    use mtg_app::doppel_learn::probe;

    // The site's certificate names 127.0.0.1, so the URL needs no name resolution.
    let site = FrontingSite::start("127.0.0.1");
    let url = format!("https://127.0.0.1:{}/", site.addr().port());
    let tls = site.client_config();
    let seen = probe(&url, &tls, Duration::from_secs(5)).unwrap();
    // The answer can only follow the request, itself sent after the flight: a later read.
    assert!(seen.durations_ms.iter().any(|&ms| ms > 0.0), "{seen:?}");
    let cert = seen.cert_size.expect("a TLS 1.3 flight after a CCS");
    assert!(cert as usize > site.cert_der().len(), "the flight holds the certificate: {cert}");
    // rustls signs with a fresh ECDSA signature each time: sizes differ by a few bytes at most.
    let again = probe(&url, &tls, Duration::from_secs(5)).unwrap().cert_size.unwrap();
    assert!(cert.abs_diff(again) <= 4, "{cert} vs {again}");

    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, ""));
    let settings = LearnSettings {
        urls: vec![url],
        repeats_per_raid: 100,
        raid_each: Duration::from_secs(3600),
        http_timeout: Duration::from_secs(10),
    };
    let report = proxy.doppelganger().learn(&settings, &tls);
    assert_eq!((report.gets, report.failed, report.cert_sizes), (100, 0, 100), "{report:?}");
    let learned = proxy.doppelganger().statistics();
    assert_ne!(learned.delays, Weibull::BUILT_IN, "100 GETs give at least 100 positive durations");
    let calibrated = learned.cert.expect("100 certificate sizes").app_data_len();
    let addr = proxy.addr();
    let flight = block_on(async move { ProxyClient::connect_ee(addr, &alice(), 2).await })
        .unwrap()
        .flight_len()
        .unwrap();
    let app_data = flight - (5 + 122 + 6 + 5);
    assert!(
        (usize::from(calibrated.min)..=usize::from(calibrated.max)).contains(&app_data),
        "{app_data} outside {calibrated:?}"
    );
}

#[test]
fn learning_verifies_certificates_against_the_web_roots() {
    // A self-signed site: every GET of the proxy's own raid fails, the statistics stay.
    let site = FrontingSite::start("127.0.0.1");
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let lines = format!("urls = [\"https://127.0.0.1:{}/\"]\nrepeats-per-raid = 3", site.addr().port());
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &front, &lines));
    let refused = |c: &[mtg_tests::FrontConnection]| c.len() == 3 && c.iter().all(|c| c.ended && !c.tls_ok);
    assert!(site.wait_until(Duration::from_secs(20), refused), "{:?}", site.snapshot().len());
    assert_eq!(proxy.doppelganger().statistics(), Statistics::default());
}
