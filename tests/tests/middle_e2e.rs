//! Middle-proxy mode end to end over loopback (issue 13), on the runtime this binary was built
//! with (`cargo test -p mtg-tests --test middle_e2e` = tokio, add
//! `--no-default-features --features smol` for smol): the real proxy with a published
//! middle-proxy snapshot, a fake middle proxy and a fake DC.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mtg_app::middle::MiddleSnapshot;
use mtg_proto::Secret;
use mtg_proto::middle::{ProxySecret, proxy_config, rpc};
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{OFFLINE_MIDDLE_PROXY, closed_port};
use mtg_tests::fake_bootstrap::{Doc, FakeBootstrap, secret_with};
use mtg_tests::fake_middle::{FakeMiddle, Seen, random_ping_id, test_secret};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const HOST: &str = "front.example";
const GLOBAL_TAG: &str = "0123456789abcdef0123456789abcdef";
const BOB_TAG: &str = "fedcba9876543210fedcba9876543210";
const WAIT: Duration = Duration::from_secs(10);

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).unwrap()
}

fn bob() -> Secret {
    Secret::fake_tls([0x22; 16], HOST).unwrap()
}

fn tag_bytes(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Alice and bob; `top` keys (the global tag), bob's own tag, the fake DC for DC 2, metrics on.
fn config(front: &FrontingSite, dc: &FakeDc, top: &str) -> String {
    config_with(front, dc, top, OFFLINE_MIDDLE_PROXY)
}

/// [`config`] with its own `[middle-proxy]` table.
fn config_with(front: &FrontingSite, dc: &FakeDc, top: &str, middle_proxy: &str) -> String {
    format!(
        "bind-to = \"127.0.0.1:1\"\n{top}\n[secrets]\nalice = \"{}\"\nbob = \"{}\"\n\
         [secret-ad-tags]\nbob = \"{BOB_TAG}\"\n\
         [domain-fronting]\nhost = \"127.0.0.1\"\nport = {}\n\
         [network.timeout]\nhandshake = \"2s\"\nidle = \"30s\"\ntcp = \"2s\"\n\
         [network.dc-overrides]\n2 = [\"{}\"]\n\
         [stats.prometheus]\nenabled = true\nbind-to = \"127.0.0.1:1\"\nhttp-path = \"/metrics\"\n\
         {middle_proxy}",
        alice().to_hex(),
        bob().to_hex(),
        front.addr().port(),
        dc.addr()
    )
}

/// The proxy with its fakes, and the snapshot pointing DC 2 (and the default) at `middle`.
struct Setup {
    proxy: ProxyUnderTest,
    dc: FakeDc,
    middle: FakeMiddle,
    _front: FrontingSite,
}

fn setup(top: &str) -> Setup {
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start(HOST);
    let middle = FakeMiddle::start();
    let proxy = ProxyUnderTest::start(&config(&front, &dc, top));
    proxy.route_to_middle(middle.addr());
    Setup { proxy, dc, middle, _front: front }
}

fn with_global_tag() -> Setup {
    setup(&format!("ad-tag = \"{GLOBAL_TAG}\""))
}

fn metrics_text(proxy: &ProxyUnderTest) -> String {
    let mut s = TcpStream::connect(proxy.metrics().unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

fn metric(text: &str, series: &str) -> Option<i64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Connects as `secret`, asks `req_pq_multi`, returns the client, its address and the nonce.
async fn res_pq(proxy: SocketAddr, secret: Secret) -> std::io::Result<(ProxyClient, SocketAddr, [u8; 16])> {
    let mut client = ProxyClient::connect_ee(proxy, &secret, 2).await?;
    let local = client.local_addr()?;
    let res = client.req_pq().await?;
    Ok((client, local, res.nonce))
}

const EXPECTED_FLAGS: u32 = rpc::FLAG_HAS_AD_TAG
    | rpc::FLAG_MAGIC
    | rpc::FLAG_EXTMODE2
    | rpc::FLAG_INTERMEDIATE
    | rpc::FLAG_NOT_ENCRYPTED;

#[test]
fn a_tagged_client_gets_res_pq_through_the_middle_proxy_with_the_global_tag() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (client, local, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.len() == 1));
    let seen = s.middle.seen();
    let req = &seen.requests[0];
    assert_eq!(req.flags & EXPECTED_FLAGS, EXPECTED_FLAGS, "flags {:#x}", req.flags);
    assert_eq!(req.flags & rpc::FLAG_PAD, 0, "PAD is never sent");
    assert_eq!(req.flags & (rpc::FLAG_ABRIDGED | rpc::FLAG_QUICKACK), 0);
    assert_eq!(req.ad_tag, Some(tag_bytes(GLOBAL_TAG)));
    assert_eq!(req.client, local, "the client's address");
    assert_eq!(req.ours.port(), addr.port(), "our client-facing port");
    assert_eq!(u32::from_le_bytes(req.packet[20..24].try_into().unwrap()), 0xbe7e_8ef1);
    assert_eq!(seen.res_pq_nonces, vec![nonce], "the fake answered this nonce");
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
    drop(client);
}

#[test]
fn the_bootstrap_finds_the_middle_proxy_a_tagged_client_then_reaches() {
    // The whole chain: getProxySecret/getProxyConfig from a fake bootstrap server name the
    // fake middle proxy; nothing is published by hand.
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start(HOST);
    let middle = FakeMiddle::start();
    let boot = FakeBootstrap::start(&[(2, middle.addr())]);
    boot.set(Doc::Secret, 200, test_secret().as_bytes());
    let top = format!("ad-tag = \"{GLOBAL_TAG}\"");
    let proxy = ProxyUnderTest::start(&config_with(&front, &dc, &top, &boot.section("1h", "")));
    assert!(proxy.wait_middle_generation(1, WAIT), "the snapshot was published from the fake server");
    let addr = proxy.addr();
    let (_client, local, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    assert!(middle.wait_until(WAIT, |seen| seen.requests.len() == 1));
    let seen = middle.seen();
    assert_eq!(seen.requests[0].ad_tag, Some(tag_bytes(GLOBAL_TAG)));
    assert_eq!(seen.requests[0].client, local);
    assert_eq!(seen.res_pq_nonces, vec![nonce]);
    assert_eq!(dc.connections(), 0, "nothing went direct");
}

#[test]
fn a_user_with_its_own_tag_carries_that_tag() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    block_on(async move { res_pq(addr, bob()).await }).expect("resPQ");
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.len() == 1));
    assert_eq!(s.middle.seen().requests[0].ad_tag, Some(tag_bytes(BOB_TAG)));
}

