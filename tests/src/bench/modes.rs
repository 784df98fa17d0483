//! The benchmark modes. Each starts a fresh proxy and a fresh plain relay with their own far
//! ends, drives the same client load through both, and returns its figures. Every loop is
//! bounded in count and time.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mtg_proto::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::client::{self, bounded};
use super::dc::{Behavior, BenchDc, FRAME_LEN};
use super::figures::Figure;
use super::middle_modes;
use super::proc_stats::ProcSample;
use super::subject::{HOST, ProxySetup, ProxySource, Subject};
use super::wire::{self, BULK_RECORD, Counter, Framing};

/// Payload of one latency ping.
pub const PING: usize = 1024;
/// What the fronting site answers to each probe.
pub const SITE_REPLY: usize = 1000;

/// Sizes and places of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy to measure.
    pub proxy: ProxySource,
    /// The `mtg-bench` binary (for the plain relay).
    pub bench: PathBuf,
    /// Seconds of each bulk measurement (after the warm-up).
    pub bulk_secs: f64,
    /// Seconds of load before a bulk measurement starts.
    pub warmup_secs: f64,
    /// Concurrent streams of the bulk cases.
    pub streams: Vec<usize>,
    /// Sessions held open in the idle mode.
    pub idle_sessions: usize,
    /// User counts of the handshake mode.
    pub handshake_users: Vec<usize>,
    /// Most seconds of each handshake case.
    pub handshake_secs: f64,
    /// Most handshakes of each handshake case.
    pub handshake_max: usize,
    /// Bad hellos of the probe flood.
    pub probes: usize,
    /// Users of the proxy in the probe flood (the probes name their host).
    pub probe_users: usize,
    /// Round trips of the latency mode.
    pub pings: usize,
    /// Connections opened at once (idle, handshake, probe).
    pub concurrency: usize,
    /// Pause before memory is read, so freed memory and closed sockets settle.
    pub settle: Duration,
    /// Bytes of each bulk packet in the middle-proxy modes (whole words,
    /// [`super::middle::MIN_PACKET`]..=[`super::middle::MAX_PACKET`]).
    pub middle_packet: usize,
    /// Every user's `rate-limit` in the measured proxy (`None`: unlimited).
    pub rate_limit: Option<String>,
    /// Runs the measured proxy with `fast-mode = true`.
    pub fast_mode: bool,
    /// `[network] zero-copy` of the measured proxy (false: every byte is copied).
    pub zero_copy: bool,
}

/// One benchmark mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bulk throughput and CPU per byte.
    Bulk,
    /// Memory per idle session.
    Idle,
    /// Handshake CPU with many users, hint hit and miss.
    Handshake,
    /// Bad hellos, each fronted.
    Probe,
    /// 1 KiB ping-pong latency.
    Latency,
    /// Bulk through a middle proxy, next to direct and the plain relay.
    MiddleBulk,
    /// Memory per idle session through a middle proxy, next to direct and the plain relay.
    MiddleIdle,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Self; 7] = [
        Self::Bulk,
        Self::Idle,
        Self::Handshake,
        Self::Probe,
        Self::Latency,
        Self::MiddleBulk,
        Self::MiddleIdle,
    ];

    /// Parses a mode name (`bulk`, `idle`, `handshake`, `probe`, `latency`, `middle-bulk`,
    /// `middle-idle`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bulk => "bulk",
            Self::Idle => "idle",
            Self::Handshake => "handshake",
            Self::Probe => "probe",
            Self::Latency => "latency",
            Self::MiddleBulk => "middle-bulk",
            Self::MiddleIdle => "middle-idle",
        }
    }

    /// Runs the mode once.
    pub async fn run(self, options: &Options) -> io::Result<Vec<Figure>> {
        match self {
            Self::Bulk => bulk(options).await,
            Self::Idle => idle(options).await,
            Self::Handshake => handshake(options).await,
            Self::Probe => probe(options).await,
            Self::Latency => latency(options).await,
            Self::MiddleBulk => middle_modes::bulk(options).await,
            Self::MiddleIdle => middle_modes::idle(options).await,
        }
    }
}

/// A subject with its far end.
pub(super) struct Rig {
    pub(super) subject: Subject,
    pub(super) far: BenchDc,
    pub(super) secret: Secret,
}

