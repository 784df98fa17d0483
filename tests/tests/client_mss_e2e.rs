//! `[network] client-mss` and `client-mss-bulk` as a packet capture shows them, on the runtime
//! this binary was built with: each test runs in a loopback-only namespace of its own (root)
//! with TSO/GSO off on `lo`, captures the proxy's port with tcpdump, relays a known payload
//! through a FakeTLS client and an echoing fake DC, and reads the segment sizes off the pcap.
//!
//! The proxy→client byte stream is split at the length of the server flight (known to the
//! client): segments before it are the handshake, segments after it the relay.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::capture::{Segment, Tcpdump, segment_offloads_off};
use mtg_tests::config_text::{Timeouts, pattern, proxy_config};
use mtg_tests::proxy_under_test::ProxyUnderTest;
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, EeOptions, FakeDc, FrontingSite, ProxyClient};

const HOST: &str = "front.example";
/// Relayed each way: enough for the bulk phase to fill segments.
const PAYLOAD: usize = 256 * 1024;

fn alice() -> Secret {
    Secret::fake_tls([0x11; 16], HOST).expect("a valid FakeTLS secret")
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("expected an IPv4 address, got {a}"),
    }
}

/// One client connection as captured.
struct Capture {
    /// The proxy's SYN-ACK.
    syn_ack: Segment,
    /// The client's SYN.
    syn: Segment,
    /// Payload sizes of proxy→client segments of the server flight.
    flight: Vec<usize>,
    /// Payload sizes of proxy→client segments of the relay.
    relay: Vec<usize>,
    /// Payload sizes of client→proxy segments carrying data.
    from_client: Vec<usize>,
    /// The server flight, bytes.
    flight_len: usize,
}

/// Starts the proxy with `network` keys in `[network]`, relays [`PAYLOAD`] bytes each way
/// byte-exactly under a capture from a client connecting with `options`, and sorts the
/// captured segments of that connection.
fn relay_under_capture(network: &str, options: EeOptions) -> Capture {
    segment_offloads_off();
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let text = proxy_config(
        &[("alice", &alice())],
        &[(2, dc.addr())],
        front.addr(),
        Timeouts::default(),
        "",
        &format!("[network]\n{network}\n"),
    );
    let proxy = ProxyUnderTest::start(&text);
    let addr = proxy.addr();
    let tcpdump = Tcpdump::start(&format!("tcp port {}", addr.port()));
    let payload = pattern(PAYLOAD, 18);
    let (echoed, client_addr, flight_len) = block_on({
        let payload = payload.clone();
        async move {
            let mut client = ProxyClient::connect_ee_with(addr, &alice(), 2, &options).await?;
            let client_addr = client.local_addr()?;
            let flight_len = client.flight_len().expect("an ee client knows its flight");
            let mut got = Vec::with_capacity(payload.len());
            for chunk in payload.chunks(64 * 1024) {
                client.send(chunk).await?;
                got.extend(client.recv_exact(chunk.len()).await?);
            }
            client.shutdown().await?;
            std::io::Result::Ok((got, client_addr, flight_len))
        }
    })
    .expect("relay through the proxy");
    assert!(echoed == payload, "the echo differs from what was sent");
    let (proxy_end, client_end) = (v4(addr), v4(client_addr));
    // The client's FIN follows every byte it read: once captured, so is the whole relay.
    let fin = |s: &[Segment]| s.iter().any(|s| s.src == client_end && s.flags & 0x01 != 0);
    assert!(tcpdump.wait_for(Duration::from_secs(10), fin), "the client's FIN was not captured");
    let segments = tcpdump.stop();
    let ours = |s: &&Segment| {
        (s.src == proxy_end && s.dst == client_end) || (s.src == client_end && s.dst == proxy_end)
    };
    let segments: Vec<Segment> = segments.iter().filter(ours).copied().collect();
    let syn = *segments.iter().find(|s| s.is_syn() && s.src == client_end).expect("the client's SYN");
    let syn_ack =
        *segments.iter().find(|s| s.is_syn_ack() && s.src == proxy_end).expect("the proxy's SYN-ACK");
    let (mut flight, mut relay, mut from_client) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen_relay = 0usize;
    for s in segments.iter().filter(|s| s.payload > 0) {
        if s.src == client_end {
            from_client.push(s.payload);
            continue;
        }
        // Stream offset of the segment's first byte (the SYN takes one sequence number).
        let offset = s.seq.wrapping_sub(syn_ack.seq).wrapping_sub(1) as usize;
        if offset < flight_len {
            assert!(offset + s.payload <= flight_len, "a segment straddles the flight and the relay: {s:?}");
            flight.push(s.payload);
        } else {
            seen_relay += s.payload;
            relay.push(s.payload);
        }
    }
    assert!(seen_relay >= PAYLOAD, "the capture holds {seen_relay} relayed bytes of {PAYLOAD}");
    Capture { syn_ack, syn, flight, relay, from_client, flight_len }
}

fn largest(sizes: &[usize]) -> usize {
    sizes.iter().copied().max().unwrap_or(0)
}