#[test]
fn an_untagged_user_goes_direct_and_the_middle_proxy_sees_nothing() {
    // No global tag: alice has none, bob has his own.
    let s = setup("");
    let addr = s.proxy.addr();
    let (_, _, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ from the DC");
    assert_eq!(s.dc.req_pq_nonces(), vec![nonce]);
    assert_eq!(s.middle.seen().accepted, 0, "no middle-proxy connection for an untagged user");
}

#[test]
fn a_refusing_middle_proxy_means_direct_fallback_counted() {
    let s = with_global_tag();
    s.middle.set_refuse(true);
    let addr = s.proxy.addr();
    let (_, _, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ from the DC");
    assert_eq!(s.dc.req_pq_nonces(), vec![nonce], "served direct");
    assert!(s.middle.seen().requests.is_empty());
    let text = metrics_text(&s.proxy);
    let fallbacks = metric(&text, "mtg_middle_proxy_fallbacks_total{reason=\"connect\"}")
        .or_else(|| metric(&text, "mtg_middle_proxy_fallbacks_total{reason=\"handshake\"}"));
    assert_eq!(fallbacks, Some(1), "{text}");
}

#[test]
fn two_hundred_clients_share_one_connection_and_get_their_own_answers() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let nonces = block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..200 {
            tasks.spawn(async move { res_pq(addr, alice()).await });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(done.expect("task").expect("resPQ with its own nonce"));
        }
        out
    });
    assert_eq!(nonces.len(), 200);
    let seen = s.middle.seen();
    assert_eq!(seen.handshakes, 1, "one multiplexed connection");
    assert_eq!(s.proxy.middle_pool().connections(s.middle.addr()), 1);
    let mut ids: Vec<u64> = seen.requests.iter().map(|r| r.conn_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "a conn_id per client");
    for (_, local, nonce) in &nonces {
        assert!(seen.requests.iter().any(|r| r.client == *local), "{local} recorded");
        assert!(seen.res_pq_nonces.contains(nonce));
    }
    drop(nonces);
}

