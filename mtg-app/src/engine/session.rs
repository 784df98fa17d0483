//! One client connection from accept to close: PROXY header, handshake with its deadline,
//! then domain fronting, or the DC leg and the relay, or (users with an ad tag) a middle-proxy
//! session (`middle_session.rs`) with the DC leg as its fallback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::doppel::Statistics;
use mtg_proto::proxy_protocol::{self, Parsed, ProxiedAddrs};
use mtg_proto::{
    AwaitingFrame, ClientToDc, Established, FrameHeader, FrameStep, FrontReason, HandshakeConfig,
    HandshakeContext, HelloStep, HostId, Mode, Pending, ReplayCache, ServerHandshake, UserId,
};
use tracing::{debug, info};

use crate::metrics::{GaugeGuard, Traffic};
use crate::runtime::Runtime;
use crate::users::accounting::{Admitted, NotAdmitted};
use crate::users::limits;

use super::middle_session::{self, MiddleReady};
use super::relay::{Downlink, Pump, Relay};
use super::shaper::Shaped;
use super::zero_copy::Spliced;
use super::{Directory, Settings, Shared, client_mss, fronting, upstream, with_timeout};

/// Read granularity during the handshake.
const HANDSHAKE_READ: usize = 4096;
/// Most bytes read before the handshake must have decided (a hello is at most 16 KiB).
const HANDSHAKE_MAX: usize = 20 * 1024;

/// Locks the shared replay cache only for the check itself, not the whole handshake.
struct LockedReplay<'a>(&'a Mutex<Box<dyn ReplayCache + Send>>);

impl ReplayCache for LockedReplay<'_> {
    fn check_and_insert(&mut self, key: &[u8]) -> bool {
        // A poisoned lock means a panic mid-insert elsewhere; the filter is still usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).check_and_insert(key)
    }
}

enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
}

fn unix_now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A client connection during its handshake: the socket, every byte read from it so far (the
/// core's input, and what fronting replays) and the handshake's deadline.
struct Handshaking<R: Runtime> {
    client: R::Stream,
    peer: SocketAddr,
    buf: Vec<u8>,
    started: Instant,
    deadline: Instant,
}

/// How a connection whose handshake did not end in a session is finished.
enum Exit {
    /// Close it.
    Close,
    /// Hand it to the fronting site for this host (or the default) with every byte read.
    Front(Option<HostId>),
}

impl<R: Runtime> Handshaking<R> {
    fn new(client: R::Stream, peer: SocketAddr, timeout: std::time::Duration) -> Self {
        let started = Instant::now();
        Self { client, peer, buf: Vec::with_capacity(HANDSHAKE_READ), started, deadline: started + timeout }
    }

    /// Reads more bytes into the buffer before the deadline.
    async fn read_more(&mut self) -> ReadOutcome {
        let have = self.buf.len();
        self.buf.resize(have + HANDSHAKE_READ, 0);
        let left = self.deadline.saturating_duration_since(Instant::now());
        let outcome = match with_timeout::<R, _>(left, self.client.read(&mut self.buf[have..])).await {
            Some(Ok(0)) | Some(Err(_)) => (0, ReadOutcome::Closed),
            Some(Ok(n)) => (n, ReadOutcome::Data),
            None => (0, ReadOutcome::TimedOut),
        };
        self.buf.truncate(have + outcome.0);
        outcome.1
    }

    /// Reads more of a client that is not authenticated yet: one that stops short, or sends
    /// more than a hello, is fronted (one that sent nothing is closed).
    async fn read_more_hello(&mut self) -> Result<(), Exit> {
        if self.buf.len() >= HANDSHAKE_MAX {
            return Err(Exit::Front(None));
        }
        match self.read_more().await {
            ReadOutcome::Data => Ok(()),
            ReadOutcome::Closed if self.buf.is_empty() => Err(Exit::Close),
            ReadOutcome::Closed | ReadOutcome::TimedOut => {
                debug!(peer = %self.peer, read = self.buf.len(), "handshake incomplete, fronting");
                Err(Exit::Front(None))
            }
        }
    }

    /// Reads more of an accepted client's handshake: one that stops short is closed.
    async fn read_more_frame(&mut self) -> Result<(), Exit> {
        if self.buf.len() >= HANDSHAKE_MAX {
            return Err(Exit::Front(None));
        }
        match self.read_more().await {
            ReadOutcome::Data => Ok(()),
            ReadOutcome::Closed => Err(Exit::Close),
            ReadOutcome::TimedOut => {
                debug!(peer = %self.peer, "handshake timeout after the hello");
                Err(Exit::Close)
            }
        }
    }

    /// Writes `bytes` to the client before the deadline; `false` if that failed.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        matches!(with_timeout::<R, _>(left, self.client.write_all(bytes)).await, Some(Ok(())))
    }

    /// Writes the server's handshake flight before the deadline, in MSG_EOR pieces when
    /// `client-mss-bulk` asks for small handshake segments; `false` if that failed.
    async fn write_flight(&mut self, flight: &[u8], piece: Option<u16>) -> bool {
        let Some(piece) = piece else {
            return self.write(flight).await;
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        let written = client_mss::write_in_pieces::<R>(&mut self.client, flight, piece);
        matches!(with_timeout::<R, _>(left, written).await, Some(Ok(())))
    }

    /// Finishes a connection that will not relay.
    async fn end(self, shared: &Shared, exit: Exit) {
        if let Exit::Front(host) = exit {
            front::<R>(shared, self.client, self.peer, host, &self.buf, self.started).await;
        }
    }
}

/// A session ready to relay: direct to a DC, or through a middle proxy (tagged users).
#[expect(
    clippy::large_enum_variant,
    reason = "moved once out of the boxed handshake future and unpacked at once"
)]
enum Prepared<R: Runtime> {
    Direct(Ready<R>),
    Middle(MiddleReady<R>),
}