fn report(case: &str, c: &Capture) {
    println!(
        "{case} ({}): SYN mss {:?}, SYN-ACK mss {:?}; flight {} bytes in {} segments (largest {}); \
         relay down {} segments (largest {}); client→proxy {} segments (largest {})",
        mtg_tests::proxy_under_test::RUNTIME,
        c.syn.mss,
        c.syn_ack.mss,
        c.flight_len,
        c.flight.len(),
        largest(&c.flight),
        c.relay.len(),
        largest(&c.relay),
        c.from_client.len(),
        largest(&c.from_client),
    );
}

#[test]
fn client_mss_cuts_the_handshake_both_ways() {
    if !mtg_tests::netns::enter("client_mss_cuts_the_handshake_both_ways") {
        return;
    }
    let c = relay_under_capture("client-mss = 92", EeOptions::default());
    report("client-mss = 92", &c);
    assert_eq!(c.syn_ack.mss, Some(92), "the SYN-ACK advertises client-mss");
    assert!(largest(&c.flight) <= 92, "flight segments: {:?}", c.flight);
    assert!(c.flight.len() >= c.flight_len.div_ceil(92), "flight segments: {:?}", c.flight);
    // The clamp holds for the whole connection, and the client's ClientHello is cut too.
    assert!(largest(&c.relay) <= 92, "relay segments up to {}", largest(&c.relay));
    assert!(largest(&c.from_client) <= 92, "client segments up to {}", largest(&c.from_client));
}

#[test]
fn client_mss_bulk_raises_the_relay_segments() {
    if !mtg_tests::netns::enter("client_mss_bulk_raises_the_relay_segments") {
        return;
    }
    let c = relay_under_capture("client-mss = \"tspu\"\nclient-mss-bulk = 1400", EeOptions::default());
    report("client-mss = 92, client-mss-bulk = 1400", &c);
    // The listener advertises the bulk size; the proxy cuts its own flight into 92-byte pieces.
    assert_eq!(c.syn_ack.mss, Some(1400), "the SYN-ACK advertises client-mss-bulk");
    assert!(largest(&c.flight) <= 92, "flight segments: {:?}", c.flight);
    assert!(c.flight.len() >= c.flight_len.div_ceil(92), "flight segments: {:?}", c.flight);
    assert!(largest(&c.relay) > 92, "relay segments up to {}", largest(&c.relay));
    assert!(largest(&c.relay) <= 1400, "relay segments up to {}", largest(&c.relay));
}

#[test]
fn client_mss_bulk_pieces_stay_apart_behind_a_small_window() {
    if !mtg_tests::netns::enter("client_mss_bulk_pieces_stay_apart_behind_a_small_window") {
        return;
    }
    // A 2 KiB receive buffer: the flight's pieces wait in the proxy's socket behind the
    // client's window, where the kernel would merge them into full segments but for MSG_EOR.
    let small_window = EeOptions { recv_buffer: Some(2048), ..EeOptions::default() };
    let c = relay_under_capture("client-mss = 92\nclient-mss-bulk = 1400", small_window);
    report("client-mss = 92, client-mss-bulk = 1400, 2 KiB client window", &c);
    assert_eq!(c.syn_ack.mss, Some(1400));
    assert!(largest(&c.flight) <= 92, "flight segments: {:?}", c.flight);
    assert!(c.flight.len() >= c.flight_len.div_ceil(92), "flight segments: {:?}", c.flight);
    assert!(largest(&c.relay) > 92, "relay segments up to {}", largest(&c.relay));
}

#[test]
fn without_client_mss_the_kernel_mss_is_advertised() {
    if !mtg_tests::netns::enter("without_client_mss_the_kernel_mss_is_advertised") {
        return;
    }
    // The kernel's MSS on lo, from a plain listener's SYN-ACK.
    segment_offloads_off();
    let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a plain listener");
    let port = plain.local_addr().expect("its address").port();
    let tcpdump = Tcpdump::start(&format!("tcp port {port}"));
    let _client = std::net::TcpStream::connect(plain.local_addr().expect("its address")).expect("connect");
    let _accepted = plain.accept().expect("accept");
    let syn_ack = |s: &[Segment]| s.iter().any(Segment::is_syn_ack);
    assert!(tcpdump.wait_for(Duration::from_secs(10), syn_ack), "no SYN-ACK captured");
    let kernel = tcpdump.stop().iter().find(|s| s.is_syn_ack()).and_then(|s| s.mss);
    assert!(kernel.is_some_and(|mss| mss > 1400), "the kernel's MSS on lo: {kernel:?}");

    let c = relay_under_capture("", EeOptions::default());
    report("no client-mss", &c);
    assert_eq!(c.syn_ack.mss, kernel, "the SYN-ACK advertises the kernel's MSS");
    assert_eq!(c.flight.len(), 1, "the flight leaves in one segment: {:?}", c.flight);
    assert!(largest(&c.relay) > 1400, "relay segments up to {}", largest(&c.relay));
}