fn conn_id_of(seen: &Seen, client: SocketAddr) -> u64 {
    seen.requests.iter().find(|r| r.client == client).map(|r| r.conn_id).expect("a request of this client")
}

#[test]
fn close_ext_closes_only_its_client_and_a_leaving_client_gets_close_conn() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (c1, c2) = block_on(async move {
        let one = res_pq(addr, alice()).await.expect("first");
        let two = res_pq(addr, alice()).await.expect("second");
        (one, two)
    });
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.len() == 2));
    let seen = s.middle.seen();
    let (id1, id2) = (conn_id_of(&seen, c1.1), conn_id_of(&seen, c2.1));
    assert_ne!(id1, id2);
    s.middle.close_ext(id1);
    let (mut first, mut second) = (c1.0, c2.0);
    let second = block_on(async move {
        first.wait_closed().await.expect("the closed client sees a clean close");
        second.req_pq().await.expect("the other client still works");
        second
    });
    // CLOSE_EXT needs no CLOSE_CONN back; the second client leaving does.
    drop(second);
    assert!(s.middle.wait_until(WAIT, |seen| seen.close_conns.contains(&id2)), "CLOSE_CONN for {id2}");
    assert!(!s.middle.seen().close_conns.contains(&id1));
}

#[test]
fn a_ping_gets_a_pong() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let client = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    let id = random_ping_id();
    s.middle.ping(id);
    assert!(s.middle.wait_until(WAIT, |seen| seen.pongs.contains(&id)), "PONG {id}");
    drop(client);
}

#[test]
fn a_dying_middle_proxy_closes_its_clients_and_a_new_client_reconnects() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (mut client, _, _) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    s.middle.close_all();
    block_on(async move { client.wait_closed().await }).expect("the client is closed with its connection");
    let (_, _, nonce) =
        block_on(async move { res_pq(addr, alice()).await }).expect("resPQ after reconnecting");
    let seen = s.middle.seen();
    assert_eq!(seen.handshakes, 2, "a second connection");
    assert!(seen.res_pq_nonces.contains(&nonce));
    assert_eq!(s.dc.connections(), 0);
}

#[test]
fn a_handshake_error_means_direct_fallback_and_the_endpoint_backs_off() {
    let s = with_global_tag();
    s.middle.set_reject_handshake(Some(-6));
    let addr = s.proxy.addr();
    let (_, _, first) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ from the DC");
    // The endpoint failed a moment ago: the next client goes direct at once, without a dial.
    let (_, _, second) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ from the DC");
    assert_eq!(s.dc.req_pq_nonces(), vec![first, second], "both served direct");
    let seen = s.middle.seen();
    assert_eq!((seen.accepted, seen.handshakes), (1, 0), "one attempt, rejected");
    let text = metrics_text(&s.proxy);
    assert_eq!(metric(&text, "mtg_middle_proxy_fallbacks_total{reason=\"handshake\"}"), Some(1), "{text}");
    assert_eq!(metric(&text, "mtg_middle_proxy_fallbacks_total{reason=\"backoff\"}"), Some(1), "{text}");
    assert_eq!(metric(&text, "mtg_middle_proxy_dials_total{outcome=\"handshake\"}"), Some(1), "{text}");
    assert_eq!(metric(&text, "mtg_middle_proxy_dials_total{outcome=\"ok\"}"), None, "{text}");
}