/// Runs the handshake and opens the session; `None` when the connection was closed or fronted.
async fn prepare<R: Runtime>(
    runtime: &R,
    shared: Arc<Shared>,
    client: R::Stream,
    peer: SocketAddr,
) -> Option<Prepared<R>> {
    let settings = &shared.settings;
    if let Err(e) = settings.accepted_tcp.apply(R::socket(&client)) {
        debug!(%peer, error = %e, "cannot set client socket options");
    }
    let mut conn = Handshaking::<R>::new(client, peer, settings.config.network.timeout.handshake);
    if settings.config.proxy_protocol_listener {
        read_proxy_header(&mut conn).await?;
    }
    if let Err(list) = shared.ip_filter.check(conn.peer.ip()) {
        shared.metrics().ip_blocklisted(list.label());
        debug!(peer = %conn.peer, %list, "client address refused by the {list}, closing");
        return None;
    }
    let client_live = shared.metrics().client_connection(conn.peer.ip());
    let users = shared.users();
    let doppel = shared.doppelganger().statistics();
    match handshake(&shared, &users, &doppel, &mut conn).await {
        Ok(accepted) => open_session(runtime, &shared, conn, users, accepted, &doppel, client_live).await,
        Err(exit) => {
            conn.end(&shared, exit).await;
            None
        }
    }
}

/// Reads the optional PROXY protocol header and takes the client's address from it; `None`
/// when the connection is to be closed.
async fn read_proxy_header<R: Runtime>(conn: &mut Handshaking<R>) -> Option<()> {
    let (addrs, len) = loop {
        let parsed = proxy_protocol::parse(&conn.buf)
            .inspect_err(|e| debug!(peer = %conn.peer, error = %e, "bad PROXY header, closing"));
        match parsed.ok()? {
            Parsed::Absent => return Some(()),
            Parsed::Header { addrs, len } => break (addrs, len),
            Parsed::Incomplete => {}
        }
        if !matches!(conn.read_more().await, ReadOutcome::Data) {
            return None;
        }
    };
    if let ProxiedAddrs::Tcp { source, .. } = addrs {
        conn.peer = source;
    }
    conn.buf.drain(..len);
    Some(())
}

/// An authenticated, admitted client with its handshake finished.
struct Accepted {
    slot: Slot,
    established: Established,
}

