//! One client connection from accept to close: PROXY header, handshake with its deadline,
//! then domain fronting or the DC leg and the relay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::proxy_protocol::{self, Parsed, ProxiedAddrs};
use mtg_proto::{
    ClientToDc, FrontReason, HandshakeContext, HostId, Mode, ReplayCache, ServerHandshake, UserId, Verdict,
};
use tracing::{debug, info};

use crate::metrics::{GaugeGuard, Traffic};
use crate::runtime::Runtime;
use crate::users::accounting::Admitted;
use crate::users::limits;

use super::relay::{Pump, Relay};
use super::shaper::Shaped;
use super::{Directory, Shared, fronting, upstream, with_timeout};

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

/// Reads more bytes into `buf` before `deadline`.
async fn read_more<R: Runtime>(client: &mut R::Stream, buf: &mut Vec<u8>, deadline: Instant) -> ReadOutcome {
    let have = buf.len();
    buf.resize(have + HANDSHAKE_READ, 0);
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = match with_timeout::<R, _>(left, client.read(&mut buf[have..])).await {
        Some(Ok(0)) | Some(Err(_)) => (0, ReadOutcome::Closed),
        Some(Ok(n)) => (n, ReadOutcome::Data),
        None => (0, ReadOutcome::TimedOut),
    };
    buf.truncate(have + outcome.0);
    outcome.1
}

fn unix_now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Runs the handshake and dials the DC; `None` when the connection was closed or fronted.
async fn prepare<R: Runtime>(
    shared: Arc<Shared>,
    mut client: R::Stream,
    mut peer: SocketAddr,
) -> Option<Ready<R>> {
    let settings = &shared.settings;
    if let Err(e) = settings.accepted_tcp.apply(R::socket(&client)) {
        debug!(%peer, error = %e, "cannot set client socket options");
    }
    let started = Instant::now();
    let deadline = started + settings.handshake_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(HANDSHAKE_READ);

    if settings.proxy_protocol_listener {
        loop {
            match proxy_protocol::parse(&buf) {
                Ok(Parsed::Absent) => break,
                Ok(Parsed::Header { addrs, len }) => {
                    if let ProxiedAddrs::Tcp { source, .. } = addrs {
                        peer = source;
                    }
                    buf.drain(..len);
                    break;
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => {
                    debug!(%peer, error = %e, "bad PROXY header, closing");
                    return None;
                }
            }
            if !matches!(read_more::<R>(&mut client, &mut buf, deadline).await, ReadOutcome::Data) {
                return None;
            }
        }
    }
    if let Err(list) = shared.ip_filter.check(peer.ip()) {
        shared.metrics().ip_blocklisted(list.label());
        debug!(%peer, %list, "client address refused by the {list}, closing");
        return None;
    }
    let client_live = shared.metrics().client_connection(peer.ip());

    let users = shared.users();
    let doppel = shared.doppelganger().statistics();
    let mut handshake_config = settings.handshake;
    handshake_config.app_data_len = doppel.app_data_len();
    let mut handshake = ServerHandshake::new(handshake_config);
    let mut flight = Vec::new();
    let hint = shared.hints.get(peer.ip());
    let mut authenticated = None;
    let mut admitted = None;
    let accepted = loop {
        let verdict = {
            let mut rng = rand::rng();
            let mut replay = LockedReplay(&shared.replay);
            let mut ctx = HandshakeContext {
                users: users.table(),
                replay: &mut replay,
                rng: &mut rng,
                now: unix_now(),
                hint,
                full_search: shared.probe_limit.allows_full_search(peer.ip(), Instant::now()),
            };
            handshake.handle_input(&buf, &mut ctx, &mut flight)
        };
        match verdict {
            Verdict::NeedMore => {}
            Verdict::ServerHello { user } => {
                match admit(&shared, &users, user) {
                    Admission::Refused(refusal) => {
                        // Indistinguishable from a wrong secret: the flight is dropped unsent.
                        debug!(%peer, user = %users.name(user), %refusal, "fronting a refused user");
                        let host = users.table().user_host(user);
                        front::<R>(&shared, client, peer, host, &buf, started).await;
                        return None;
                    }
                    Admission::Admitted(slot) => admitted = Some(slot),
                    Admission::OverCap => admitted = None,
                }
                authenticated = Some(user);
                let left = deadline.saturating_duration_since(Instant::now());
                match with_timeout::<R, _>(left, client.write_all(&flight)).await {
                    Some(Ok(())) => {}
                    _ => return None,
                }
                if admitted.is_none() {
                    // As mtg-multi: the client saw a TLS handshake, then the close.
                    info!(user = %users.name(user), "throttled: user at its connection cap, closing");
                    return None;
                }
                flight = Vec::new();
                // The buffer may already hold the client's next records: decide again first.
                continue;
            }
            Verdict::Accepted { user, dc, consumed, mode } => {
                // A `dd` client has no ServerHello step: its admission happens here.
                if mode == Mode::Secured {
                    match admit(&shared, &users, user) {
                        Admission::Refused(refusal) => {
                            debug!(%peer, user = %users.name(user), %refusal, "fronting a refused user");
                            front::<R>(&shared, client, peer, None, &buf, started).await;
                            return None;
                        }
                        Admission::Admitted(slot) => admitted = Some(slot),
                        Admission::OverCap => {
                            info!(user = %users.name(user), "throttled: user at its connection cap, closing");
                            return None;
                        }
                    }
                }
                break (user, dc, consumed);
            }
            Verdict::Front { reason, host } => {
                shared.probe_limit.on_front(peer.ip(), reason, shared.metrics());
                if matches!(reason, FrontReason::Replay) {
                    shared.metrics().replay_attack();
                }
                debug!(%peer, %reason, "not a client");
                front::<R>(&shared, client, peer, host, &buf, started).await;
                return None;
            }
            Verdict::Reject(reason) => {
                debug!(%peer, user = authenticated.map(|u| users.name(u)), %reason, "handshake rejected");
                return None;
            }
        }
        if buf.len() >= HANDSHAKE_MAX {
            front::<R>(&shared, client, peer, None, &buf, started).await;
            return None;
        }
        match read_more::<R>(&mut client, &mut buf, deadline).await {
            ReadOutcome::Data => {}
            ReadOutcome::Closed if authenticated.is_some() || buf.is_empty() => return None,
            ReadOutcome::TimedOut if authenticated.is_some() => {
                debug!(%peer, "handshake timeout after the hello");
                return None;
            }
            ReadOutcome::Closed | ReadOutcome::TimedOut => {
                debug!(%peer, read = buf.len(), "handshake incomplete, fronting");
                front::<R>(&shared, client, peer, None, &buf, started).await;
                return None;
            }
        }
    };

    let (user, dc, consumed) = accepted;
    let name = users.name(user).to_owned();
    let Slot { admitted, live: user_live, traffic: user_traffic } = admitted?;
    let watch = users.switch(user).map(super::SessionSwitch::watch)?;
    drop(users);
    let requested = dc.target_dc();
    let mut target = i16::try_from(requested).ok().filter(|&d| settings.dcs.knows(d));
    if target.is_none() && settings.allow_fallback_on_unknown_dc {
        debug!(user = %name, dc = requested, "unknown DC, falling back to DC 2");
        target = Some(2);
    }
    let Some(target) = target else {
        info!(user = %name, dc = requested, "no addresses for DC, closing");
        return None;
    };
    let (session, frame) = handshake.into_session(target, &mut rand::rng())?;
    let addrs = settings.dcs.addresses(target);
    let dialed =
        upstream::dial_dc::<R>(addrs, &settings.proxies, &settings.resolver, settings.dial_timeout).await;
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
    let (dc_live, dc_traffic) = shared.metrics().telegram_connection(dc_addr.ip(), target);
    shared.hints.put(peer.ip(), user);

    let mut client_to_dc = session.client_to_dc;
    let mut first = Vec::with_capacity(frame.len() + buf.len().saturating_sub(consumed));
    first.extend_from_slice(&frame);
    let mut leftover = buf[consumed..].to_vec();
    match client_to_dc.process(&mut leftover) {
        Ok(range) => first.extend_from_slice(&leftover[range]),
        Err(e) => {
            debug!(user = %name, error = %e, "bad record after the frame");
            return None;
        }
    }
    drop(buf);
    let up = Pump::new(client_to_dc, &first);
    // Nothing of the handshake outlives it: the session holds only the relay.
    drop((first, leftover));
    let shaping = &settings.doppelganger;
    let dc_to_client = match session.mode {
        Mode::FakeTls => {
            Shaped::<R>::new(session.dc_to_client, shaping.drs, shaping.pacing.then_some(doppel.delays))
        }
        Mode::Secured => Shaped::off(session.dc_to_client),
    };
    let relay = Relay::new(client, dc_stream, up, Pump::new(dc_to_client, &[]), settings.idle_timeout)
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
        started,
        _live: [client_live, user_live, dc_live],
    })
}