impl Rig {
    pub(super) async fn proxy(
        options: &Options,
        far: Behavior,
        site: Behavior,
        users: usize,
    ) -> io::Result<(Self, ProxySetup, BenchDc)> {
        Self::proxy_with(options, far, site, users, None).await
    }

    /// [`Self::proxy`] with a `[middle-proxy]` table (and so an ad tag for every user).
    pub(super) async fn proxy_with(
        options: &Options,
        far: Behavior,
        site: Behavior,
        users: usize,
        middle_proxy: Option<String>,
    ) -> io::Result<(Self, ProxySetup, BenchDc)> {
        let far = BenchDc::start(far, FRAME_LEN).await?;
        let site = BenchDc::start(site, 0).await?;
        let mut setup = ProxySetup::with_users(users.max(1), far.addr(), site.addr());
        setup.middle_proxy = middle_proxy;
        setup.rate_limit.clone_from(&options.rate_limit);
        setup.fast_mode = options.fast_mode;
        setup.zero_copy = options.zero_copy;
        let subject = Subject::proxy(&options.proxy, &setup).await?;
        let secret = setup.users[0].clone();
        Ok((Self { subject, far, secret }, setup, site))
    }

    pub(super) async fn plain(options: &Options, far: Behavior) -> io::Result<Self> {
        let far = BenchDc::start(far, 0).await?;
        let subject = Subject::plain_relay(&options.bench, far.addr()).await?;
        let secret = Secret::fake_tls(rand::random(), HOST).expect("a valid ee secret");
        Ok(Self { subject, far, secret })
    }

    fn framing(&self) -> Framing {
        self.subject.framing
    }

    async fn open(&self) -> io::Result<TcpStream> {
        client::open(self.subject.addr, self.framing(), &self.secret).await
    }

    /// The ping record and the payload bytes its echo brings back to this subject's client.
    fn ping_record(&self) -> (Vec<u8>, usize) {
        let record = wire::records(1, PING);
        let back = if self.framing() == Framing::Tls { PING } else { record.len() };
        (record, back)
    }
}

pub(super) fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

// ---- bulk ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
    Both,
}

impl Direction {
    /// Every direction, in report order.
    pub(super) const ALL: [Self; 3] = [Self::Up, Self::Down, Self::Both];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Up => "upload",
            Self::Down => "download",
            Self::Both => "both ways",
        }
    }
}

/// Throughput (payload bytes per second), the subject's CPU seconds per GiB and the load
/// generator's (this process: clients and far end) through one subject.
pub(super) async fn bulk_once(
    rig: &Rig,
    direction: Direction,
    streams: usize,
    options: &Options,
) -> io::Result<(f64, f64, f64)> {
    let downloaded = Arc::new(AtomicU64::new(0));
    let records = Arc::new(wire::records(4, BULK_RECORD));
    let mut tasks = JoinSet::new();
    for _ in 0..streams {
        let stream = rig.open().await?;
        let (mut read, mut write) = stream.into_split();
        if direction != Direction::Down {
            let records = records.clone();
            tasks.spawn(async move {
                // Bounded: the set is aborted after the measurement.
                while write.write_all(&records).await.is_ok() {}
            });
        } else {
            // Keep the write side open: a shutdown would end the session.
            tasks.spawn(async move {
                std::future::pending::<()>().await;
                drop(write);
            });
        }
        let downloaded = downloaded.clone();
        let mut counter = Counter::new(rig.framing());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = read.read(&mut buf).await {
                downloaded.fetch_add(counter.feed(&buf[..n]) as u64, Ordering::Relaxed);
            }
        });
    }
    let moved = || {
        let up = if direction == Direction::Down { 0 } else { rig.far.received() };
        up + downloaded.load(Ordering::Relaxed)
    };
    tokio::time::sleep(secs(options.warmup_secs)).await;
    let (b0, s0, l0, t0) = (moved(), rig.subject.sample()?, load_sample()?, Instant::now());
    tokio::time::sleep(secs(options.bulk_secs)).await;
    let (b1, s1, l1, t1) = (moved(), rig.subject.sample()?, load_sample()?, Instant::now());
    tasks.abort_all();
    let bytes = (b1 - b0) as f64;
    if bytes == 0.0 {
        return Err(io::Error::other(format!("bulk {}: no bytes moved", direction.name())));
    }
    Ok(bulk_figures(bytes, t1 - t0, (s0, s1), (l0, l1)))
}