/// The whole client handshake: authenticated, admitted, frame read.
async fn handshake<R: Runtime>(
    shared: &Shared,
    users: &Directory,
    doppel: &Statistics,
    conn: &mut Handshaking<R>,
) -> Result<Accepted, Exit> {
    let pending = authenticate(shared, users, doppel, conn).await?;
    let (slot, frame) = admit_and_accept(shared, users, pending, conn).await?;
    let established = read_frame(users, frame, conn).await?;
    Ok(Accepted { slot, established })
}

/// Feeds the core until a user's key verifies the client (an `ee` hello or a `dd` frame).
async fn authenticate<R: Runtime>(
    shared: &Shared,
    users: &Directory,
    doppel: &Statistics,
    conn: &mut Handshaking<R>,
) -> Result<Pending, Exit> {
    let config = HandshakeConfig {
        app_data_len: doppel.app_data_len(),
        flight: doppel.flight,
        ..shared.settings.handshake
    };
    let hint = shared.hints.get(conn.peer.ip());
    let mut handshake = ServerHandshake::new(config);
    loop {
        handshake = match hello_step(shared, users, conn.peer.ip(), hint, handshake, &conn.buf) {
            HelloStep::NeedMore(handshake) => handshake,
            HelloStep::Authenticated(pending) => return Ok(pending),
            HelloStep::Front { reason, host } => return Err(not_a_client(shared, conn.peer, reason, host)),
        };
        conn.read_more_hello().await?;
    }
}

/// One call of the hello stage, with the shared replay cache, the wall clock and the probe
/// limit of the client's network (a limited network gets its hint tried, no full search).
fn hello_step(
    shared: &Shared,
    users: &Directory,
    peer: std::net::IpAddr,
    hint: Option<UserId>,
    handshake: ServerHandshake,
    received: &[u8],
) -> HelloStep {
    let mut replay = LockedReplay(&shared.replay);
    let full_search = shared.probe_limit.allows_full_search(peer, Instant::now());
    let mut ctx =
        HandshakeContext { users: users.table(), replay: &mut replay, now: unix_now(), hint, full_search };
    handshake.handle_input(received, &mut ctx)
}

/// Counts and logs a connection the core found is not a client: it is fronted.
fn not_a_client(shared: &Shared, peer: SocketAddr, reason: FrontReason, host: Option<HostId>) -> Exit {
    shared.probe_limit.on_front(peer.ip(), reason, shared.metrics());
    if reason == FrontReason::Replay {
        shared.metrics().replay_attack();
    }
    debug!(%peer, %reason, "not a client");
    Exit::Front(host)
}

/// Applies the user's limits and the throttle to an authenticated client. Refused: fronted
/// like a wrong secret, nothing sent. Admitted: the server flight (`ee`) is sent and the
/// session holds a slot. Over its cap: the flight is sent too, then the close (as mtg-multi).
async fn admit_and_accept<R: Runtime>(
    shared: &Shared,
    users: &Directory,
    pending: Pending,
    conn: &mut Handshaking<R>,
) -> Result<(Slot, AwaitingFrame), Exit> {
    let user = pending.user();
    let slot = match admit(shared, users, user, conn.peer.ip()) {
        Admission::Refused(refusal) => {
            debug!(peer = %conn.peer, user = %users.name(user), %refusal, "fronting a refused user");
            return Err(Exit::Front(pending.refuse().host));
        }
        Admission::Admitted(slot) => Some(slot),
        Admission::OverCap => None,
    };
    let mut flight = Vec::new();
    let frame = pending.accept(&mut rand::rng(), &mut flight);
    if !flight.is_empty() && !conn.write_flight(&flight, shared.settings.client_segments.flight_piece).await {
        return Err(Exit::Close);
    }
    let Some(slot) = slot else {
        info!(user = %users.name(user), "throttled: user at its connection cap, closing");
        return Err(Exit::Close);
    };
    Ok((slot, frame))
}

/// Reads an accepted client's obfuscated2 frame (`ee`: in TLS records after the hello, maybe
/// already in the buffer; `dd`: it was the authentication).
async fn read_frame<R: Runtime>(
    users: &Directory,
    mut frame: AwaitingFrame,
    conn: &mut Handshaking<R>,
) -> Result<Established, Exit> {
    let user = frame.user();
    let step = loop {
        frame = match frame.handle_input(&conn.buf) {
            FrameStep::NeedMore(frame) => frame,
            FrameStep::Ready(established) => break Ok(established),
            FrameStep::Reject(reason) => break Err(reason),
        };
        conn.read_more_frame().await?;
    };
    step.map_err(|reason| {
        debug!(peer = %conn.peer, user = users.name(user), %reason, "handshake rejected");
        Exit::Close
    })
}