/// A client session ready to relay: all a relaying session's task holds.
struct Ready<R: Runtime> {
    relay: Relay<R, ClientToDc, Shaped<R>>,
    name: String,
    target: i16,
    dc_addr: SocketAddr,
    via: String,
    started: Instant,
    /// The connection gauges this session holds up (client, user, DC) until it ends.
    _live: [GaugeGuard; 3],
}

/// Serves one accepted connection.
pub(crate) async fn serve_connection<R: Runtime>(shared: Arc<Shared>, client: R::Stream, peer: SocketAddr) {
    // The handshake's state is large and short-lived: boxed, it is freed when the handshake
    // ends, and a relaying session's task is sized by the relay alone.
    let Some(mut ready) = Box::pin(prepare::<R>(shared.clone(), client, peer)).await else {
        return;
    };
    let end = (&mut ready.relay).await;
    shared.doppelganger().add_paced_records(ready.relay.down.transform.paced_records());
    info!(
        user = %ready.name,
        dc = ready.target,
        dc_addr = %ready.dc_addr,
        via = %ready.via,
        bytes_in = ready.relay.up.transform.bytes(),
        bytes_out = ready.relay.down.transform.bytes(),
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

/// Decides on a new session of `user` and counts the outcome in the user's metrics.
fn admit(shared: &Shared, users: &Directory, user: UserId) -> Admission {
    let now_ms = super::unix_ms();
    let (Some(stats), Some(limits)) = (users.stats(user), users.limits(user)) else {
        return Admission::OverCap;
    };
    let name = users.name(user);
    if let Some(refusal) = limits::refusal(limits, stats, now_ms) {
        let reason = match refusal {
            limits::Refusal::Disabled => "disabled",
            limits::Refusal::Expired => "expired",
            limits::Refusal::OverQuota => "quota",
        };
        shared.metrics().user_fronted_by_limit(name, reason);
        return Admission::Refused(refusal);
    }
    let own_cap = (limits.max_connections > 0).then_some(u64::from(limits.max_connections));
    let throttle_cap = shared.throttle.as_ref().and_then(|t| t.cap(user.0 as usize));
    match stats.try_admit(limits::tighter(own_cap, throttle_cap), now_ms) {
        Some(admitted) => {
            let (live, traffic) = shared.metrics().user_connection(name);
            Admission::Admitted(Slot { admitted, live, traffic })
        }
        None => {
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