/// This process now (the load generator).
pub(super) fn load_sample() -> io::Result<ProcSample> {
    super::proc_stats::sample(std::process::id())
}

/// (bytes per second, subject CPU seconds per GiB, load generator CPU seconds per GiB) of
/// `bytes` moved in `took` between two samples of each.
pub(super) fn bulk_figures(
    bytes: f64,
    took: Duration,
    subject: (ProcSample, ProcSample),
    load: (ProcSample, ProcSample),
) -> (f64, f64, f64) {
    let per_gib =
        |(a, b): (ProcSample, ProcSample)| (b.cpu_secs - a.cpu_secs) / bytes * f64::from(1u32 << 30);
    (bytes / took.as_secs_f64(), per_gib(subject), per_gib(load))
}

/// "bulk upload, 1 stream" and the like.
pub(super) fn bulk_case(direction: Direction, streams: usize) -> String {
    format!("bulk {}, {streams} stream{}", direction.name(), if streams == 1 { "" } else { "s" })
}

async fn bulk(options: &Options) -> io::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &streams in &options.streams {
        for direction in Direction::ALL {
            let far = if direction == Direction::Up { Behavior::Sink } else { Behavior::Source };
            let ours = {
                let (rig, _, _site) = Rig::proxy(options, far, Behavior::Sink, 1).await?;
                bulk_once(&rig, direction, streams, options).await?
            };
            let base = {
                let rig = Rig::plain(options, far).await?;
                bulk_once(&rig, direction, streams, options).await?
            };
            let case = bulk_case(direction, streams);
            figures.push(Figure::pair(format!("{case}: throughput"), "MB/s", ours.0 / 1e6, base.0 / 1e6));
            figures.push(Figure::pair(format!("{case}: CPU per GiB"), "CPU s", ours.1, base.1));
        }
    }
    Ok(figures)
}

// ---- idle ----

