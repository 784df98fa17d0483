//! The middle-proxy modes (issue 13): bulk and idle through the proxy under test in
//! middle-proxy mode, next to direct mode and the plain relay measured in the same run.
//!
//! ```text
//! client ──dd packets──► proxy (ad tag) ──RPC_PROXY_REQ──► BenchMiddle (sink | echo | serve)
//!        ◄──dd packets── proxy ◄──RPC_PROXY_ANS──────────┘
//! ```
//! The proxy is configured only through its config (`ad-tag` and `[middle-proxy]` naming the
//! bench middle proxy's files) and routes by the snapshot its bootstrap reads from them. Every
//! DC is overridden to a far end that closes at once, so a session that went direct fails:
//! measuring starts after a session's echo came back through the middle proxy, and ends by
//! checking that no session went direct and that every packet byte was accounted for.
//!
//! Clients here send real padded-intermediate packets (obfuscated2 over FakeTLS, so the client
//! encrypts and decrypts, unlike the direct modes' pre-built records) and count packet bytes
//! only: upload is what the middle proxy received, download what the clients deframed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mtg_proto::client::ClientSession;
use mtg_proto::middle::{Transport, TransportDeframer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::client::{self, IO_TIMEOUT, bounded};
use super::dc::{Behavior, BenchDc};
use super::figures::Figure;
use super::middle::{self, BenchMiddle, Command, SESSIONS_PER_ENDPOINT};
use super::modes::{self, Direction, Options, PING, Rig};

/// Answers outstanding per stream in bulk download and both ways: under the proxy's queue of
/// 64 answers per client, so the proxy never drops a bench client as too slow.
pub(super) const WINDOW: usize = 16;
/// Packets sealed per write.
const BATCH: usize = 4;
/// Bytes of the readiness probe and of the fence that ends an upload (both echoed).
const SMALL: usize = middle::MIN_PACKET;
/// How long the proxy may take to route a first session through the middle proxy.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// What the clients of one rig sent and received (packet bytes), and bad answers.
#[derive(Debug, Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    corrupt: AtomicU64,
}

/// The proxy under test in middle-proxy mode with its bench middle proxy.
struct MiddleRig {
    rig: Rig,
    middle: BenchMiddle,
    totals: Arc<Totals>,
    /// Sessions the DC had seen when the proxy was found routing (before that, sessions go
    /// direct while the bootstrap has not published its snapshot).
    direct_before: usize,
    _site: BenchDc,
}

impl MiddleRig {
    /// Starts the bench middle proxy with `endpoints` listeners and the proxy pointed at it,
    /// then waits until a session is routed through it.
    async fn start(options: &Options, endpoints: usize) -> io::Result<Self> {
        let middle = BenchMiddle::start(endpoints).await?;
        let refuse = Behavior::Reply { expect: 0, reply: 0 };
        let (rig, _, site) =
            Rig::proxy_with(options, refuse, Behavior::Sink, 1, Some(middle.config_section())).await?;
        let mut this = Self { rig, middle, totals: Arc::default(), direct_before: 0, _site: site };
        this.wait_routed().await?;
        this.direct_before = this.rig.far.accepted();
        Ok(this)
    }

