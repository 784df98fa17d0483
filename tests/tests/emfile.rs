//! Accept under descriptor exhaustion: the proxy (a child process under
//! `prlimit --nofile=64:64`) is flooded with idle connections until `accept` fails with
//! EMFILE. It must back off (little CPU while exhausted, a warning in the log) and serve
//! again once the connections go away.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "emfile.example";
const FD_LIMIT: u64 = 64;
/// How long the proxy stays exhausted while its CPU time is measured.
const EXHAUSTED_FOR: Duration = Duration::from_secs(3);

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One session that echoes 32 KiB byte-exact.
fn echo_once(addr: std::net::SocketAddr, secret: &Secret, seed: u32) {
    let payload = pattern(32 * 1024, seed);
    let expected = payload.clone();
    let secret = secret.clone();
    let echoed = block_on(async move {
        let mut client = ProxyClient::connect_ee(addr, &secret, 2).await?;
        client.send(&payload).await?;
        client.recv_exact(payload.len()).await
    })
    .unwrap_or_else(|e| panic!("session {seed}: {e}"));
    assert!(echoed == expected, "session {seed}: the echo is byte-exact");
}

#[test]
fn accept_backs_off_on_emfile_and_serves_again_once_descriptors_free_up() {
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);
    let alice = Secret::fake_tls([0x81; 16], HOST).unwrap();
    // A long handshake timeout: the flood's connections hold their descriptors.
    let timeouts = Timeouts { handshake: "60s", ..Timeouts::default() };
    let config = proxy_config(&[("alice", &alice)], &[(2, dc.addr())], front.addr(), timeouts, "", "");
    let launch = Launch { nofile: Some(FD_LIMIT), ..Launch::default() };
    let proxy = ProxyProcess::start(BIN, &config, &launch);
    let addr = proxy.addr();
    // One session first, so the runtime's lazily opened descriptors are in the baseline.
    echo_once(addr, &alice, 0);
    let baseline = proxy.settled_fds();
    assert!(baseline < 32, "the idle proxy holds {baseline} descriptors");

    // Twice the limit: the kernel completes them all (backlog), the proxy can take only some.
    let flood: Vec<TcpStream> = (0..2 * FD_LIMIT).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_for("the proxy to run out of descriptors", Duration::from_secs(10), || {
        proxy.fds() as u64 >= FD_LIMIT
    });
    assert!(
        proxy.wait_for_line("out of descriptors", Duration::from_secs(5)).is_some(),
        "the listener logs its back-off:\n{}",
        proxy.log()
    );

    let cpu_before = proxy.cpu_seconds();
    std::thread::sleep(EXHAUSTED_FOR);
    let cpu = proxy.cpu_seconds() - cpu_before;
    eprintln!("emfile: {cpu:.3} s CPU over {EXHAUSTED_FOR:?} exhausted (baseline {baseline} fds)");
    assert!(cpu < EXHAUSTED_FOR.as_secs_f64() * 0.5, "busy loop: {cpu:.2} s CPU in {EXHAUSTED_FOR:?}");
    // (The count may exceed the limit by descriptors inherited above it, such as a jobserver's.)
    assert!(proxy.fds() as u64 >= FD_LIMIT, "still exhausted: the flood holds every descriptor");

    // The flood leaves; the proxy takes the backlog (each closed at once) and serves again.
    drop(flood);
    let until = Instant::now() + Duration::from_secs(10);
    while proxy.fds() != baseline && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        proxy.fds(),
        baseline,
        "descriptors back to the baseline after the flood left:\n{}",
        proxy.log()
    );
    echo_once(addr, &alice, 5);
    assert_eq!(dc.connections(), 2);

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(!log.contains("panicked"), "a panic in the proxy log:\n{log}");
}
