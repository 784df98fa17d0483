//! The real proxy end to end over loopback, on the runtime this binary was built with
//! (`cargo test -p mtg-tests` = tokio, `--no-default-features --features smol` = smol): relay
//! through a fake DC, domain fronting of every kind of non-client, DC faults, timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtg_proto::Secret;
use mtg_proto::client::FakeTlsHello;
use mtg_tests::client::ProxyClient;
use mtg_tests::fronting::https_get;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use rand::RngCore;

const HOST: &str = "front.example";

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// A config for `users`, with DC overrides, the fronting site, `top` keys and extra `sections`.
fn config(
    users: &[(&str, &Secret)],
    dcs: &[(i16, SocketAddr)],
    front: &FrontingSite,
    top: &str,
    sections: &str,
) -> String {
    let mut text = format!("bind-to = \"127.0.0.1:1\"\n{top}\n[secrets]\n");
    for (name, secret) in users {
        text.push_str(&format!("{name} = \"{}\"\n", secret.to_hex()));
    }
    text.push_str(&format!(
        "[domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.timeout]\nhandshake = \"1s\"\nidle = \"30s\"\ntcp = \"2s\"\n[network.dc-overrides]\n",
        front.addr().port()
    ));
    for (dc, addr) in dcs {
        text.push_str(&format!("{dc} = [\"{addr}\"]\n"));
    }
    text.push_str(sections);
    text
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

#[test]
fn four_mebibytes_each_way_byte_exact() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[("alice", &alice())], &[(2, dc.addr())], &front, "", ""));
    let addr = proxy.addr();
    let payload = pattern(4 << 20, 7);
    let echoed = block_on({
        let payload = payload.clone();
        async move {
            let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
            client.echo(&payload).await
        }
    })
    .unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echo differs from what was sent");
    let conns = dc.snapshot();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].header.map(|h| h.dc), Some(2));
    assert_eq!(conns[0].bytes_received, 4 << 20);
}

#[test]
fn req_pq_multi_reaches_the_dc_and_res_pq_comes_back() {
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &[("alice", &alice())],
        &[(-2, dc.addr()), (2, dc.addr())],
        &front,
        "",
        "",
    ));
    let addr = proxy.addr();
    let res = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), -2).await?;
        client.req_pq().await
    })
    .unwrap();
    assert_eq!(dc.req_pq_nonces(), vec![res.nonce]);
    // A negative (media) DC id is served by the same DC number's addresses; the id is kept.
    assert_eq!(dc.dc_ids(), vec![2]);
}

/// The proxy closed the client (a FIN, or an RST when unread bytes were in flight) before the
/// client's read timeout.
fn closed_promptly(result: std::io::Result<()>) {
    if let Err(e) = result {
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "the client was left hanging");
    }
}

fn fronted_bytes(front: &FrontingSite, probe: &[u8]) -> bool {
    front.wait_until(Duration::from_secs(5), |conns| conns.iter().any(|c| c.first_bytes == probe))
}

fn send_raw(proxy: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    s
}