    /// Retries an echoed probe until one comes back through the middle proxy (a session that
    /// goes direct is closed by the DC), within [`ROUTE_TIMEOUT`].
    async fn wait_routed(&self) -> io::Result<()> {
        let until = Instant::now() + ROUTE_TIMEOUT;
        let probe = middle::framed(Command::Echo, 0, SMALL, 1);
        loop {
            let seen = self.middle.sessions();
            // Counted into the rig's totals only once it went through the middle proxy.
            let counted = Totals::default();
            let attempt = async {
                let (mut stream, mut session) =
                    client::open_session(self.rig.subject.addr, &self.rig.secret).await?;
                ping(&mut stream, &mut session, &probe, SMALL, &counted).await
            };
            match attempt.await {
                Ok(()) if self.middle.sessions() > seen => {
                    self.totals.sent.fetch_add(counted.sent.load(Ordering::Relaxed), Ordering::Relaxed);
                    self.totals
                        .received
                        .fetch_add(counted.received.load(Ordering::Relaxed), Ordering::Relaxed);
                    return Ok(());
                }
                Ok(()) => {
                    return Err(io::Error::other("a probe came back, but not through the middle proxy"));
                }
                Err(e) if Instant::now() >= until => {
                    return Err(io::Error::other(format!(
                        "no session went through the bench middle proxy within {ROUTE_TIMEOUT:?} \
                         (the proxy's snapshot never came?): {e}"
                    )));
                }
                // Went direct: the bootstrap has not published the snapshot yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Fails unless every packet was byte-exact, every byte the clients sent reached the
    /// middle proxy and every byte it sent reached the clients, and no session went direct.
    /// Call when no packet is in flight.
    fn check_accounts(&self) -> io::Result<()> {
        let t = &self.totals;
        let corrupt = self.middle.corrupt() + t.corrupt.load(Ordering::Relaxed);
        if corrupt > 0 {
            return Err(invalid(format!("{corrupt} packets were not byte-exact")));
        }
        let (sent, received) = (t.sent.load(Ordering::Relaxed), t.received.load(Ordering::Relaxed));
        if self.middle.received() != sent || self.middle.sent() != received {
            return Err(invalid(format!(
                "bytes not accounted for: clients sent {sent}, the middle proxy received {}; \
                 the middle proxy sent {}, clients received {received}",
                self.middle.received(),
                self.middle.sent()
            )));
        }
        let direct = self.rig.far.accepted() - self.direct_before;
        if direct > 0 {
            return Err(io::Error::other(format!(
                "{direct} sessions went direct, not through the middle proxy"
            )));
        }
        Ok(())
    }
}

/// Sends `framed` (one packet, sealed) and waits for its `len`-byte answer; counts both.
async fn ping(
    stream: &mut TcpStream,
    session: &mut ClientSession,
    framed: &[u8],
    len: usize,
    totals: &Totals,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(framed.len() + 64);
    session.seal(framed, &mut out);
    bounded("sending a ping", stream.write_all(&out)).await?;
    totals.sent.fetch_add((framed.len() - 4) as u64, Ordering::Relaxed);
    let mut deframer = TransportDeframer::new(Transport::PaddedIntermediate);
    let mut buf = [0u8; 4096];
    loop {
        let n = bounded("reading a pong", stream.read(&mut buf)).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the pong"));
        }
        let range = session.open(&mut buf[..n]).map_err(invalid)?;
        let mut input = &buf[range];
        if let Some(p) = deframer.next(&mut input).map_err(invalid)? {
            if p.data.len() != len || middle::check(p.data).is_none() || !input.is_empty() {
                return Err(invalid(format!("a bad pong of {} bytes", p.data.len())));
            }
            totals.received.fetch_add(len as u64, Ordering::Relaxed);
            return Ok(());
        }
    }
}

// ---- bulk ----

/// What a bulk stream sends and what comes back.
struct Plan {
    /// [`BATCH`] framed packets.
    data: Vec<u8>,
    /// Bytes of each sent packet.
    packet: usize,
    /// Whether every sent packet is answered (else only the closing fence is).
    answered: bool,
    /// Bytes of each answer.
    answer: usize,
    /// The echoed packet that ends an unanswered stream.
    fence: Vec<u8>,
}

impl Plan {
    /// Upload: sink packets. Download: small requests, each served `size` bytes. Both ways:
    /// echoed packets.
    fn new(direction: Direction, size: usize) -> Self {
        let (command, answer_len, packet) = match direction {
            Direction::Up => (Command::Sink, 0, size),
            Direction::Down => (Command::Serve, size, SMALL),
            Direction::Both => (Command::Echo, 0, size),
        };
        Self {
            data: middle::framed(command, answer_len, packet, BATCH),
            packet,
            answered: direction != Direction::Up,
            answer: if direction == Direction::Up { SMALL } else { size },
            fence: middle::framed(Command::Echo, 0, SMALL, 1),
        }
    }
}

/// What a stream's loop did in one step.
enum Step {
    Stop,
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
}

/// Drives one stream by `plan` until `stop`, then until every answer (or the fence's) is back.
async fn drive(
    stream: TcpStream,
    mut session: ClientSession,
    plan: Arc<Plan>,
    mut stop: watch::Receiver<bool>,
    totals: Arc<Totals>,
) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut deframer = TransportDeframer::new(Transport::PaddedIntermediate);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(plan.data.len() + plan.data.len() / 256 + 64);
    let (mut pos, mut outstanding, mut stopping, mut fenced) = (0, 0, false, false);
    let frame = 4 + plan.packet;
    loop {
        if pos == out.len() {
            out.clear();
            pos = 0;
            if !stopping {
                let n = if plan.answered { (WINDOW - outstanding).min(BATCH) } else { BATCH };
                if n > 0 {
                    session.seal(&plan.data[..n * frame], &mut out);
                    totals.sent.fetch_add((n * plan.packet) as u64, Ordering::Relaxed);
                    if plan.answered {
                        outstanding += n;
                    }
                }
            } else if !plan.answered && !fenced {
                session.seal(&plan.fence, &mut out);
                totals.sent.fetch_add(SMALL as u64, Ordering::Relaxed);
                (outstanding, fenced) = (outstanding + 1, true);
            }
        }
        if stopping && pos == out.len() && outstanding == 0 && (plan.answered || fenced) {
            return Ok(());
        }
        let step = tokio::select! {
            _ = stop.changed(), if !stopping => Step::Stop,
            read = rd.read(&mut buf) => Step::Read(read),
            wrote = wr.write(&out[pos..]), if pos < out.len() => Step::Wrote(wrote),
        };
        match step {
            Step::Stop => stopping = true,
            Step::Wrote(wrote) => match wrote? {
                0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "the proxy stopped reading")),
                n => pos += n,
            },
            Step::Read(read) => {
                let n = read?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the proxy closed a bulk stream",
                    ));
                }
                let range = session.open(&mut buf[..n]).map_err(invalid)?;
                let mut input = &buf[range];
                while let Some(p) = deframer.next(&mut input).map_err(invalid)? {
                    if outstanding == 0 || p.data.len() != plan.answer || middle::check(p.data).is_none() {
                        totals.corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                    totals.received.fetch_add(p.data.len() as u64, Ordering::Relaxed);
                    outstanding = outstanding.saturating_sub(1);
                }
            }
        }
    }
}

