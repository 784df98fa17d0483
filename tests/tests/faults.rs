//! Faults around one session while another keeps relaying: the DC refuses, resets
//! mid-stream or never answers, the fronting site is down, the client vanishes. Each fault
//! closes only the affected session, within its timeout; a steady session relays byte-exact
//! all along; the proxy (a child process) logs no panic and exits cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, closed_port, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::runtime::{block_on, handle};
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "faults.example";

fn alice() -> Secret {
    Secret::fake_tls([0x61; 16], HOST).unwrap()
}

/// A session that echoes 4 KiB every 20 ms through DC 2 until stopped, checking every byte.
struct Steady {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
}

impl Steady {
    fn start(proxy: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (stop2, rounds2) = (Arc::clone(&stop), Arc::clone(&rounds));
        let task = handle().spawn(async move {
            let mut client = ProxyClient::connect_ee(proxy, &alice(), 2)
                .await
                .map_err(|e| format!("steady handshake: {e}"))?;
            let mut round = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                let payload = pattern(4096, round);
                client.send(&payload).await.map_err(|e| format!("steady round {round} send: {e}"))?;
                let echoed =
                    client.recv_exact(4096).await.map_err(|e| format!("steady round {round} recv: {e}"))?;
                if echoed != payload {
                    return Err(format!("steady round {round}: echo differs"));
                }
                round += 1;
                rounds2.store(u64::from(round), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(u64::from(round))
        });
        let steady = Self { stop, rounds, task };
        let until = Instant::now() + Duration::from_secs(10);
        while steady.rounds() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(steady.rounds() > 0, "the steady session relays before the fault");
        steady
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Checks that it kept relaying after `before` rounds, then stops it.
    fn finish(self, before: u64) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.rounds() < before + 10 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task;
        let rounds = block_on(async move { task.await.expect("the steady task panicked") })
            .unwrap_or_else(|e| panic!("the steady session broke: {e}"));
        assert!(rounds >= before + 10, "the steady session kept relaying ({before} → {rounds} rounds)");
    }
}

/// Starts the proxy for `alice` with `dcs` (DC 2 should be an echo DC) and `front`.
fn proxy(dcs: &[(i16, SocketAddr)], front: SocketAddr, timeouts: Timeouts) -> ProxyProcess {
    let config = proxy_config(&[("alice", &alice())], dcs, front, timeouts, "", "");
    ProxyProcess::start(BIN, &config, &Launch::default())
}

/// Stops the proxy: a clean exit and no panic in its log. Returns the log.
fn stop_cleanly(proxy: ProxyProcess) -> String {
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(!log.contains("panicked"), "a panic in the proxy log:\n{log}");
    log
}

/// Waits until the proxy closes `client` (any bytes first are read and dropped); returns how
/// long that took. Panics if the client's read timeout (10 s) passed first.
async fn closed_within(client: &mut ProxyClient, since: Instant) -> Duration {
    if let Err(e) = client.wait_closed().await {
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "the proxy left the client hanging");
    }
    since.elapsed()
}

#[test]
fn dc_refusing_or_closed_closes_only_that_session() {
    let good = FakeDc::start(DcMode::Echo);
    let refuse = FakeDc::start(DcMode::Refuse);
    let closed = closed_port();
    let front = FrontingSite::start(HOST);
    let proxy =
        proxy(&[(2, good.addr()), (3, refuse.addr()), (4, closed)], front.addr(), Timeouts::default());
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    let took = block_on(async move {
        let mut took = Vec::new();
        for dc in [3, 4] {
            let started = Instant::now();
            let mut victim = ProxyClient::connect_ee(addr, &alice(), dc).await.unwrap();
            victim.send(b"into the void").await.ok();
            took.push(closed_within(&mut victim, started).await);
        }
        took
    });
    // The dial timeout is 2 s; a refusal is immediate, so well under it.
    for (dc, t) in [3, 4].iter().zip(&took) {
        assert!(*t < Duration::from_secs(2), "DC {dc} fault closed the client after {t:?}");
    }
    assert!(refuse.wait_until(Duration::from_secs(5), |c| c.len() == 1), "the refusing DC was dialled");
    steady.finish(before);
    let log = stop_cleanly(proxy);
    assert!(log.lines().any(|l| l.contains("DC unreachable") && l.contains("dc=4")), "{log}");
}