/// Opens an accepted client's session: through a middle proxy when its user has an ad tag
/// and one is reachable, else direct; `None` closes.
async fn open_session<R: Runtime>(
    runtime: &R,
    shared: &Shared,
    conn: Handshaking<R>,
    users: Arc<Directory>,
    accepted: Accepted,
    doppel: &Statistics,
    client_live: GaugeGuard,
) -> Option<Prepared<R>> {
    let user = accepted.established.user();
    let name = users.name(user).to_owned();
    let watch = accepted.slot.admitted.watch();
    let ad_tag = users.ad_tag(user);
    drop(users);
    let opened = Opened { conn, accepted, name, watch, client_live };
    if let Some(tag) = ad_tag {
        match middle_session::route(runtime, shared, opened.accepted.established.dc().dc).await {
            Ok(slot) => {
                if shared.fast_mode() {
                    shared.warn_fast_mode_through_middle();
                }
                return open_middle(shared, opened, slot, tag).map(Prepared::Middle);
            }
            Err(reason) => middle_session::fell_back(shared, &opened.name, reason),
        }
    }
    open_direct(shared, opened, doppel).await.map(Prepared::Direct)
}

/// An accepted client between its handshake and its relay.
struct Opened<R: Runtime> {
    conn: Handshaking<R>,
    accepted: Accepted,
    name: String,
    watch: async_channel::Receiver<()>,
    client_live: GaugeGuard,
}

/// Wires a tagged client's middle-proxy session on `slot`; `None` closes.
fn open_middle<R: Runtime>(
    shared: &Shared,
    opened: Opened<R>,
    slot: crate::middle::ClientSlot,
    tag: crate::config::AdTag,
) -> Option<MiddleReady<R>> {
    let Opened { conn, accepted, name, watch, client_live } = opened;
    let Accepted { slot: Slot { admitted, live: user_live, traffic: user_traffic }, established } = accepted;
    let dc = established.dc().dc;
    let consumed = established.consumed();
    let user = established.user();
    let leg = middle_session::client_leg::<R>(shared, &conn.client, conn.peer, established, &slot, tag)?;
    let endpoint = slot.endpoint();
    let (middle_live, middle_traffic) = shared.metrics().telegram_connection(endpoint.ip(), dc);
    shared.hints.put(conn.peer.ip(), user);
    debug!(user = %name, dc, %endpoint, conn_id = slot.conn_id(), "session through a middle proxy");
    Some(MiddleReady {
        transport: leg.leg.transport,
        client_in: leg.leg.client_in,
        client_out: leg.leg.client_out,
        base: leg.base,
        slot,
        leftover: conn.buf[consumed..].to_vec(),
        client: conn.client,
        gates: MiddleReady::<R>::gates(&admitted),
        admitted,
        meters: [user_traffic, middle_traffic],
        watch,
        idle: shared.settings.config.network.timeout.idle,
        name,
        dc,
        started: conn.started,
        _live: [client_live, user_live, middle_live],
    })
}

