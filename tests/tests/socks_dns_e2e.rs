//! `[network] proxies` and `[network] dns` end to end, on the runtime this binary was built
//! with: DC sessions through a real SOCKS5 server (Debian's `microsocks`), with and without
//! credentials, failover, a server dying mid-session, fronting bypassing the proxies, and
//! names resolved by a local DNS server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mtg_proto::Secret;
use mtg_tests::client::ProxyClient;
use mtg_tests::dns_server::{DnsServer, Question};
use mtg_tests::fronting::https_get;
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::socks_server::{SocksOptions, SocksServer, free_port};
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const HOST: &str = "front.example";
/// Where the SOCKS servers' outgoing connections come from, so the fake DC can tell them apart.
const VIA_FIRST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const VIA_SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn alice() -> Secret {
    Secret::fake_tls([0x22; 16], HOST).unwrap()
}

/// A config for alice with DC 2 at `dc`, `[network]` keys, and `[domain-fronting]` keys.
fn config(dc: SocketAddr, network: &str, fronting: &str) -> String {
    format!(
        "bind-to = \"127.0.0.1:1\"\n[secrets]\nalice = \"{}\"\n[domain-fronting]\n{fronting}\n\
         [network]\n{network}\n[network.timeout]\nhandshake = \"1s\"\nidle = \"30s\"\ntcp = \"2s\"\n\
         [network.dc-overrides]\n2 = [\"{dc}\"]\n",
        alice().to_hex()
    )
}

fn fronting_to(front: &FrontingSite) -> String {
    format!("host = \"127.0.0.1\"\nport = {}", front.addr().port())
}

fn proxies(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("proxies = [{}]", quoted.join(", "))
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// Opens a session to DC 2, sends `payload` and returns the session once the echo matched.
async fn echo_session(proxy: SocketAddr, payload: &[u8]) -> std::io::Result<ProxyClient> {
    let mut client = ProxyClient::connect_ee(proxy, &alice(), 2).await?;
    client.send(payload).await?;
    let echoed = client.recv_exact(payload.len()).await?;
    assert!(echoed == payload, "the echo differs from what was sent");
    Ok(client)
}

/// The session was closed by the proxy (FIN or RST), not left hanging.
async fn closed_promptly(client: &mut ProxyClient) {
    if let Err(e) = client.wait_closed().await {
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "the client was left hanging");
    }
}

/// Which outgoing address the fake DC saw the connection carrying `marker` come from.
fn dc_peer_of(dc: &FakeDc, marker: &[u8]) -> Option<IpAddr> {
    dc.snapshot().iter().find(|c| c.received.starts_with(marker)).map(|c| c.peer.ip())
}

#[test]
fn sessions_reach_the_dc_through_socks5_byte_exact() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let socks = SocksServer::start_with(&SocksOptions { outgoing: Some(VIA_FIRST), ..Default::default() });
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &proxies(&[socks.url(None)]), &fronting_to(&front)));
    let addr = proxy.addr();
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| pattern(256 * 1024, i)).collect();
    let sent = payloads.clone();
    block_on(async move {
        let mut sessions = Vec::new();
        for payload in &sent {
            sessions.push(echo_session(addr, payload).await.unwrap());
        }
    });
    let conns = dc.snapshot();
    assert_eq!(conns.len(), 3);
    for payload in &payloads {
        let conn = conns.iter().find(|c| c.received == *payload).expect("the DC got each payload whole");
        assert_eq!(conn.peer.ip(), VIA_FIRST, "the DC connection came from the SOCKS server");
        assert_eq!(conn.header.map(|h| h.dc), Some(2));
    }
}

