//! The probe limit end to end over loopback, on the runtime this binary was built with: after
//! four bad-digest hellos naming the users' host from one /24 (each a full search, counted as
//! `probe_searches{outcome="failed"}`), the next hello from that /24 is fronted without a
//! search (`outcome="skipped"`, the failed count unchanged) and the site still answers it
//! exactly as it would anyone; a client of that /24 that matched before keeps its hint and
//! connects, and a client of another /24 is unaffected. Behind a PROXY protocol listener the
//! header's address is the one counted.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use mtg_proto::Secret;
use mtg_proto::client::{DEFAULT_HELLO_LEN, FakeTlsHello};
use mtg_tests::client::{EeOptions, ProxyClient};
use mtg_tests::fronting::{self, FrontingSite};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "front.example";
/// Failed full searches a network may cause per window (`engine::probe_limit`).
const LIMIT: i64 = 4;
const FAILED: &str = "mtg_probe_searches_total{outcome=\"failed\"}";
const SKIPPED: &str = "mtg_probe_searches_total{outcome=\"skipped\"}";

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

/// Alice and Bob, DC 2 at `dc`, fronting to `site`, Prometheus on; `top` before the tables.
fn config(dc: SocketAddr, site: &FrontingSite, top: &str) -> String {
    format!(
        "bind-to = \"127.0.0.1:1\"\n{top}\n[secrets]\nalice = \"{}\"\nbob = \"{}\"\n\
         [domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n[network.timeout]\nhandshake = \"2s\"\n\
         idle = \"30s\"\ntcp = \"2s\"\n[network.dc-overrides]\n2 = [\"{dc}\"]\n\
         [stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n",
        user(1).to_hex(),
        user(2).to_hex(),
        site.addr().port()
    )
}

/// The value of `series` in the proxy's Prometheus scrape (0 while absent).
fn metric(proxy: &ProxyUnderTest, series: &str) -> i64 {
    let mut s = TcpStream::connect(proxy.metrics().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

fn from(ip: &str) -> EeOptions {
    EeOptions { source: Some(ip.parse::<IpAddr>().unwrap()), ..EeOptions::default() }
}

/// A full session of `secret` with `options`: FakeTLS handshake, then `req_pq_multi`.
fn session(proxy: SocketAddr, secret: &Secret, options: &EeOptions) -> std::io::Result<()> {
    let (secret, options) = (secret.clone(), options.clone());
    block_on(async move {
        let mut client = ProxyClient::connect_ee_with(proxy, &secret, 2, &options).await?;
        client.req_pq().await.map(drop)
    })
}

/// A probe: a real TLS client (rustls, SNI = the users' host, so no user signed its hello)
/// through the proxy, from 127.0.0.1. Fronted, it gets the site's page over a TLS session
/// with the site itself: every byte both ways passed unchanged.
fn probe(proxy: SocketAddr, site: &FrontingSite) {
    let config = site.client_config();
    let response = block_on(async move { fronting::https_get(proxy, HOST, config).await }).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, site.page().as_bytes(), "the site's page, byte for byte");
}

/// Sends `preamble` and a hello no user signed (a stranger's key, the users' host), and returns
/// the first bytes answered (the site's), without waiting for the close.
fn first_answer(proxy: SocketAddr, preamble: &[u8]) -> Vec<u8> {
    let mut bytes = preamble.to_vec();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    FakeTlsHello::build_with(&user(9), HOST, now as u32, DEFAULT_HELLO_LEN, &mut rand::rng(), &mut bytes)
        .unwrap();
    block_on(async move {
        let mut stream = tokio::net::TcpStream::connect(proxy).await?;
        stream.write_all(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    })
    .unwrap()
}

#[test]
fn probes_beyond_the_limit_are_fronted_without_a_search_and_clients_still_connect() {
    let dc = FakeDc::start(DcMode::Telegram);
    let site = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &site, ""));
    let addr = proxy.addr();

    // Alice matched from 127.0.0.1 before: her address's hint is her.
    session(addr, &user(1), &from("127.0.0.1")).unwrap();

    for n in 1..=LIMIT {
        probe(addr, &site);
        assert_eq!(metric(&proxy, FAILED), n, "probe {n} got a full search");
    }
    assert_eq!(metric(&proxy, SKIPPED), 0);

    // Over the limit: fronted as usual, but no search.
    probe(addr, &site);
    assert_eq!(metric(&proxy, FAILED), LIMIT, "no further full search");
    assert_eq!(metric(&proxy, SKIPPED), 1);
    assert_eq!(site.snapshot().iter().filter(|c| c.tls_ok).count(), LIMIT as usize + 1);

    // Alice, hinted, still connects from the limited /24 ...
    session(addr, &user(1), &from("127.0.0.1")).unwrap();
    // ... which is still limited after her: Bob never matched from 127.0.0.2, and gets no full
    // search there (fronted).
    let fronted = session(addr, &user(2), &from("127.0.0.2")).unwrap_err();
    assert_eq!(fronted.kind(), std::io::ErrorKind::InvalidData, "{fronted}");
    assert_eq!(metric(&proxy, SKIPPED), 2);
    // Bob from another /24 is searched for and connects.
    session(addr, &user(2), &from("127.0.1.1")).unwrap();
    assert_eq!(metric(&proxy, FAILED), LIMIT, "no client cost a failed search");
}

#[test]
fn behind_a_proxy_protocol_listener_the_header_address_is_counted() {
    let dc = FakeDc::start(DcMode::Telegram);
    let site = FrontingSite::start(HOST);
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &site, "proxy-protocol-listener = true"));
    let addr = proxy.addr();
    let behind = |client: &str| EeOptions {
        preamble: format!("PROXY TCP4 {client} 203.0.113.9 40000 443\r\n").into_bytes(),
        ..EeOptions::default()
    };
    // The failures must fall in one window: each probe leaves once the site answered.
    for n in 1..=LIMIT {
        let preamble = behind(&format!("198.51.100.{n}")).preamble;
        assert!(!first_answer(addr, &preamble).is_empty(), "the site answered probe {n}");
        assert_eq!(metric(&proxy, FAILED), n);
    }
    // 198.51.100.0/24 is limited: Alice, who never matched from there, is fronted.
    let fronted = session(addr, &user(1), &behind("198.51.100.200")).unwrap_err();
    assert_eq!(fronted.kind(), std::io::ErrorKind::InvalidData, "{fronted}");
    assert_eq!(metric(&proxy, SKIPPED), 1);
    // The TCP peer (127.0.0.1 for all of these) is not what counts: another header network
    // gets its full search.
    session(addr, &user(1), &behind("192.0.2.7")).unwrap();
    assert_eq!((metric(&proxy, FAILED), metric(&proxy, SKIPPED)), (LIMIT, 1));
}