#[test]
fn a_quick_ack_request_is_flagged_and_others_are_not() {
    use mtg_tests::mtproto;
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let nonce = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let nonce = [0x5a; 16];
        let msg_id = mtproto::client_msg_id(mtproto::unix_now());
        let mut packet = mtproto::req_pq_multi_packet(&nonce, msg_id, 0, &mut rand::rng());
        packet[3] |= 0x80;
        client.send(&packet).await?;
        let answer = mtproto::parse_res_pq_payload(&client.recv_frame().await?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        client.req_pq().await?;
        std::io::Result::Ok(answer.nonce)
    })
    .expect("two resPQ answers");
    assert_eq!(nonce, [0x5a; 16]);
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.len() == 2));
    let seen = s.middle.seen();
    assert_ne!(seen.requests[0].flags & rpc::FLAG_QUICKACK, 0, "asked for a quick ack");
    assert_eq!(seen.requests[1].flags & rpc::FLAG_QUICKACK, 0);
}

/// Alice's `/stats` entry once `pred` holds for it (polled through the API state, bounded).
fn alice_stats_when(proxy: &ProxyUnderTest, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stats: serde_json::Value = serde_json::from_str(&proxy.stats_json()).unwrap();
        let alice = stats["users"]["alice"].clone();
        if pred(&alice) || std::time::Instant::now() >= deadline {
            return alice;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_middle_session_is_counted_like_a_direct_one() {
    use mtg_tests::mtproto;
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let client = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let nonce = [0x33; 16];
        let msg_id = mtproto::client_msg_id(mtproto::unix_now());
        // 4-byte length + 40-byte message, no padding: 44 bytes in.
        let packet = mtproto::req_pq_multi_packet(&nonce, msg_id, 0, &mut rand::rng());
        client.send(&packet).await?;
        client.recv_frame().await?;
        std::io::Result::Ok(client)
    })
    .expect("resPQ");
    // Out: 4-byte length + 84-byte resPQ message + 0..=3 padding bytes.
    let live = alice_stats_when(&s.proxy, |a| a["bytes_out"].as_u64().is_some_and(|b| b >= 88));
    assert_eq!(live["bytes_in"], 44, "{live}");
    assert!((88..=91).contains(&live["bytes_out"].as_u64().unwrap()), "{live}");
    assert_eq!(live["connections"], 1, "{live}");
    drop(client);
    assert!(s.proxy.wait_active_at_most(0, WAIT), "the session ended");
    let after = alice_stats_when(&s.proxy, |a| a["connections"] == 0);
    assert_eq!(after["connections"], 0, "{after}");
}

#[test]
fn a_client_that_stops_reading_is_cut_without_stalling_the_others() {
    use mtg_tests::mtproto;
    let s = with_global_tag();
    // 8000 echoes of 4 KiB (32 MiB): more than the socket buffers and the answer queue hold.
    s.middle.set_echo_copies(8000);
    let addr = s.proxy.addr();
    let (slow, slow_local) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await?;
        let local = client.local_addr()?;
        // An "encrypted" packet (non-zero auth_key_id), forwarded as is; then never read.
        let packet = mtproto::frame(&[0x77; 4096], 0, &mut rand::rng());
        client.send(&packet).await?;
        std::io::Result::Ok((client, local))
    })
    .expect("the slow client's request");
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.iter().any(|r| r.client == slow_local)));
    let id = conn_id_of(&s.middle.seen(), slow_local);
    assert!(s.middle.wait_until(WAIT, |seen| seen.close_conns.contains(&id)), "the slow client is cut");
    s.middle.set_echo_copies(1);
    let started = std::time::Instant::now();
    block_on(async move { res_pq(addr, alice()).await }).expect("another client is served");
    assert!(started.elapsed() < Duration::from_secs(2), "not stalled: {:?}", started.elapsed());
    drop(slow);
}

#[test]
fn a_media_dc_without_its_own_group_uses_the_default_group() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (_client, local) = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), -2).await?;
        let local = client.local_addr()?;
        client.req_pq().await?;
        std::io::Result::Ok((client, local))
    })
    .expect("resPQ for DC -2");
    assert!(s.middle.wait_until(WAIT, |seen| seen.requests.iter().any(|r| r.client == local)));
    assert_eq!(s.dc.connections(), 0);
}