/// Opens `count` sessions (`concurrency` at a time), each proven by one echoed ping.
pub(super) async fn open_pinged(rig: &Rig, count: usize, concurrency: usize) -> io::Result<Vec<TcpStream>> {
    let (record, back) = rig.ping_record();
    let record = Arc::new(record);
    let workers = concurrency.clamp(1, count.max(1));
    let mut set = JoinSet::new();
    for w in 0..workers {
        let share = count / workers + usize::from(w < count % workers);
        let (addr, framing, secret, record) =
            (rig.subject.addr, rig.framing(), rig.secret.clone(), record.clone());
        set.spawn(async move {
            let mut held = Vec::with_capacity(share);
            for _ in 0..share {
                let mut stream = client::open(addr, framing, &secret).await?;
                client::ping(&mut stream, &mut Counter::new(framing), &record, back).await?;
                held.push(stream);
            }
            Ok::<_, io::Error>(held)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = set.join_next().await {
        all.extend(joined.map_err(io::Error::other)??);
    }
    Ok(all)
}

/// (RSS growth per session KiB, sessions held, RSS after closing them minus before KiB, VmHWM KiB).
pub(super) async fn idle_once(rig: &Rig, options: &Options) -> io::Result<(f64, usize, f64, u64)> {
    idle_measure(&rig.subject, options, |count| open_pinged(rig, count, options.concurrency)).await
}

/// [`idle_once`] with `open(count)` opening and proving `count` sessions.
pub(super) async fn idle_measure<T, Fut>(
    subject: &Subject,
    options: &Options,
    open: impl Fn(usize) -> Fut,
) -> io::Result<(f64, usize, f64, u64)>
where
    Fut: Future<Output = io::Result<Vec<T>>>,
{
    drop(open(64.min(options.idle_sessions)).await?);
    tokio::time::sleep(options.settle).await;
    let before = subject.sample()?;
    let held = open(options.idle_sessions).await?;
    tokio::time::sleep(options.settle).await;
    let during = subject.sample()?;
    let count = held.len();
    drop(held);
    tokio::time::sleep(options.settle * 2).await;
    let after = subject.sample()?;
    let per_session = (during.rss_kib as f64 - before.rss_kib as f64) / count.max(1) as f64;
    Ok((per_session, count, after.rss_kib as f64 - before.rss_kib as f64, during.hwm_kib))
}

async fn idle(options: &Options) -> io::Result<Vec<Figure>> {
    let ours = {
        let (rig, _, _site) = Rig::proxy(options, Behavior::Echo, Behavior::Sink, 1).await?;
        idle_once(&rig, options).await?
    };
    let base = {
        let rig = Rig::plain(options, Behavior::Echo).await?;
        idle_once(&rig, options).await?
    };
    let n = options.idle_sessions;
    Ok(vec![
        Figure::pair(format!("idle: sessions held (of {n})"), "sessions", ours.1 as f64, base.1 as f64),
        Figure::pair("idle: RSS growth per session", "KiB", ours.0, base.0),
        Figure::pair("idle: RSS after closing all, over before", "KiB", ours.2, base.2),
        Figure::pair("idle: VmHWM while holding", "MiB", ours.3 as f64 / 1024.0, base.3 as f64 / 1024.0),
    ])
}

// ---- handshake ----

/// Runs `work` on `concurrency` workers until `max` runs or the time is up; returns the runs
/// completed and the subject's CPU seconds they took.
async fn cpu_per_run<F, Fut>(subject: &Subject, options: &Options, work: F) -> io::Result<(usize, f64)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<()>> + Send,
{
    let work = Arc::new(work);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + secs(options.handshake_secs);
    let max = options.handshake_max as u64;
    let s0 = subject.sample()?;
    let mut set = JoinSet::new();
    for _ in 0..options.concurrency.clamp(1, options.handshake_max.max(1)) {
        let (work, done) = (work.clone(), done.clone());
        set.spawn(async move {
            while Instant::now() < until && done.fetch_add(1, Ordering::Relaxed) < max {
                work().await?;
            }
            Ok::<_, io::Error>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(io::Error::other)??;
    }
    let s1 = subject.sample()?;
    let runs = done.load(Ordering::Relaxed).min(max) as usize;
    Ok((runs, s1.cpu_secs - s0.cpu_secs))
}

/// Proxy CPU µs per handshake with `users` users when the client address's hint names
/// `hinted` and the client is `target`.
async fn handshakes(
    rig: &Rig,
    setup: &ProxySetup,
    hinted: usize,
    target: usize,
    options: &Options,
) -> io::Result<(usize, f64)> {
    // One full session sets the address's hint (hints are stored once the DC is dialled).
    let mut session = client::open(rig.subject.addr, Framing::Tls, &setup.users[hinted]).await?;
    let (record, back) = rig.ping_record();
    client::ping(&mut session, &mut Counter::new(Framing::Tls), &record, back).await?;
    drop(session);
    let (addr, secret) = (rig.subject.addr, setup.users[target].clone());
    let (runs, cpu) = cpu_per_run(&rig.subject, options, move || {
        let secret = secret.clone();
        async move { client::handshake(addr, &secret).await.map(drop) }
    })
    .await?;
    Ok((runs, cpu / runs.max(1) as f64 * 1e6))
}

async fn handshake(options: &Options) -> io::Result<Vec<Figure>> {
    let base = {
        let rig =
            Rig::plain(options, Behavior::Reply { expect: mtg_proto::client::DEFAULT_HELLO_LEN, reply: 200 })
                .await?;
        let (addr, hello) = (rig.subject.addr, client::hello(&rig.secret).1);
        let (runs, cpu) = cpu_per_run(&rig.subject, options, move || {
            let (hello, addr) = (hello.clone(), addr);
            async move { client::send_and_drain(addr, &hello).await.map(drop) }
        })
        .await?;
        cpu / runs.max(1) as f64 * 1e6
    };
    let mut figures = Vec::new();
    for &users in &options.handshake_users {
        let (rig, setup, _site) = Rig::proxy(options, Behavior::Echo, Behavior::Sink, users).await?;
        let last = setup.users.len() - 1;
        let hit = handshakes(&rig, &setup, last, last, options).await?;
        figures.push(Figure::pair(format!("handshake, {users} users, hint hit: CPU"), "µs", hit.1, base));
        if users > 1 {
            let miss = handshakes(&rig, &setup, 0, last, options).await?;
            figures.push(Figure::alone(
                format!("handshake, {users} users, hint miss (worst): CPU"),
                "µs",
                miss.1,
            ));
            figures.push(Figure::alone(
                format!("handshake, {users} users, miss: CPU per user"),
                "µs",
                miss.1 / users as f64,
            ));
        }
        figures.push(Figure::alone(
            format!("handshake, {users} users: handshakes measured (hit)"),
            "count",
            hit.0 as f64,
        ));
    }
    Ok(figures)
}

// ---- probe flood ----

/// (probes answered with the site's exact reply, RSS after minus before KiB, CPU µs per probe).
/// Every probe is the same bad-digest hello naming the users' host, from 127.0.0.1.
async fn probe_once(rig: &Rig, options: &Options) -> io::Result<(usize, f64, f64)> {
    let stranger = Secret::fake_tls(rand::random(), HOST).expect("a valid ee secret");
    let hello = Arc::new(client::hello(&stranger).1);
    let flood = |count: usize| {
        let (addr, hello) = (rig.subject.addr, hello.clone());
        async move {
            let answered = Arc::new(AtomicU64::new(0));
            let workers = options.concurrency.clamp(1, count.max(1));
            let mut set = JoinSet::new();
            for w in 0..workers {
                let share = count / workers + usize::from(w < count % workers);
                let (hello, answered) = (hello.clone(), answered.clone());
                set.spawn(async move {
                    for _ in 0..share {
                        if client::send_and_drain(addr, &hello).await? == SITE_REPLY {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok::<_, io::Error>(())
                });
            }
            while let Some(joined) = set.join_next().await {
                joined.map_err(io::Error::other)??;
            }
            Ok::<_, io::Error>(answered.load(Ordering::Relaxed) as usize)
        }
    };
    flood((options.probes / 10).max(1)).await?;
    tokio::time::sleep(options.settle).await;
    let before: ProcSample = rig.subject.sample()?;
    let answered = flood(options.probes).await?;
    let cpu = rig.subject.sample()?.cpu_secs - before.cpu_secs;
    tokio::time::sleep(options.settle).await;
    let after = rig.subject.sample()?;
    Ok((answered, after.rss_kib as f64 - before.rss_kib as f64, cpu / options.probes.max(1) as f64 * 1e6))
}

async fn probe(options: &Options) -> io::Result<Vec<Figure>> {
    let reply = Behavior::Reply { expect: mtg_proto::client::DEFAULT_HELLO_LEN, reply: SITE_REPLY };
    let ours = {
        let (proxy, _, site) = Rig::proxy(options, Behavior::Sink, reply, options.probe_users).await?;
        // The rig's far end is the DC; probes go to the site.
        let rig = Rig { subject: proxy.subject, far: site, secret: proxy.secret };
        drop(proxy.far);
        probe_once(&rig, options).await?
    };
    let base = {
        let rig = Rig::plain(options, reply).await?;
        probe_once(&rig, options).await?
    };
    let n = options.probes;
    Ok(vec![
        Figure::pair(
            format!("probe flood: fronted with the site's reply (of {n})"),
            "probes",
            ours.0 as f64,
            base.0 as f64,
        ),
        Figure::pair("probe flood: RSS after, over before", "KiB", ours.1, base.1),
        Figure::pair("probe flood: CPU per probe", "µs", ours.2, base.2),
    ])
}

// ---- latency ----

/// (p50, p99) round-trip µs of 1 KiB pings.
async fn latency_once(rig: &Rig, options: &Options) -> io::Result<(f64, f64)> {
    let mut stream = rig.open().await?;
    let (record, back) = rig.ping_record();
    let mut counter = Counter::new(rig.framing());
    for _ in 0..(options.pings / 10).max(1) {
        client::ping(&mut stream, &mut counter, &record, back).await?;
    }
    let mut rtts = Vec::with_capacity(options.pings);
    for _ in 0..options.pings.max(1) {
        let t = Instant::now();
        client::ping(&mut stream, &mut counter, &record, back).await?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    bounded("closing", stream.shutdown()).await?;
    rtts.sort_by(f64::total_cmp);
    let at = |q: f64| rtts[((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1];
    Ok((at(0.50), at(0.99)))
}

async fn latency(options: &Options) -> io::Result<Vec<Figure>> {
    let ours = {
        let (rig, _, _site) = Rig::proxy(options, Behavior::Echo, Behavior::Sink, 1).await?;
        latency_once(&rig, options).await?
    };
    let base = {
        let rig = Rig::plain(options, Behavior::Echo).await?;
        latency_once(&rig, options).await?
    };
    Ok(vec![
        Figure::pair("latency 1 KiB ping-pong: p50", "µs", ours.0, base.0),
        Figure::pair("latency 1 KiB ping-pong: p99", "µs", ours.1, base.1),
        Figure::alone("latency: added p99 over the plain relay", "µs", ours.1 - base.1),
    ])
}