#[test]
fn credentials_are_sent_and_a_wrong_password_fails_only_its_sessions() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let credentials = Some(("mtg-user".to_owned(), "s3cret-pw".to_owned()));
    let socks = SocksServer::start_with(&SocksOptions { credentials, outgoing: Some(VIA_FIRST) });
    let good = ProxyUnderTest::start(&config(
        dc.addr(),
        &proxies(&[socks.url(Some(("mtg-user", "s3cret-pw")))]),
        &fronting_to(&front),
    ));
    let bad = ProxyUnderTest::start(&config(
        dc.addr(),
        &proxies(&[socks.url(Some(("mtg-user", "wrong-pw")))]),
        &fronting_to(&front),
    ));
    let no_auth =
        ProxyUnderTest::start(&config(dc.addr(), &proxies(&[socks.url(None)]), &fronting_to(&front)));
    let (good_addr, bad_addr, no_auth_addr) = (good.addr(), bad.addr(), no_auth.addr());
    let tls = front.client_config();
    block_on(async move {
        let mut steady = echo_session(good_addr, b"steady-before").await.unwrap();
        for addr in [bad_addr, no_auth_addr] {
            let mut victim = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
            victim.send(b"never-arrives").await.ok();
            closed_promptly(&mut victim).await;
        }
        steady.send(b"steady-after").await.unwrap();
        assert_eq!(steady.recv_exact(12).await.unwrap(), b"steady-after");
        echo_session(good_addr, b"second-good").await.unwrap();
        // The proxy with the wrong password keeps serving what does not need the SOCKS server.
        let page = https_get(bad_addr, HOST, tls).await.unwrap();
        assert_eq!(page.status, 200);
    });
    assert_eq!(dc.snapshot().len(), 2, "only the sessions with the right password reached the DC");
    assert!(dc.snapshot().iter().all(|c| c.peer.ip() == VIA_FIRST));
    assert_eq!(dc_peer_of(&dc, b"never-arrives"), None);
}

#[test]
fn a_dead_socks_server_fails_over_to_the_live_one() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let live = SocksServer::start_with(&SocksOptions { outgoing: Some(VIA_FIRST), ..Default::default() });
    let dead = format!("socks5://127.0.0.1:{}", free_port().unwrap());
    let proxy =
        ProxyUnderTest::start(&config(dc.addr(), &proxies(&[dead, live.url(None)]), &fronting_to(&front)));
    let addr = proxy.addr();
    // The order is shuffled per dial: with 8 sessions the dead one is first in some of them
    // (all but 1 in 256 runs), and every session must get through anyway.
    block_on(async move {
        for i in 0..8u8 {
            echo_session(addr, &[b's', b'-', b'0' + i]).await.unwrap();
        }
    });
    let conns = dc.snapshot();
    assert_eq!(conns.len(), 8);
    assert!(conns.iter().all(|c| c.peer.ip() == VIA_FIRST));
}

#[test]
fn fronting_bypasses_the_socks_proxy() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let dead = format!("socks5://127.0.0.1:{}", free_port().unwrap());
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &proxies(&[dead]), &fronting_to(&front)));
    let (addr, tls) = (proxy.addr(), front.client_config());
    let page = block_on(async move {
        let mut session = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        session.send(b"no way to the DC").await.ok();
        closed_promptly(&mut session).await;
        https_get(addr, HOST, tls).await.unwrap()
    });
    assert_eq!(page.status, 200);
    assert_eq!(String::from_utf8_lossy(&page.body), front.page());
    assert_eq!(dc.snapshot().len(), 0);
    assert!(front.snapshot().iter().any(|c| c.requests.iter().any(|r| r == "GET / HTTP/1.1")));
}

#[test]
fn a_socks_server_dying_mid_session_ends_only_the_sessions_through_it() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let mut first =
        SocksServer::start_with(&SocksOptions { outgoing: Some(VIA_FIRST), ..Default::default() });
    let second = SocksServer::start_with(&SocksOptions { outgoing: Some(VIA_SECOND), ..Default::default() });
    let proxy = ProxyUnderTest::start(&config(
        dc.addr(),
        &proxies(&[first.url(None), second.url(None)]),
        &fronting_to(&front),
    ));
    let addr = proxy.addr();
    // Open sessions until both servers carry at least one (bounded: 1 in 2^19 runs fails).
    let mut sessions = Vec::new();
    for i in 0..20u8 {
        let marker = vec![b'm', i];
        let session = block_on({
            let marker = marker.clone();
            async move { echo_session(addr, &marker).await.unwrap() }
        });
        let via = dc_peer_of(&dc, &marker).expect("the DC saw the session");
        sessions.push((session, marker, via));
        let through = |ip| sessions.iter().any(|(_, _, via)| *via == ip);
        if through(VIA_FIRST) && through(VIA_SECOND) {
            break;
        }
    }
    assert!(sessions.iter().any(|s| s.2 == VIA_FIRST) && sessions.iter().any(|s| s.2 == VIA_SECOND));

    first.kill();
    let outcome = block_on(async move {
        for (session, marker, via) in &mut sessions {
            if *via == VIA_FIRST {
                closed_promptly(session).await;
            } else {
                session.send(marker).await.unwrap();
                assert_eq!(session.recv_exact(marker.len()).await.unwrap(), *marker);
            }
        }
        // New sessions fail over to the live server.
        for i in 0..4u8 {
            echo_session(addr, &[b'n', i]).await.unwrap();
        }
        sessions.len()
    });
    assert!(outcome >= 2);
    for i in 0..4u8 {
        assert_eq!(dc_peer_of(&dc, &[b'n', i]), Some(VIA_SECOND));
    }
}