/// Throughput (packet bytes per second), the proxy's CPU seconds per GiB and the load
/// generator's (clients and the bench middle proxy) through the middle proxy.
async fn bulk_once(
    m: &MiddleRig,
    direction: Direction,
    streams: usize,
    options: &Options,
) -> io::Result<(f64, f64, f64)> {
    let plan = Arc::new(Plan::new(direction, options.middle_packet));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for _ in 0..streams {
        let (stream, session) = client::open_session(m.rig.subject.addr, &m.rig.secret).await?;
        tasks.spawn(drive(stream, session, plan.clone(), stopped.clone(), m.totals.clone()));
    }
    let moved = || {
        let up = if direction == Direction::Down { 0 } else { m.middle.received() };
        let down = if direction == Direction::Up { 0 } else { m.totals.received.load(Ordering::Relaxed) };
        up + down
    };
    tokio::time::sleep(modes::secs(options.warmup_secs)).await;
    let (b0, s0, l0, t0) = (moved(), m.rig.subject.sample()?, modes::load_sample()?, Instant::now());
    tokio::time::sleep(modes::secs(options.bulk_secs)).await;
    let (b1, s1, l1, t1) = (moved(), m.rig.subject.sample()?, modes::load_sample()?, Instant::now());
    let _ = stop.send(true);
    let drained = tokio::time::timeout(IO_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>(())
    });
    drained.await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "bulk streams did not drain"))??;
    m.check_accounts()?;
    let bytes = (b1 - b0) as f64;
    if bytes == 0.0 {
        return Err(io::Error::other(format!("middle bulk {}: no bytes moved", direction.name())));
    }
    Ok(modes::bulk_figures(bytes, t1 - t0, (s0, s1), (l0, l1)))
}

/// Throughput, subject CPU per GiB, load generator CPU per GiB.
type Bulk = (f64, f64, f64);