/// Picks and dials the DC of an accepted client and wires the relay; `None` closes.
async fn open_direct<R: Runtime>(
    shared: &Shared,
    opened: Opened<R>,
    doppel: &Statistics,
) -> Option<Ready<R>> {
    let settings = &shared.settings;
    let Opened { conn, accepted, name, watch, client_live } = opened;
    let Accepted { slot: Slot { admitted, live: user_live, traffic: user_traffic }, established } = accepted;
    let user = established.user();
    let target = pick_dc(settings, &name, established.dc())?;
    let consumed = established.consumed();
    let fast = shared.fast_mode();
    let (mut client_to_dc, down, mode, frame) = if fast {
        let (session, frame) = established.into_fast_session(target, &mut rand::rng());
        (session.client_to_dc, Downlink::from(session.dc_to_client), session.mode, frame)
    } else {
        let (session, frame) = established.into_session(target, &mut rand::rng());
        (session.client_to_dc, Downlink::from(session.dc_to_client), session.mode, frame)
    };
    let (dc_stream, dc_addr, route) = dial_dc::<R>(settings, &name, target).await?;
    let (dc_live, dc_traffic) = shared.metrics().telegram_connection(dc_addr.ip(), target);
    shared.hints.put(conn.peer.ip(), user);

    let first = first_to_dc(&mut client_to_dc, &frame, &conn.buf[consumed..], &name)?;
    drop(conn.buf);
    let up = Pump::new(client_to_dc, &first);
    // Nothing of the handshake outlives it: the session holds only the relay.
    drop(first);
    let down = Spliced::new(shaped::<R>(settings, doppel, mode, down), settings.config.network.zero_copy);
    let relay = Relay::new(conn.client, dc_stream, up, down, settings.config.network.timeout.idle)
        .counting(admitted)
        .metered(user_traffic)
        .metered(dc_traffic)
        .revocable(watch);
    Some(Ready {
        relay,
        name,
        target,
        dc_addr,
        via: route.to_string(),
        fast,
        started: conn.started,
        _live: [client_live, user_live, dc_live],
    })
}

/// The DC to dial for the one the client asked for; `None` (close) when it is unknown and no
/// fallback is allowed.
fn pick_dc(settings: &Settings, name: &str, asked: FrameHeader) -> Option<i16> {
    let requested = asked.target_dc();
    if let Some(known) = i16::try_from(requested).ok().filter(|&d| settings.dcs.knows(d)) {
        return Some(known);
    }
    if settings.config.allow_fallback_on_unknown_dc {
        debug!(user = %name, dc = requested, "unknown DC, falling back to DC 2");
        return Some(2);
    }
    info!(user = %name, dc = requested, "no addresses for DC, closing");
    None
}

/// Dials DC `target` (directly or through the SOCKS5 servers) and tunes a direct socket.
async fn dial_dc<'s, R: Runtime>(
    settings: &'s Settings,
    name: &str,
    target: i16,
) -> Option<(R::Stream, SocketAddr, upstream::Route<'s>)> {
    let addrs = settings.dcs.addresses(target);
    let dialed = upstream::dial_dc::<R>(
        addrs,
        &settings.config.network.proxies,
        &settings.resolver,
        settings.config.network.timeout.tcp,
    )
    .await;
    let (dc_stream, dc_addr, route) = match dialed {
        Ok(ok) => ok,
        Err(e) => {
            info!(user = %name, dc = target, error = %e, "DC unreachable, closing");
            return None;
        }
    };
    // As mtg: the socket to a SOCKS5 server keeps the OS defaults.
    if route == upstream::Route::Direct
        && let Err(e) = settings.dc_tcp.apply(R::socket(&dc_stream))
    {
        debug!(error = %e, "cannot set DC socket options");
    }
    Some((dc_stream, dc_addr, route))
}

/// What the relay sends the DC first: the DC frame, then whatever the client sent after its
/// handshake, re-keyed; `None` (close) when those bytes are a bad record.
fn first_to_dc(client_to_dc: &mut ClientToDc, frame: &[u8], rest: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut first = Vec::with_capacity(frame.len() + rest.len());
    first.extend_from_slice(frame);
    let mut leftover = rest.to_vec();
    match client_to_dc.process(&mut leftover) {
        Ok(range) => first.extend_from_slice(&leftover[range]),
        Err(e) => {
            debug!(user = %name, error = %e, "bad record after the frame");
            return None;
        }
    }
    Some(first)
}

/// The DC→client half: shaped like the fronting site (as configured) for FakeTLS clients.
fn shaped<R: Runtime>(settings: &Settings, doppel: &Statistics, mode: Mode, half: Downlink) -> Shaped<R> {
    let shaping = &settings.config.doppelganger;
    match mode {
        Mode::FakeTls => Shaped::<R>::new(half, shaping.drs, shaping.pacing.then_some(doppel.delays)),
        Mode::Secured => Shaped::off(half),
    }
}

