//! The test parts checked against each other, without the proxy: the fake DC over a raw
//! obfuscated2 leg, the fronting site with rustls and curl.

use std::io::Write as _;
use std::time::Duration;

use mtg_proto::obfs2::{self, LegCipher, TAG_PADDED_INTERMEDIATE};
use mtg_tests::fronting::{self, FrontingSite};
use mtg_tests::mtproto;
use mtg_tests::{DcMode, FakeDc};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// Opens the proxy→DC leg by hand, as the proxy does.
async fn open_leg(dc: &FakeDc, dc_id: i16, tag: [u8; 4]) -> (TcpStream, LegCipher) {
    let mut stream = TcpStream::connect(dc.addr()).await.unwrap();
    let (frame, cipher) = obfs2::initiate(&mut rand::rng(), tag, dc_id, None);
    stream.write_all(&frame).await.unwrap();
    (stream, cipher)
}

#[tokio::test]
async fn telegram_mode_answers_req_pq_multi_with_res_pq() {
    let dc = FakeDc::start(DcMode::Telegram);
    let (mut stream, mut cipher) = open_leg(&dc, -4, TAG_PADDED_INTERMEDIATE).await;
    let nonce: [u8; 16] = rand::rng().random();
    let mut packet = mtproto::req_pq_multi_packet(
        &nonce,
        mtproto::client_msg_id(mtproto::unix_now()),
        3,
        &mut rand::rng(),
    );
    cipher.encrypt(&mut packet);
    stream.write_all(&packet).await.unwrap();

    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.unwrap();
    cipher.decrypt(&mut head);
    let len = u32::from_le_bytes(head) as usize;
    assert!((40..=256).contains(&len), "doctor accepts 40..=256 byte frames, got {len}");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    cipher.decrypt(&mut payload);
    let msg = mtproto::parse_unencrypted(&payload).unwrap();
    assert_eq!(msg.msg_id % 4, 1, "server message ids are 1 mod 4");
    let res = mtproto::ResPq::parse(msg.body).unwrap();
    assert_eq!(res.nonce, nonce);
    assert_eq!(res.pq, mtproto::DEFAULT_PQ.to_be_bytes());
    assert_eq!(res.fingerprints, [mtproto::DEFAULT_FINGERPRINT]);

    assert_eq!(dc.req_pq_nonces(), [nonce]);
    assert_eq!(dc.dc_ids(), [-4]);
    assert!(dc.snapshot()[0].tag_ok());
}

#[tokio::test]
async fn telegram_mode_handles_split_and_coalesced_frames() {
    let dc = FakeDc::start(DcMode::Telegram);
    let (mut stream, mut cipher) = open_leg(&dc, 2, TAG_PADDED_INTERMEDIATE).await;
    let nonces: Vec<[u8; 16]> = (0..3).map(|_| rand::rng().random()).collect();
    let mut wire = Vec::new();
    for (i, n) in nonces.iter().enumerate() {
        wire.extend(mtproto::req_pq_multi_packet(
            n,
            mtproto::client_msg_id(mtproto::unix_now()),
            i,
            &mut rand::rng(),
        ));
    }
    cipher.encrypt(&mut wire);
    // One byte first, then the rest in one write.
    stream.write_all(&wire[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&wire[1..]).await.unwrap();
    tokio::time::timeout(WAIT, dc.wait_for(|c| c.first().is_some_and(|c| c.req_pq_nonces.len() == 3)))
        .await
        .expect("three req_pq_multi seen");
    assert_eq!(dc.req_pq_nonces(), nonces);
}

#[tokio::test]
async fn wrong_tag_is_recorded_and_closed() {
    let dc = FakeDc::start(DcMode::Telegram);
    let (mut stream, _) = open_leg(&dc, 2, [0xee; 4]).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    let conn = &dc.snapshot()[0];
    assert_eq!(conn.header.unwrap().tag, [0xee; 4]);
    assert!(!conn.tag_ok());
}

#[tokio::test]
async fn echo_mode_echoes() {
    let dc = FakeDc::start(DcMode::Echo);
    let (mut stream, mut cipher) = open_leg(&dc, 1, TAG_PADDED_INTERMEDIATE).await;
    let data: Vec<u8> = (0..200_000).map(|_| rand::rng().random()).collect();
    let mut wire = data.clone();
    cipher.encrypt(&mut wire);
    let (mut rd, mut wr) = stream.split();
    let write = async {
        wr.write_all(&wire).await.unwrap();
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        rd.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), mut back) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) }).await.unwrap();
    cipher.decrypt(&mut back);
    assert!(back == data, "echoed bytes differ");
    // The DC records a chunk right after echoing it: wait for the last record to land.
    let n = data.len() as u64;
    tokio::time::timeout(
        WAIT,
        dc.wait_for(|c| c.first().is_some_and(|c| c.bytes_received == n && c.bytes_sent == n)),
    )
    .await
    .expect("the DC recorded every byte");
    let conn = &dc.snapshot()[0];
    assert_eq!(conn.received, data);
    assert_eq!(conn.bytes_sent, data.len() as u64);
    assert_eq!(dc.dc_ids(), [1]);
}