#[test]
fn removing_a_user_closes_its_middle_sessions_only() {
    let s = setup(&format!("ad-tag = \"{GLOBAL_TAG}\"\napi-bind-to = \"127.0.0.1:1\"\napi-token = \"t\""));
    let addr = s.proxy.addr();
    let (mut kept, mut removed) = block_on(async move {
        let (kept, _, _) = res_pq(addr, alice()).await?;
        let (removed, _, _) = res_pq(addr, bob()).await?;
        std::io::Result::Ok((kept, removed))
    })
    .expect("both through the middle proxy");
    let api = s.proxy.api().expect("the API listens");
    let (status, body) = mtg_tests::api_client::request(api, "DELETE", "/secrets/bob", Some("Bearer t"), "");
    assert_eq!(status, 200, "{body}");
    block_on(async move {
        removed.wait_closed().await.expect("bob's session is closed");
        kept.req_pq().await.expect("alice's session goes on");
    });
    assert_eq!(s.dc.connections(), 0);
}

#[test]
fn a_silent_middle_proxy_is_pinged_and_one_that_stops_answering_is_dropped() {
    let s = with_global_tag();
    s.proxy.middle_pool().set_idle_ping(Duration::from_millis(300));
    let addr = s.proxy.addr();
    let (mut client, _, _) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    // Silence: the proxy pings (and the fake's pong keeps the connection up).
    assert!(s.middle.wait_until(WAIT, |seen| !seen.pings.is_empty()), "a ping after the silence");
    // The fake stops reading: no pong, so the connection is declared dead and its client closed.
    s.middle.set_stall(true);
    block_on(async move { client.wait_closed().await })
        .expect("the client is closed with the dead connection");
    assert_eq!(s.proxy.middle_pool().connections(s.middle.addr()), 0, "the dead connection is gone");
}

/// A snapshot with `secret` naming `v4` and `v6` for DC 2 (the default group).
fn snapshot(secret: ProxySecret, v4: &[SocketAddr], v6: &[SocketAddr]) -> MiddleSnapshot {
    let map = |addrs: &[SocketAddr]| {
        let lines: String = addrs.iter().map(|a| format!("proxy_for 2 {a};\n")).collect();
        proxy_config::parse(&format!("{lines}default 2;\n")).map
    };
    MiddleSnapshot { secret, v4: map(v4), v6: map(v6) }
}

#[test]
fn a_rotated_secret_retires_the_old_connection_once_its_last_client_leaves() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (mut old, _, _) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    let rotated = ProxySecret::new(&secret_with(9)).unwrap();
    s.middle.set_secret(rotated.clone());
    s.proxy.publish_middle(snapshot(rotated, &[s.middle.addr()], &[]));
    // The live client keeps its connection (and its keys); a new client gets a new connection
    // made with the new secret, and only that one takes clients now.
    let (old, new_local, mut new) = block_on(async move {
        old.req_pq().await?;
        let (new, new_local, _) = res_pq(addr, alice()).await?;
        std::io::Result::Ok((old, new_local, new))
    })
    .expect("the old client and a new one served");
    let seen = s.middle.seen();
    assert_eq!((seen.handshakes, seen.ended), (2, 0), "a second connection, nothing cut");
    assert_eq!(seen.requests.iter().map(|r| r.connection).collect::<Vec<_>>(), [0, 0, 1]);
    assert_eq!(seen.requests[2].client, new_local);
    assert_eq!(s.proxy.middle_pool().connections(s.middle.addr()), 1, "the old one takes no clients");
    let open = format!("mtg_middle_proxy_connections{{endpoint=\"{}\"}}", s.middle.addr());
    let text = metrics_text(&s.proxy);
    assert_eq!(metric(&text, &open), Some(2), "{text}");
    assert_eq!(metric(&text, "mtg_middle_proxy_dials_total{outcome=\"ok\"}"), Some(2), "{text}");
    // The retired connection closes with its last client, the new one stays.
    drop(old);
    assert!(s.middle.wait_until(WAIT, |seen| seen.ended == 1), "the retired connection stayed open");
    assert_eq!(metric(&metrics_text(&s.proxy), &open), Some(1));
    block_on(async move { new.req_pq().await }).expect("the new connection still serves");
    assert_eq!(s.middle.seen().ended, 1);
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
}