#[test]
fn every_kind_of_non_client_is_fronted_byte_for_byte() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &[("alice", &alice())],
        &[(2, dc.addr())],
        &front,
        "",
        "[defense.anti-replay]\nenabled = true\n",
    ));
    let mut rng = rand::rng();

    // A replayed valid hello: the first one is answered by the proxy, the copy is fronted.
    let mut hello = Vec::new();
    let h = FakeTlsHello::build(&alice(), unix_now(), &mut rng, &mut hello).unwrap();
    let mut first = send_raw(proxy.addr(), &hello);
    let mut flight = vec![0u8; 16 * 1024];
    let n = first.read(&mut flight).unwrap();
    assert!(h.verify_flight(&flight[..n]).is_ok(), "first hello answered by the proxy");
    drop(first);
    let _replay = send_raw(proxy.addr(), &hello);
    assert!(fronted_bytes(&front, &hello), "replayed hello fronted");

    // A stale timestamp.
    let mut stale = Vec::new();
    FakeTlsHello::build(&alice(), unix_now() - 3600, &mut rng, &mut stale).unwrap();
    let _s = send_raw(proxy.addr(), &stale);
    assert!(fronted_bytes(&front, &stale), "stale hello fronted");

    // The right key with a wrong SNI.
    let mut wrong_sni = Vec::new();
    FakeTlsHello::build_with(&alice(), "other.example", unix_now(), 517, &mut rng, &mut wrong_sni).unwrap();
    let _w = send_raw(proxy.addr(), &wrong_sni);
    assert!(fronted_bytes(&front, &wrong_sni), "wrong SNI fronted");

    // Random bytes.
    let mut random = vec![0u8; 300];
    rng.fill_bytes(&mut random);
    random[0] = 0x42;
    let _r = send_raw(proxy.addr(), &random);
    assert!(fronted_bytes(&front, &random), "random bytes fronted");

    // An HTTP request gets the site's own answer.
    let http = b"GET / HTTP/1.1\r\nHost: front.example\r\n\r\n".to_vec();
    let _h = send_raw(proxy.addr(), &http);
    assert!(fronted_bytes(&front, &http), "HTTP request fronted");

    // A truncated hello is fronted when the handshake timeout (1 s) fires.
    let mut full = Vec::new();
    FakeTlsHello::build(&alice(), unix_now(), &mut rng, &mut full).unwrap();
    let truncated = full[..200].to_vec();
    let _t = send_raw(proxy.addr(), &truncated);
    assert!(fronted_bytes(&front, &truncated), "truncated hello fronted after the timeout");

    // None of them reached the DC.
    assert_eq!(dc.connections(), 0);
}

#[test]
fn browsers_get_the_fronting_site_identical_to_a_direct_request() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[("alice", &alice())], &[(2, dc.addr())], &front, "", ""));
    let (proxy_addr, front_addr) = (proxy.addr(), front.addr());
    let tls = front.client_config();
    let (direct, through) = block_on(async move {
        let direct = https_get(front_addr, HOST, tls.clone()).await.unwrap();
        let through = https_get(proxy_addr, HOST, tls).await.unwrap();
        (direct, through)
    });
    assert_eq!(through.status, 200);
    assert_eq!(through.body, direct.body);
    assert_eq!(String::from_utf8_lossy(&through.body), front.page());

    let dir = std::env::temp_dir().join(format!("mtg-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("front.pem");
    std::fs::write(&ca, front.cert_pem()).unwrap();
    let curl = |port: u16| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("{HOST}:{port}:127.0.0.1"))
            .arg(format!("https://{HOST}:{port}/"))
            .output()
            .expect("curl is installed");
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(curl(proxy_addr.port()), curl(front_addr.port()));
    assert_eq!(String::from_utf8_lossy(&curl(proxy_addr.port())), front.page());

    let mut openssl = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(proxy_addr.to_string())
        .args(["-servername", HOST, "-CAfile"])
        .arg(&ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(front.page()), "openssl got: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_dc_closes_or_falls_back_to_dc_2() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let strict = ProxyUnderTest::start(&config(&[("alice", &alice())], &[(2, dc.addr())], &front, "", ""));
    let addr = strict.addr();
    block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 7).await.unwrap();
        client.send(b"hello").await.ok();
        closed_promptly(client.wait_closed().await);
    });
    assert_eq!(dc.connections(), 0, "nothing dialled for an unknown DC");

    let lenient = ProxyUnderTest::start(&config(
        &[("alice", &alice())],
        &[(2, dc.addr())],
        &front,
        "allow-fallback-on-unknown-dc = true",
        "",
    ));
    let addr = lenient.addr();
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 7).await.unwrap();
        client.send(b"via the fallback").await.unwrap();
        client.recv_exact(16).await.unwrap()
    });
    assert_eq!(echoed, b"via the fallback");
    assert_eq!(dc.dc_ids(), vec![2]);
}

