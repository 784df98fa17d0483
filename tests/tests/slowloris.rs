//! Slowloris: 1000 clients each dribble a valid-looking ClientHello one byte a second. The
//! proxy (a child process) stops waiting for each at the handshake timeout (2 s): the
//! fronting target is down here, so it closes them, and the test counts how many it closed
//! and when. Valid clients connect and relay byte-exact while the 1000 are hanging on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_proto::client::FakeTlsHello;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, closed_port, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess, raise_fd_limit};
use mtg_tests::runtime::{block_on, handle};
use mtg_tests::{DcMode, FakeDc};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "slow.example";
const SLOW_CLIENTS: usize = 1000;
const HANDSHAKE: Duration = Duration::from_secs(2);

/// How one slow client ended: when the proxy closed it (since it began to connect) and how many
/// bytes it had sent by then.
#[derive(Debug)]
struct Cut {
    after: Duration,
    sent: usize,
}

/// Connects, then sends `hello` one byte a second until the proxy closes the connection or
/// 10 s pass (`None` then).
async fn dribble(proxy: SocketAddr, hello: Vec<u8>, open: Arc<AtomicUsize>) -> std::io::Result<Option<Cut>> {
    // The proxy's handshake deadline starts at its accept, which cannot precede this instant.
    let connected = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    open.fetch_add(1, Ordering::Relaxed);
    let offset = Duration::from_millis(rand::rng().random_range(0..1000));
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let mut next = connected + offset;
    let cut = loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break Some(Cut { after: connected.elapsed(), sent }),
                Ok(_) => {}
            },
            () = tokio::time::sleep_until(next.into()) => {
                if connected.elapsed() > Duration::from_secs(10) {
                    break None;
                }
                if stream.write_all(&hello[sent..=sent]).await.is_err() {
                    break Some(Cut { after: connected.elapsed(), sent });
                }
                sent += 1;
                next += Duration::from_secs(1);
            }
        }
    };
    open.fetch_sub(1, Ordering::Relaxed);
    Ok(cut)
}

#[test]
fn thousand_slow_clients_are_cut_at_the_handshake_timeout_while_valid_ones_relay() {
    let limit = raise_fd_limit(8192);
    assert!(limit >= 4 * SLOW_CLIENTS as u64, "need ~{} descriptors, the limit is {limit}", 4 * SLOW_CLIENTS);
    let dc = FakeDc::start(DcMode::Echo);
    let alice = Secret::fake_tls([0x71; 16], HOST).unwrap();
    let config = proxy_config(
        &[("alice", &alice)],
        &[(2, dc.addr())],
        closed_port(),
        Timeouts { handshake: "2s", ..Timeouts::default() },
        "",
        "",
    );
    let proxy = ProxyProcess::start(BIN, &config, &Launch::default());
    let addr = proxy.addr();

    let open = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let mut hello = Vec::new();
            let now = u32::try_from(mtg_tests::mtproto::unix_now().as_secs()).unwrap();
            FakeTlsHello::build(&alice, now, &mut rand::rng(), &mut hello).unwrap();
            handle().spawn(dribble(addr, hello, Arc::clone(&open)))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::Relaxed) < SLOW_CLIENTS && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(open.load(Ordering::Relaxed), SLOW_CLIENTS, "every slow client connected");

    // Valid sessions while the slow ones hang on.
    let mut relayed_while_open = Vec::new();
    for round in 0..5u32 {
        let secret = alice.clone();
        let payload = pattern(1024, round);
        let expected = payload.clone();
        let echoed = block_on(async move {
            let mut client = ProxyClient::connect_ee(addr, &secret, 2).await?;
            client.send(&payload).await?;
            client.recv_exact(1024).await
        })
        .unwrap_or_else(|e| panic!("valid session {round} during the slowloris: {e}"));
        assert_eq!(echoed, expected, "valid session {round} echoed byte-exact");
        relayed_while_open.push(open.load(Ordering::Relaxed));
    }
    assert!(
        relayed_while_open.iter().all(|&n| n >= SLOW_CLIENTS * 9 / 10),
        "the valid sessions ran while the slow clients were connected: {relayed_while_open:?}"
    );

    let cuts: Vec<Option<Cut>> = block_on(async move {
        let mut cuts = Vec::with_capacity(slow.len());
        for task in slow {
            cuts.push(task.await.expect("a slow client task panicked").expect("slow client connect"));
        }
        cuts
    });
    let cut: Vec<&Cut> = cuts.iter().flatten().collect();
    assert_eq!(cut.len(), SLOW_CLIENTS, "the proxy closed every slow client within 10 s");
    let earliest = cut.iter().map(|c| c.after).min().unwrap();
    let latest = cut.iter().map(|c| c.after).max().unwrap();
    let most_sent = cut.iter().map(|c| c.sent).max().unwrap();
    eprintln!(
        "slowloris: {} cut, after {earliest:?} .. {latest:?}, at most {most_sent} bytes sent",
        cut.len()
    );
    assert!(earliest >= HANDSHAKE, "a slow client was cut early: {earliest:?}");
    assert!(latest <= HANDSHAKE + Duration::from_millis(2500), "a slow client was cut late: {latest:?}");
    assert!(most_sent <= 4, "a slow client sent {most_sent} bytes before the cut");
    assert_eq!(dc.connections(), 5, "only the valid sessions reached the DC");

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!log.contains("panicked"), "a panic in the proxy log");
    assert_eq!(log.matches("fronting site unreachable").count(), SLOW_CLIENTS, "each was cut by the proxy");
}