#[test]
fn dc_reset_mid_stream_closes_only_that_session() {
    let good = FakeDc::start(DcMode::Echo);
    let reset = FakeDc::start(DcMode::EchoThenReset(3000));
    let front = FrontingSite::start(HOST);
    let proxy = proxy(&[(2, good.addr()), (3, reset.addr())], front.addr(), Timeouts::default());
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    let took = block_on(async move {
        let mut victim = ProxyClient::connect_ee(addr, &alice(), 3).await.unwrap();
        let first = pattern(2000, 9);
        victim.send(&first).await.unwrap();
        assert_eq!(victim.recv_exact(2000).await.unwrap(), first, "echoed before the reset");
        let started = Instant::now();
        victim.send(&pattern(2000, 10)).await.unwrap();
        // The DC echoes 1000 more bytes, then resets: those may arrive, then the close.
        closed_within(&mut victim, started).await
    });
    assert!(took < Duration::from_secs(2), "the reset reached the client after {took:?}");
    assert!(reset.wait_until(Duration::from_secs(5), |c| c.len() == 1 && c[0].ended));
    assert_eq!(reset.snapshot()[0].bytes_received, 3000, "the DC took 3000 bytes, then reset");
    steady.finish(before);
    let log = stop_cleanly(proxy);
    assert!(log.lines().any(|l| l.contains("session ended") && l.contains("dc=3")), "{log}");
}

#[test]
fn dc_blackhole_ends_by_the_idle_timeout_only_for_that_session() {
    let good = FakeDc::start(DcMode::Echo);
    let blackhole = FakeDc::start(DcMode::Blackhole);
    let front = FrontingSite::start(HOST);
    let idle = Duration::from_secs(2);
    let timeouts = Timeouts { idle: "2s", ..Timeouts::default() };
    let proxy = proxy(&[(2, good.addr()), (3, blackhole.addr())], front.addr(), timeouts);
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    let took = block_on(async move {
        let mut victim = ProxyClient::connect_ee(addr, &alice(), 3).await.unwrap();
        // The proxy's last activity (reading these bytes) cannot precede this instant.
        let started = Instant::now();
        victim.send(b"anyone there?").await.unwrap();
        closed_within(&mut victim, started).await
    });
    assert!(took >= idle - Duration::from_millis(300), "closed before the idle timeout: {took:?}");
    assert!(took < idle + Duration::from_secs(3), "closed long after the idle timeout: {took:?}");
    steady.finish(before);
    let log = stop_cleanly(proxy);
    assert!(log.lines().any(|l| l.contains("dc=3") && l.contains("reason=idle timeout")), "{log}");
}

#[test]
fn fronting_site_down_closes_probes_while_clients_relay() {
    let good = FakeDc::start(DcMode::Echo);
    let proxy = proxy(&[(2, good.addr())], closed_port(), Timeouts::default());
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    for probe in [
        &b"GET / HTTP/1.1\r\nHost: faults.example\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    ] {
        use std::io::{Read, Write};
        let started = Instant::now();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(probe).unwrap();
        let mut buf = [0u8; 64];
        let read = conn.read(&mut buf);
        assert!(
            matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "the probe gets a close, not {read:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "probe closed after {:?}", started.elapsed());
    }
    // A new valid client still connects and relays.
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        client.send(b"still here").await.unwrap();
        client.recv_exact(10).await.unwrap()
    });
    assert_eq!(echoed, b"still here");
    steady.finish(before);
    let log = stop_cleanly(proxy);
    assert_eq!(log.matches("fronting site unreachable").count(), 2, "{log}");
}