/// Each bulk case through the middle proxy, direct and the plain relay, one after the other.
pub(super) async fn bulk(options: &Options) -> io::Result<Vec<Figure>> {
    let size = options.middle_packet;
    if !(middle::MIN_PACKET..=middle::MAX_PACKET).contains(&size) || !size.is_multiple_of(4) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "middle packet of {size} bytes: whole words in {}..={}",
                middle::MIN_PACKET,
                middle::MAX_PACKET
            ),
        ));
    }
    let mut figures = Vec::new();
    for &streams in &options.streams {
        for direction in Direction::ALL {
            let far = if direction == Direction::Up { Behavior::Sink } else { Behavior::Source };
            let via_middle = {
                let m = MiddleRig::start(options, 1).await?;
                bulk_once(&m, direction, streams, options).await?
            };
            let direct = {
                let (rig, _, _site) = Rig::proxy(options, far, Behavior::Sink, 1).await?;
                modes::bulk_once(&rig, direction, streams, options).await?
            };
            let base = {
                let rig = Rig::plain(options, far).await?;
                modes::bulk_once(&rig, direction, streams, options).await?
            };
            let case = modes::bulk_case(direction, streams);
            let rows =
                [("throughput", "MB/s"), ("CPU per GiB", "CPU s"), ("load generator CPU per GiB", "CPU s")];
            for (i, (what, unit)) in rows.into_iter().enumerate() {
                let get = |r: Bulk| [r.0 / 1e6, r.1, r.2][i];
                figures.push(Figure::pair(
                    format!("middle {case}: {what}"),
                    unit,
                    get(via_middle),
                    get(base),
                ));
                figures.push(Figure::pair(format!("direct {case}: {what}"), unit, get(direct), get(base)));
            }
        }
    }
    Ok(figures)
}

// ---- idle ----

/// Opens `count` sessions (`concurrency` at a time), each proven by one 1 KiB packet echoed
/// by the middle proxy.
async fn open_pinged(
    m: &MiddleRig,
    count: usize,
    concurrency: usize,
) -> io::Result<Vec<(TcpStream, ClientSession)>> {
    let framed = Arc::new(middle::framed(Command::Echo, 0, PING, 1));
    let workers = concurrency.clamp(1, count.max(1));
    let mut set = JoinSet::new();
    for w in 0..workers {
        let share = count / workers + usize::from(w < count % workers);
        let (addr, secret, framed, totals) =
            (m.rig.subject.addr, m.rig.secret.clone(), framed.clone(), m.totals.clone());
        set.spawn(async move {
            let mut held = Vec::with_capacity(share);
            for _ in 0..share {
                let (mut stream, mut session) = client::open_session(addr, &secret).await?;
                ping(&mut stream, &mut session, &framed, PING, &totals).await?;
                held.push((stream, session));
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

/// Idle sessions through the middle proxy, direct and the plain relay.
pub(super) async fn idle(options: &Options) -> io::Result<Vec<Figure>> {
    let n = options.idle_sessions;
    let (via_middle, seen, connections) = {
        let m = MiddleRig::start(options, (n + 64).div_ceil(SESSIONS_PER_ENDPOINT)).await?;
        let r =
            modes::idle_measure(&m.rig.subject, options, |count| open_pinged(&m, count, options.concurrency))
                .await?;
        m.check_accounts()?;
        (r, m.middle.sessions(), m.middle.connections())
    };
    let direct = {
        let (rig, _, _site) = Rig::proxy(options, Behavior::Echo, Behavior::Sink, 1).await?;
        modes::idle_once(&rig, options).await?
    };
    let base = {
        let rig = Rig::plain(options, Behavior::Echo).await?;
        modes::idle_once(&rig, options).await?
    };
    let mut figures = Vec::new();
    for (via, r) in [("middle", via_middle), ("direct", direct)] {
        figures.extend([
            Figure::pair(
                format!("{via} idle: sessions held (of {n})"),
                "sessions",
                r.1 as f64,
                base.1 as f64,
            ),
            Figure::pair(format!("{via} idle: RSS growth per session"), "KiB", r.0, base.0),
            Figure::pair(format!("{via} idle: RSS after closing all, over before"), "KiB", r.2, base.2),
            Figure::pair(
                format!("{via} idle: VmHWM while holding"),
                "MiB",
                r.3 as f64 / 1024.0,
                base.3 as f64 / 1024.0,
            ),
        ]);
    }
    figures.push(Figure::alone(
        "middle idle: sessions the middle proxy saw (warm-up included)",
        "sessions",
        seen as f64,
    ));
    figures.push(Figure::alone("middle idle: middle-proxy connections", "connections", connections as f64));
    Ok(figures)
}