#[tokio::test]
async fn refuse_reset_blackhole_and_sink() {
    let refuse = FakeDc::start(DcMode::Refuse);
    let mut s = TcpStream::connect(refuse.addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "refuse closes at once");

    let reset = FakeDc::start(DcMode::Reset);
    let (mut s, _) = open_leg(&reset, 2, TAG_PADDED_INTERMEDIATE).await;
    let r = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(reset.snapshot()[0].bytes_received, 64);

    let hole = FakeDc::start(DcMode::Blackhole);
    let (mut s, _) = open_leg(&hole, 2, TAG_PADDED_INTERMEDIATE).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await.is_err(),
        "blackhole is silent"
    );
    assert_eq!(hole.connections(), 1);

    let sink = FakeDc::start(DcMode::Sink);
    let (mut s, _) = open_leg(&sink, 5, TAG_PADDED_INTERMEDIATE).await;
    s.write_all(&vec![0u8; 1 << 20]).await.unwrap();
    s.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, sink.wait_for(|c| c.first().is_some_and(|c| c.ended))).await.unwrap();
    assert_eq!(sink.bytes_received(), 1 << 20);
    assert_eq!(sink.dc_ids(), [5]);
}

#[test]
fn dropping_the_dc_closes_its_port() {
    let dc = FakeDc::start(DcMode::Blackhole);
    let addr = dc.addr();
    let held = std::net::TcpStream::connect(addr).unwrap();
    assert!(dc.wait_until(WAIT, |c| c.len() == 1));
    drop(dc);
    held.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut &held, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "held connection closed on drop");
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "port still open after drop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn fronting_site_serves_its_page_to_rustls() {
    let site = FrontingSite::start("front.example");
    let res = fronting::https_get(site.addr(), "front.example", site.client_config()).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body, site.page().as_bytes());
    let conn = &site.snapshot()[0];
    assert!(conn.tls_ok);
    assert_eq!(conn.requests, ["GET / HTTP/1.1"]);
    assert_eq!(&conn.first_bytes[..3], &[0x16, 0x03, 0x01], "first bytes are the ClientHello record");
    let sni = mtg_tests::recorder::hello_sni(&conn.first_bytes).unwrap();
    assert_eq!(sni, ["front.example"]);
}

#[test]
fn fronting_site_records_non_tls_bytes() {
    let site = FrontingSite::start("front.example");
    let mut s = std::net::TcpStream::connect(site.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(site.wait_until(WAIT, |c| c.first().is_some_and(|c| c.ended)));
    let conn = &site.snapshot()[0];
    assert_eq!(conn.first_bytes, b"GET / HTTP/1.0\r\n\r\n");
    assert!(!conn.tls_ok);
}

#[test]
fn fronting_site_serves_its_page_to_curl() {
    let site = FrontingSite::start("front.example");
    let dir = std::env::temp_dir().join(format!("mtg-tests-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, site.cert_pem()).unwrap();
    let port = site.addr().port();
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "--noproxy", "*", "--cacert"])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("front.example:{port}:127.0.0.1"))
        .arg(format!("https://front.example:{port}/"))
        .output()
        .expect("run curl");
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), site.page());
    assert_eq!(site.snapshot()[0].requests, ["GET / HTTP/1.1"]);
}

#[test]
fn servers_work_from_synchronous_code() {
    let dc = FakeDc::start(DcMode::Telegram);
    let addr = dc.addr();
    let nonce = mtg_tests::runtime::block_on(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (frame, mut cipher) = obfs2::initiate(&mut rand::rng(), TAG_PADDED_INTERMEDIATE, 2, None);
        s.write_all(&frame).await.unwrap();
        let nonce = [1u8; 16];
        let mut p = mtproto::req_pq_multi_packet(&nonce, 4, 0, &mut rand::rng());
        cipher.encrypt(&mut p);
        s.write_all(&p).await.unwrap();
        nonce
    });
    assert_eq!(dc.wait_req_pq(WAIT), Some(nonce));
}