/// A client session ready to relay: all a relaying session's task holds.
struct Ready<R: Runtime> {
    relay: Relay<R, R::Stream, Pump<ClientToDc>, Spliced<Shaped<R>>>,
    name: String,
    target: i16,
    dc_addr: SocketAddr,
    via: String,
    /// Whether the session runs in fast mode.
    fast: bool,
    started: Instant,
    /// The connection gauges this session holds up (client, user, DC) until it ends.
    _live: [GaugeGuard; 3],
}

/// Serves one accepted connection.
pub(crate) async fn serve_connection<R: Runtime>(
    runtime: R,
    shared: Arc<Shared>,
    client: R::Stream,
    peer: SocketAddr,
) {
    // The handshake's state is large and short-lived: boxed, it is freed when the handshake
    // ends, and a relaying session's task is sized by the relay alone.
    let prepared = Box::pin(prepare::<R>(&runtime, shared.clone(), client, peer)).await;
    let mut ready = match prepared {
        None => return,
        Some(Prepared::Direct(ready)) => ready,
        Some(Prepared::Middle(ready)) => return middle_session::serve(ready).await,
    };
    let end = (&mut ready.relay).await;
    shared.doppelganger().add_paced_records(ready.relay.down.transform().paced_records());
    info!(
        user = %ready.name,
        dc = ready.target,
        dc_addr = %ready.dc_addr,
        via = %ready.via,
        fast_mode = ready.fast,
        bytes_in = ready.relay.up.transform.bytes(),
        bytes_out = ready.relay.down.transform().bytes(),
        duration_ms = ready.started.elapsed().as_millis() as u64,
        reason = %end,
        "session ended"
    );
}

/// What the per-user limits and the throttle say about a new session of `user`.
enum Admission {
    /// Refused by its limits: front it like a wrong secret.
    Refused(limits::Refusal),
    /// At its connection cap (own or throttle): close.
    OverCap,
    /// Counted in; the slot is released when the session ends.
    Admitted(Slot),
}

/// An admitted session's place in its user's counters and metrics (released on drop).
struct Slot {
    admitted: Admitted,
    live: GaugeGuard,
    traffic: Traffic,
}

/// Decides on a new session of `user` from client address `ip` (the PROXY header's, when
/// there is one) and counts the outcome in the user's metrics.
fn admit(shared: &Shared, users: &Directory, user: UserId, ip: std::net::IpAddr) -> Admission {
    let now_ms = super::unix_ms();
    let (Some(stats), Some(limits), Some(gate)) = (users.stats(user), users.limits(user), users.gate(user))
    else {
        return Admission::OverCap;
    };
    let name = users.name(user);
    let refused = |refusal: limits::Refusal| {
        shared.metrics().user_fronted_by_limit(name, refusal.label());
        Admission::Refused(refusal)
    };
    if let Some(refusal) = limits::refusal(limits, stats, now_ms) {
        return refused(refusal);
    }
    let own_cap = (limits.max_connections > 0).then_some(u64::from(limits.max_connections));
    let throttle_cap = shared.throttle.as_ref().and_then(|t| t.cap(user.0 as usize));
    let cap = limits::tighter(own_cap, throttle_cap);
    match stats.try_admit(cap, ip, limits.max_ips, now_ms, gate.clone()) {
        Ok(mut admitted) => {
            if limits.rate_limit.is_some() {
                admitted = admitted.with_rate_meter(shared.metrics().user_rate_limited(name));
            }
            let (live, traffic) = shared.metrics().user_connection(name);
            Admission::Admitted(Slot { admitted, live, traffic })
        }
        Err(NotAdmitted::TooManyAddresses) => refused(limits::Refusal::MaxIps),
        Err(NotAdmitted::OverCap) => {
            shared.metrics().user_throttled(name);
            Admission::OverCap
        }
    }
}

async fn front<R: Runtime>(
    shared: &Shared,
    client: R::Stream,
    peer: SocketAddr,
    host: Option<HostId>,
    buf: &[u8],
    started: Instant,
) {
    let users = shared.users();
    match fronting::front::<R>(shared, &users, client, peer, host, buf).await {
        Ok((end, up, down)) => debug!(
            %peer,
            bytes_to_site = up,
            bytes_from_site = down,
            duration_ms = started.elapsed().as_millis() as u64,
            reason = %end,
            "fronted session ended"
        ),
        Err(e) => info!(%peer, error = %e, "fronting site unreachable"),
    }
}