#[test]
fn vanished_clients_end_by_the_idle_timeout_only_for_themselves() {
    let good = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let idle = Duration::from_secs(2);
    let timeouts = Timeouts { idle: "2s", ..Timeouts::default() };
    let proxy = proxy(&[(2, good.addr())], front.addr(), timeouts);
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    // One client goes silent after a round trip; another floods and stops reading, so the
    // proxy's writes to it stall. Neither closes its socket.
    let (silent, flooder, flood_started) = block_on(async move {
        let mut silent = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        silent.send(b"ping").await.unwrap();
        assert_eq!(silent.recv_exact(4).await.unwrap(), b"ping");
        let mut flooder = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        // Both sessions' last activity is at the earliest the flooder's first bytes.
        let flood_started = Instant::now();
        let chunk = pattern(64 * 1024, 3);
        let flood = async {
            loop {
                flooder.send(&chunk).await?;
            }
        };
        let _: Result<std::io::Result<()>, _> = tokio::time::timeout(Duration::from_secs(1), flood).await;
        (silent, flooder, flood_started)
    });
    // The DC side of both victims (connections 2 and 3; 1 is the steady one) ends at the idle
    // timeout after their last activity.
    let ended = good.wait_until(idle + Duration::from_secs(5), |c| c.len() == 3 && c[1].ended && c[2].ended);
    let took = flood_started.elapsed();
    assert!(
        ended,
        "the vanished clients' sessions ended ({:?}):\n{}",
        good.snapshot().iter().map(|c| c.ended).collect::<Vec<_>>(),
        proxy.log()
    );
    assert!(took >= idle, "ended {took:?} after the flood began, before the idle timeout");
    assert!(!good.snapshot()[0].ended, "the steady session is untouched:\n{}", proxy.log());
    steady.finish(before);
    drop((silent, flooder));
    let log = stop_cleanly(proxy);
    assert_eq!(log.matches("reason=idle timeout").count(), 2, "{log}");
}

/// Runs `nft` with `args` (one rule or command); panics with its stderr if it fails.
fn nft(args: &str) {
    let out = std::process::Command::new("nft")
        .args(args.split(' '))
        .output()
        .expect("nft is installed (nftables)");
    assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn client_gone_without_fin_ends_by_the_idle_timeout() {
    // Dropping packets needs a namespace of its own (root): the rules then touch nothing else.
    if !mtg_tests::netns::enter("client_gone_without_fin_ends_by_the_idle_timeout") {
        return;
    }
    let good = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let idle = Duration::from_secs(2);
    let timeouts = Timeouts { idle: "2s", ..Timeouts::default() };
    let proxy = proxy(&[(2, good.addr())], front.addr(), timeouts);
    let addr = proxy.addr();
    let steady = Steady::start(addr);
    let before = steady.rounds();
    let (victim, last_byte_at) = block_on(async move {
        let mut victim = ProxyClient::connect_ee(addr, &alice(), 2).await.unwrap();
        victim.send(b"last words").await.unwrap();
        assert_eq!(victim.recv_exact(10).await.unwrap(), b"last words");
        // The proxy relayed its last byte of this session before the echo arrived here: its
        // idle timer runs from no later than now (the nft set-up below may be slow).
        let last_byte_at = Instant::now();
        // From now on every packet of the victim's connection is lost, both ways: no FIN, no
        // RST ever reaches the proxy, and what the victim sends next never arrives.
        let port = victim.local_addr().unwrap().port();
        nft("add table inet vanish");
        nft("add chain inet vanish input { type filter hook input priority 0 ; }");
        nft(&format!("add rule inet vanish input tcp sport {port} drop"));
        nft(&format!("add rule inet vanish input tcp dport {port} drop"));
        victim.send(b"lost").await.unwrap();
        (victim, last_byte_at)
    });
    let ended = good.wait_until(idle + Duration::from_secs(10), |c| c.len() == 2 && c[1].ended);
    let took = last_byte_at.elapsed();
    assert!(ended, "the vanished client's session ended at the idle timeout");
    // The echo reached the client a moment after the proxy's last activity: a small margin.
    assert!(
        took + Duration::from_millis(200) >= idle,
        "ended {took:?} after the last byte, before the idle timeout"
    );
    assert_eq!(good.snapshot()[1].bytes_received, 10, "nothing after the drop reached the DC");
    assert!(!good.snapshot()[0].ended, "the steady session is untouched");
    steady.finish(before);
    drop(victim);
    let log = stop_cleanly(proxy);
    assert_eq!(log.matches("reason=idle timeout").count(), 1, "{log}");
}
