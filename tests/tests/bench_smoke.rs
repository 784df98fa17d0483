//! Keeps `mtg-bench` from rotting: every mode at a tiny size against the in-process proxy (on
//! the runtime this crate was built with) and the real `mtg-bench plain-relay` process. Asserts
//! what each mode must have done (every session held, every probe fronted with the site's exact
//! reply, bytes moved), never a speed. The middle modes check themselves that every packet was
//! byte-exact, every byte accounted for and no session went direct (a mode errs otherwise).

use std::path::PathBuf;
use std::time::Duration;

use mtg_tests::bench::{Figure, Mode, Options, ProxySource};

fn options() -> Options {
    Options {
        proxy: ProxySource::InProcess,
        bench: PathBuf::from(env!("CARGO_BIN_EXE_mtg-bench")),
        bulk_secs: 0.3,
        warmup_secs: 0.1,
        streams: vec![1, 2],
        idle_sessions: 20,
        handshake_users: vec![1, 5],
        handshake_secs: 0.5,
        handshake_max: 10,
        probes: 20,
        probe_users: 3,
        pings: 20,
        concurrency: 4,
        settle: Duration::from_millis(50),
        middle_packet: 4096,
        rate_limit: None,
        fast_mode: false,
        zero_copy: true,
    }
}

fn run(mode: Mode) -> Vec<Figure> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async { mode.run(&options()).await }).unwrap_or_else(|e| panic!("{}: {e}", mode.name()))
}

fn figure<'a>(figures: &'a [Figure], name: &str) -> &'a Figure {
    figures.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no figure {name:?} in {figures:#?}"))
}

#[test]
fn bulk_moves_bytes_through_both_subjects() {
    let figures = run(Mode::Bulk);
    let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bulk upload, 1 stream: throughput",
            "bulk upload, 1 stream: CPU per GiB",
            "bulk download, 1 stream: throughput",
            "bulk download, 1 stream: CPU per GiB",
            "bulk both ways, 1 stream: throughput",
            "bulk both ways, 1 stream: CPU per GiB",
            "bulk upload, 2 streams: throughput",
            "bulk upload, 2 streams: CPU per GiB",
            "bulk download, 2 streams: throughput",
            "bulk download, 2 streams: CPU per GiB",
            "bulk both ways, 2 streams: throughput",
            "bulk both ways, 2 streams: CPU per GiB",
        ]
    );
    for f in figures.iter().filter(|f| f.unit == "MB/s") {
        assert!(f.ours > 0.0 && f.baseline.is_some_and(|b| b > 0.0), "{f:?}");
    }
}

#[test]
fn bulk_runs_for_a_rate_limited_user() {
    let options = Options { streams: vec![1], rate_limit: Some("8mib".into()), ..options() };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let figures = runtime.block_on(async { Mode::Bulk.run(&options).await }).expect("bulk with a rate limit");
    for f in figures.iter().filter(|f| f.unit == "MB/s") {
        assert!(f.ours > 0.0, "{f:?}");
    }
}

#[test]
fn bulk_runs_in_fast_mode() {
    let options = Options { streams: vec![1], fast_mode: true, ..options() };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let figures = runtime.block_on(async { Mode::Bulk.run(&options).await }).expect("bulk in fast mode");
    for f in figures.iter().filter(|f| f.unit == "MB/s") {
        assert!(f.ours > 0.0 && f.baseline.is_some_and(|b| b > 0.0), "{f:?}");
    }
}

#[test]
fn idle_holds_every_session() {
    let figures = run(Mode::Idle);
    let held = figure(&figures, "idle: sessions held (of 20)");
    assert_eq!((held.ours, held.baseline), (20.0, Some(20.0)));
    figure(&figures, "idle: RSS growth per session");
}

#[test]
fn handshakes_complete_with_hint_hit_and_miss() {
    let figures = run(Mode::Handshake);
    for users in [1, 5] {
        let measured = figure(&figures, &format!("handshake, {users} users: handshakes measured (hit)"));
        assert_eq!(measured.ours, 10.0, "{users} users: every handshake of the bounded run completes");
    }
    figure(&figures, "handshake, 5 users, hint miss (worst): CPU");
    assert!(figures.iter().all(|f| !f.name.contains("1 users, hint miss")));
}

#[test]
fn every_probe_is_fronted_with_the_sites_reply() {
    let figures = run(Mode::Probe);
    let fronted = figure(&figures, "probe flood: fronted with the site's reply (of 20)");
    assert_eq!((fronted.ours, fronted.baseline), (20.0, Some(20.0)));
}

#[test]
fn latency_has_percentiles() {
    let figures = run(Mode::Latency);
    let p50 = figure(&figures, "latency 1 KiB ping-pong: p50");
    let p99 = figure(&figures, "latency 1 KiB ping-pong: p99");
    assert!(p50.ours > 0.0 && p50.ours <= p99.ours, "{p50:?} {p99:?}");
    assert!(p50.baseline.unwrap() > 0.0 && p50.baseline <= p99.baseline);
}

#[test]
fn middle_bulk_moves_bytes_through_the_middle_proxy_direct_and_the_relay() {
    let figures = run(Mode::MiddleBulk);
    assert_eq!(figures.len(), 2 * 3 * 6, "{figures:#?}");
    for streams in ["1 stream", "2 streams"] {
        for direction in ["upload", "download", "both ways"] {
            for via in ["middle", "direct"] {
                let f = figure(&figures, &format!("{via} bulk {direction}, {streams}: throughput"));
                assert!(f.ours > 0.0 && f.baseline.is_some_and(|b| b > 0.0), "{f:?}");
                figure(&figures, &format!("{via} bulk {direction}, {streams}: CPU per GiB"));
                figure(&figures, &format!("{via} bulk {direction}, {streams}: load generator CPU per GiB"));
            }
        }
    }
}

#[test]
fn middle_idle_holds_every_session_through_the_middle_proxy() {
    let figures = run(Mode::MiddleIdle);
    for via in ["middle", "direct"] {
        let held = figure(&figures, &format!("{via} idle: sessions held (of 20)"));
        assert_eq!((held.ours, held.baseline), (20.0, Some(20.0)), "{via}");
        figure(&figures, &format!("{via} idle: RSS growth per session"));
    }
    // The readiness probe, the warm-up's 20 and the 20 held.
    let seen = figure(&figures, "middle idle: sessions the middle proxy saw (warm-up included)");
    assert!(seen.ours >= 41.0, "{seen:?}");
    assert!(figure(&figures, "middle idle: middle-proxy connections").ours >= 1.0);
}