#[test]
fn an_idle_connection_to_an_endpoint_left_out_of_the_lists_closes_at_once() {
    let s = with_global_tag();
    let addr = s.proxy.addr();
    let (client, _, _) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    drop(client);
    // The session ended: its RPC_CLOSE_CONN reached the fake, the connection is idle.
    assert!(s.middle.wait_until(WAIT, |seen| seen.close_conns.len() == 1), "no RPC_CLOSE_CONN");
    let other = FakeMiddle::start();
    s.proxy.publish_middle(snapshot(test_secret(), &[other.addr()], &[]));
    assert!(s.middle.wait_until(WAIT, |seen| seen.ended == 1), "the unlisted endpoint's connection stayed");
    let (_, _, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    assert!(other.seen().res_pq_nonces.contains(&nonce), "the listed endpoint answered");
    assert_eq!(s.middle.seen().accepted, 1, "nothing more went to the unlisted one");
}

#[test]
fn an_ipv6_middle_proxy_serves_when_no_ipv4_one_answers() {
    let s = with_global_tag();
    let v6 = FakeMiddle::start_on("[::1]:0".parse().unwrap(), test_secret());
    s.proxy.publish_middle(snapshot(test_secret(), &[closed_port()], &[v6.addr()]));
    let addr = s.proxy.addr();
    let (_client, local, nonce) = block_on(async move { res_pq(addr, alice()).await }).expect("resPQ");
    let seen = v6.seen();
    assert_eq!(seen.res_pq_nonces, vec![nonce], "the IPv6 middle proxy answered");
    assert_eq!(seen.requests[0].ad_tag, Some(tag_bytes(GLOBAL_TAG)));
    assert_eq!(seen.requests[0].client, local, "the (IPv4) client's address");
    assert_eq!(s.middle.seen().accepted, 0);
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
}

#[test]
fn abridged_and_intermediate_clients_inside_fake_tls_are_served_in_their_transport() {
    use mtg_proto::middle::{Transport, TransportDeframer, transport};
    use mtg_tests::client::EeOptions;
    use mtg_tests::mtproto;
    let s = with_global_tag();
    let addr = s.proxy.addr();
    for (kind, flag) in
        [(Transport::Abridged, rpc::FLAG_ABRIDGED), (Transport::Intermediate, rpc::FLAG_INTERMEDIATE)]
    {
        let seen_before = s.middle.seen().requests.len();
        let nonce = block_on(async move {
            let options = EeOptions { tag: kind.tag(), ..EeOptions::default() };
            let mut client = ProxyClient::connect_ee_with(addr, &alice(), 2, &options).await?;
            let nonce = [0x3c; 16];
            let message = mtproto::unencrypted(
                mtproto::client_msg_id(mtproto::unix_now()),
                &mtproto::req_pq_multi_body(&nonce),
            );
            let mut packet = Vec::new();
            transport::encode_packet(kind, &message, &mut rand::rng(), &mut packet).expect("encodable");
            client.send(&packet).await?;
            // The answer comes framed in the client's own transport.
            let mut deframer = TransportDeframer::new(kind);
            let mut received = Vec::new();
            let answer = loop {
                received.extend(client.recv_exact(1).await?);
                let mut input = &received[..];
                if let Some(packet) = deframer.next(&mut input).map_err(std::io::Error::other)? {
                    break packet.data.to_vec();
                }
                received.clear();
            };
            let res = mtproto::parse_res_pq_payload(&answer).map_err(std::io::Error::other)?;
            assert_eq!(res.nonce, nonce, "{kind:?}");
            std::io::Result::Ok(nonce)
        })
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(s.middle.wait_until(WAIT, |seen| seen.requests.len() == seen_before + 1));
        let seen = s.middle.seen();
        let req = &seen.requests[seen_before];
        assert_eq!(req.flags & flag, flag, "{kind:?}: flags {:#x}", req.flags);
        assert_eq!(req.ad_tag, Some(tag_bytes(GLOBAL_TAG)));
        assert!(seen.res_pq_nonces.contains(&nonce));
    }
    assert_eq!(s.dc.connections(), 0, "nothing went direct");
}
