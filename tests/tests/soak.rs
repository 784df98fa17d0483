//! Soak: many sessions opening and closing at random times through the real proxy (a child
//! process, so its RSS and descriptors are its own), each relaying bytes the echo DC sends
//! back and the client checks byte for byte.
//!
//! CI runs 2000 sessions over 60 s. The long run is
//! `MTG_SOAK_SESSIONS=8000 MTG_SOAK_SECONDS=600 cargo test --release -p mtg-tests --test soak`.
//!
//! Asserted: no session error at all; every session reached the DC; proxy RSS in the second
//! half stays within a few MiB of where the first half left it; the proxy's descriptors are
//! back to the idle baseline within a few seconds of the last close; a clean SIGTERM exit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{Timeouts, pattern, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use mtg_tests::runtime::{block_on, handle};
use mtg_tests::{DcMode, FakeDc, FrontingSite};
use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "soak.example";
/// Most RSS the proxy may gain between the end of the first half and the end of the run.
const RSS_GROWTH_LIMIT_KIB: u64 = 4 * 1024;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// One session: handshake, a few echoed payloads of random sizes with pauses, then a clean
/// shutdown or an abrupt drop. Any deviation is an error naming the session.
async fn session(proxy: std::net::SocketAddr, secret: Secret, id: u32, life: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut client = ProxyClient::connect_ee(proxy, &secret, 2)
        .await
        .map_err(|e| format!("session {id}: handshake: {e}"))?;
    let mut round = 0u32;
    loop {
        let (len, pause, last) = {
            let mut rng = rand::rng();
            (rng.random_range(1..=12 * 1024), rng.random_range(0..400), started.elapsed() >= life)
        };
        let payload = pattern(len, id.wrapping_mul(1000).wrapping_add(round));
        client.send(&payload).await.map_err(|e| format!("session {id} round {round}: send: {e}"))?;
        let echoed =
            client.recv_exact(len).await.map_err(|e| format!("session {id} round {round}: recv: {e}"))?;
        if echoed != payload {
            return Err(format!("session {id} round {round}: echo of {len} bytes differs"));
        }
        round += 1;
        if last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    if id.is_multiple_of(2) {
        client.shutdown().await.map_err(|e| format!("session {id}: shutdown: {e}"))?;
        client.wait_closed().await.map_err(|e| format!("session {id}: close: {e}"))?;
    }
    Ok(())
}

#[test]
fn sessions_open_and_close_at_random_with_verified_bytes() {
    let sessions = env_number("MTG_SOAK_SESSIONS", 2000) as u32;
    let seconds = env_number("MTG_SOAK_SECONDS", 60);
    assert!(sessions > 0 && seconds >= 4, "MTG_SOAK_SESSIONS > 0 and MTG_SOAK_SECONDS >= 4");
    let run = Duration::from_secs(seconds);
    let dc = FakeDc::start_recording("127.0.0.1:0".parse().unwrap(), DcMode::Echo, 0);
    let front = FrontingSite::start(HOST);
    let alice = Secret::fake_tls([0x51; 16], HOST).unwrap();
    let bob = Secret::fake_tls([0x52; 16], HOST).unwrap();
    let config = proxy_config(
        &[("alice", &alice), ("bob", &bob)],
        &[(2, dc.addr())],
        front.addr(),
        Timeouts::default(),
        "",
        "",
    );
    let proxy = ProxyProcess::start(BIN, &config, &Launch::default());
    let addr = proxy.addr();
    // One session first, so the runtime's lazily opened descriptors are in the baseline.
    let warm_up = alice.clone();
    block_on(async move { session(addr, warm_up, u32::MAX, Duration::ZERO).await }).unwrap();
    let fd_baseline = proxy.settled_fds();

    // Session i starts at a random moment of the run, minus room for its life (0.2–4 s).
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sessions as usize);
    for id in 0..sessions {
        let (start, life) = {
            let mut rng = rand::rng();
            let life = Duration::from_millis(rng.random_range(200..4000));
            let latest = run.saturating_sub(life + Duration::from_secs(1));
            (latest.mul_f64(rng.random_range(0.0..1.0)), life)
        };
        let secret = if id.is_multiple_of(3) { bob.clone() } else { alice.clone() };
        let (errors, done) = (Arc::clone(&errors), Arc::clone(&done));
        tasks.push(handle().spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + start)).await;
            if let Err(e) = session(addr, secret, id, life).await {
                errors.lock().unwrap().push(e);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // Sample the proxy's RSS twice a second while the sessions run.
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    let deadline = started + run + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < sessions as usize && Instant::now() < deadline {
        samples.push((started.elapsed(), proxy.rss_kib(), proxy.fds()));
        std::thread::sleep(Duration::from_millis(500));
    }
    block_on(async move {
        for task in tasks {
            task.await.expect("a session task panicked");
        }
    });
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} of {sessions} sessions failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(dc.connections(), sessions as usize + 1, "every session reached the DC exactly once");

    let half = run / 2;
    let at_half = samples.iter().rev().find(|s| s.0 <= half).map_or(0, |s| s.1);
    let late_max = samples.iter().filter(|s| s.0 > half).map(|s| s.1).max().unwrap_or(at_half);
    let peak_fds = samples.iter().map(|s| s.2).max().unwrap_or(0);
    eprintln!(
        "soak: {sessions} sessions over {seconds} s; proxy RSS {} KiB at the start of sampling, {at_half} KiB at \
         half time, {late_max} KiB max after; fds baseline {fd_baseline}, peak {peak_fds}",
        samples.first().map_or(0, |s| s.1)
    );
    assert!(
        late_max <= at_half + RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew by {} KiB in the second half (limit {RSS_GROWTH_LIMIT_KIB} KiB)",
        late_max.saturating_sub(at_half)
    );
    assert!(peak_fds > fd_baseline, "the sampler saw sessions holding descriptors");

    // Every client is gone: the proxy's descriptors return to the idle baseline.
    let until = Instant::now() + Duration::from_secs(5);
    while proxy.fds() != fd_baseline && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxy.fds(), fd_baseline, "descriptors back to the baseline after the last close");

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(!log.contains("panicked"), "a panic in the proxy log:\n{log}");
    assert_eq!(log.matches("session ended").count(), sessions as usize + 1, "one end line per session");
}