#[test]
fn dc_faults_leave_other_sessions_untouched() {
    let good = FakeDc::start(DcMode::Echo);
    let refuse = FakeDc::start(DcMode::Refuse);
    let reset = FakeDc::start(DcMode::Reset);
    let blackhole = FakeDc::start(DcMode::Blackhole);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &[("alice", &alice())],
        &[(2, good.addr()), (3, refuse.addr()), (4, reset.addr()), (5, blackhole.addr())],
        &front,
        "",
        "",
    ));
    let addr = proxy.addr();
    block_on(async move {
        let mut steady = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        steady.send(b"before").await.unwrap();
        assert_eq!(steady.recv_exact(6).await.unwrap(), b"before");

        for dc in [3, 4] {
            let mut victim = ProxyClient::connect_ee(addr, &alice(), dc).await.unwrap();
            victim.send(&[0u8; 128]).await.ok();
            closed_promptly(victim.wait_closed().await);
        }
        let mut stuck = ProxyClient::connect_ee(addr, &alice(), 5).await.unwrap();
        stuck.send(b"nobody answers").await.unwrap();

        steady.send(b"after").await.unwrap();
        assert_eq!(steady.recv_exact(5).await.unwrap(), b"after");
        drop(stuck);
    });
    for (name, dc) in [("refusing", &refuse), ("resetting", &reset), ("blackhole", &blackhole)] {
        assert!(dc.wait_until(Duration::from_secs(5), |c| !c.is_empty()), "the {name} DC was dialled");
    }
}

#[test]
fn silent_client_is_fronted_when_the_handshake_timeout_fires() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[("alice", &alice())], &[(2, dc.addr())], &front, "", ""));
    let before = front.connections();
    // The proxy's deadline starts at its accept, which follows the connect: measured from the
    // connect, the fronting can only come later than the timeout.
    let connected_at = Instant::now();
    let silent = TcpStream::connect(proxy.addr()).unwrap();
    assert!(
        front.wait_until(Duration::from_secs(10), |conns| conns.len() > before),
        "fronted after the 1 s handshake timeout"
    );
    let took = connected_at.elapsed();
    assert!(took >= Duration::from_secs(1), "fronted {took:?} after the connect, before the 1 s timeout");
    drop(silent);
}

#[test]
fn dd_secret_relays_when_secured_mode_is_on() {
    let dd = Secret::secured([0x22; 16]).unwrap();
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(
        &[("alice", &alice()), ("dave", &dd)],
        &[(2, dc.addr())],
        &front,
        "",
        "[secured]\nenabled = true\n",
    ));
    let addr = proxy.addr();
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_dd(addr, &dd, 2).await.unwrap();
        client.send(b"secured payload").await.unwrap();
        client.recv_exact(15).await.unwrap()
    });
    assert_eq!(echoed, b"secured payload");
}

#[test]
fn graceful_stop_waits_for_live_sessions_then_ends() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(&[("alice", &alice())], &[(2, dc.addr())], &front, "", ""));
    let addr = proxy.addr();
    block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        client.send(b"x").await.unwrap();
        client.recv_exact(1).await.unwrap();
    });
    assert!(proxy.wait_active_at_most(0, Duration::from_secs(5)));
    drop(proxy);
    assert!(TcpStream::connect(addr).is_err(), "listener closed after the stop");
}

#[test]
fn proxy_protocol_in_is_stripped_and_v2_out_names_the_real_client() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    // The PROXY header out is switched on in the [domain-fronting] table the helper writes.
    let text =
        config(&[("alice", &alice())], &[(2, dc.addr())], &front, "proxy-protocol-listener = true", "")
            .replace("[domain-fronting]\n", "[domain-fronting]\nproxy-protocol = true\n");
    let proxy = ProxyUnderTest::start(&text);

    let probe = b"GET /pp HTTP/1.1\r\nHost: front.example\r\n\r\n";
    let mut wire = b"PROXY TCP4 198.51.100.7 203.0.113.9 40000 443\r\n".to_vec();
    wire.extend_from_slice(probe);
    let _conn = send_raw(proxy.addr(), &wire);
    assert!(
        front
            .wait_until(Duration::from_secs(5), |conns| conns.iter().any(|c| c.first_bytes.ends_with(probe))),
        "the probe reached the site"
    );
    let seen = front.snapshot().into_iter().find(|c| c.first_bytes.ends_with(probe)).unwrap();
    let header = &seen.first_bytes[..seen.first_bytes.len() - probe.len()];
    // v2 header, TCP over IPv4, source = the client named by the incoming v1 header.
    assert_eq!(&header[..12], &mtg_proto::proxy_protocol::V2_SIGNATURE);
    assert_eq!(header[12..14], [0x21, 0x11]);
    assert_eq!(&header[16..20], &[198, 51, 100, 7]);
    assert_eq!(u16::from_be_bytes([header[24], header[25]]), 40000);
    assert_eq!(u16::from_be_bytes([header[26], header[27]]), front.addr().port());
    assert_eq!(header.len(), 28);
}