#[test]
fn names_are_resolved_with_the_configured_dns_server() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let socks = SocksServer::start_with(&SocksOptions { outgoing: Some(VIA_FIRST), ..Default::default() });
    let localhost = Ipv4Addr::LOCALHOST;
    let dns =
        DnsServer::start(&[("site.mtg-tests.example", localhost), ("socks.mtg-tests.example", localhost)]);
    let network = format!(
        "dns = \"udp://{}\"\nproxies = [\"socks5://socks.mtg-tests.example:{}\"]",
        dns.addr(),
        socks.addr().port()
    );
    let fronting = format!("host = \"site.mtg-tests.example\"\nport = {}", front.addr().port());
    let proxy = ProxyUnderTest::start(&config(dc.addr(), &network, &fronting));
    let unknown = format!("host = \"missing.mtg-tests.example\"\nport = {}", front.addr().port());
    let lost = ProxyUnderTest::start(&config(dc.addr(), &network, &unknown));
    let (addr, lost_addr, tls) = (proxy.addr(), lost.addr(), front.client_config());
    let page = block_on(async move {
        echo_session(addr, b"named-socks").await.unwrap();
        let page = https_get(addr, HOST, tls.clone()).await.unwrap();
        assert!(https_get(lost_addr, HOST, tls).await.is_err(), "an unknown name fronts nowhere");
        page
    });
    assert_eq!(page.status, 200);
    assert_eq!(String::from_utf8_lossy(&page.body), front.page());
    assert_eq!(front.snapshot().len(), 1, "only the resolvable name reached the site");
    assert_eq!(dc_peer_of(&dc, b"named-socks"), Some(VIA_FIRST));
    let asked = dns.questions();
    let a = |name: &str| Question { name: name.to_owned(), kind: "A".to_owned() };
    for name in ["site.mtg-tests.example", "socks.mtg-tests.example", "missing.mtg-tests.example"] {
        assert!(asked.contains(&a(name)), "{name} was not asked: {asked:?}");
    }
    assert!(asked.iter().all(|q| q.name.ends_with(".mtg-tests.example")), "{asked:?}");
}

#[test]
fn the_resolver_asks_a_and_aaaa_over_udp_caches_answers_not_failures() {
    use mtg_app::config::Dns;
    use mtg_app::resolver::Resolver;
    use mtg_app::runtime::{Runtime, Selected};

    let dns = DnsServer::start(&[("cached.mtg-tests.example", Ipv4Addr::new(192, 0, 2, 9))]);
    let config = Dns::Udp(dns.addr());
    let resolver = Resolver::new(Some(&config));
    let lookup = |host: &'static str| {
        let resolver = resolver.clone();
        Selected::run(|_| async move { resolver.resolve::<Selected>(host, 443).await }).expect("runtime")
    };
    let expected: Vec<SocketAddr> = vec!["192.0.2.9:443".parse().unwrap()];
    assert_eq!(lookup("cached.mtg-tests.example").unwrap(), expected);
    let q = |name: &str, kind: &str| Question { name: name.to_owned(), kind: kind.to_owned() };
    let both = vec![q("cached.mtg-tests.example", "A"), q("cached.mtg-tests.example", "AAAA")];
    let mut asked = dns.questions();
    asked.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(asked, both);
    assert_eq!(lookup("Cached.mtg-tests.example.").unwrap(), expected);
    assert_eq!(
        dns.questions().len(),
        2,
        "the answer came from the cache (TTL {} s)",
        mtg_tests::dns_server::TTL
    );

    let err = lookup("gone.mtg-tests.example").unwrap_err();
    assert_eq!(err.to_string(), format!("gone.mtg-tests.example: no such name (asked {config})"));
    let asked = dns.questions().len();
    assert!(lookup("gone.mtg-tests.example").is_err());
    assert!(dns.questions().len() > asked, "a failure is not cached");
}
