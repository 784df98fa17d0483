//! A tagged user's session through a middle proxy (issue 13): the client's plaintext is split
//! into transport packets, each forwardable one goes to the middle proxy as `RPC_PROXY_REQ`
//! with the user's ad tag, and answers come back framed in the client's transport.
//!
//! ```text
//!  client ─► ClientIn ─► TransportDeframer ─► forwardable? ─► ProxyReq ─► ClientSlot::send
//!  client ◄─ ClientOut ◄─ encode_packet / simple_ack_bytes ◄─ ClientSlot::recv
//! ```
//! Accounting is the direct relay's: the same user counters (`Admitted`), the same traffic
//! meters, the same idle timeout, the same revocation by a reload and the same `rate-limit`
//! (reads from the client wait for the user's up bucket, answer records for its down bucket).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::AsyncWriteExt;
use futures_util::future::{Either, select};
use mtg_proto::middle::{ProxyMap, ProxyReq, Transport, TransportDeframer, kdf, rpc, transport};
use mtg_proto::{ClientIn, ClientLeg, ClientOut, Established};
use rand::seq::SliceRandom;
use tracing::{debug, info};

use crate::config::{AdTag, PreferIp};
use crate::metrics::{GaugeGuard, Traffic};
use crate::middle::MiddleSnapshot;
use crate::middle::conn::{Answer, CONNECT_TIMEOUT, ClientSlot, HANDSHAKE_TIMEOUT};
use crate::runtime::Runtime;
use crate::users::accounting::Admitted;

use super::buffer_pool;
use super::rate_gate::RateGate;
use super::relay::{End, READ_CHUNK};
use super::{Shared, with_timeout};
use crate::users::rate_limit::Direction;

/// Least time between two fallback log lines.
const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(10);

/// The middle proxies to try for signed DC `dc`, in order: IPv4 ones first (in random order),
/// then IPv6 ones, as a fallback when no IPv4 one answers; `only-ipv6` takes the IPv6 ones
/// alone, `only-ipv4` the IPv4 ones alone. IPv6 middle proxies come second whatever
/// `prefer-ip` says otherwise: they are known to be flaky (spec §10), and `prefer-ipv6` is
/// the default, not a choice.
fn candidates(snapshot: &MiddleSnapshot, prefer: PreferIp, dc: i16) -> Vec<SocketAddr> {
    let mut rng = rand::rng();
    let mut family = |map: &ProxyMap| {
        let mut group = map.group(dc).to_vec();
        group.shuffle(&mut rng);
        group
    };
    match prefer {
        PreferIp::OnlyIpv4 => family(&snapshot.v4),
        PreferIp::OnlyIpv6 => family(&snapshot.v6),
        PreferIp::PreferIpv4 | PreferIp::PreferIpv6 => {
            let mut all = family(&snapshot.v4);
            all.extend(family(&snapshot.v6));
            all
        }
    }
}

/// Finds a middle proxy for a client of signed DC `dc`: the [`candidates`] in order, the next
/// on failure, all within the connect + handshake deadline. `Err` names why the client goes
/// direct instead.
pub(super) async fn route<R: Runtime>(
    runtime: &R,
    shared: &Shared,
    dc: i16,
) -> Result<ClientSlot, &'static str> {
    let Some(snapshot) = shared.middle().current() else {
        return Err("no_config");
    };
    let config = &shared.settings.config;
    let group = candidates(&snapshot, config.prefer_ip, dc);
    if group.is_empty() {
        return Err("no_endpoint");
    }
    let (v4, v6) = (config.public_ipv4, config.public_ipv6);
    let attempts = async {
        let mut last = "unreachable";
        for addr in group {
            let pool = shared.middle_pool();
            match pool.open_client(runtime, shared.metrics(), addr, &snapshot.secret, (v4, v6)).await {
                Ok(slot) => return Ok(slot),
                Err(e) => last = e.label(),
            }
        }
        Err(last)
    };
    with_timeout::<R, _>(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT, attempts).await.unwrap_or(Err("timeout"))
}

/// Counts a tagged session that goes direct and logs it, at most once per
/// [`FALLBACK_LOG_EVERY`].
pub(super) fn fell_back(shared: &Shared, name: &str, reason: &'static str) {
    static LAST_LOG_MS: AtomicU64 = AtomicU64::new(0);
    shared.metrics().middle_proxy_fallback(reason);
    let now = super::unix_ms().max(0) as u64;
    let last = LAST_LOG_MS.load(Ordering::Relaxed);
    if reason != "no_config"
        && now.saturating_sub(last) >= FALLBACK_LOG_EVERY.as_millis() as u64
        && LAST_LOG_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        info!(user = %name, reason, "no middle proxy reachable: serving a tagged user direct, without its ad tag");
    } else {
        debug!(user = %name, reason, "tagged user served direct");
    }
}

/// What a middle-proxy session's task holds.
pub(super) struct MiddleReady<R: Runtime> {
    pub(super) client: R::Stream,
    pub(super) transport: Transport,
    pub(super) client_in: ClientIn,
    pub(super) client_out: ClientOut,
    pub(super) slot: ClientSlot,
    /// The request fields every packet of this client shares.
    pub(super) base: ProxyReq,
    /// What the client sent after its handshake (still encrypted).
    pub(super) leftover: Vec<u8>,
    pub(super) admitted: Admitted,
    /// The user's rate limit: reads from the client, answers to it.
    pub(super) gates: (RateGate<R>, RateGate<R>),
    pub(super) meters: [Traffic; 2],
    pub(super) watch: async_channel::Receiver<()>,
    pub(super) idle: Duration,
    pub(super) name: String,
    pub(super) dc: i16,
    pub(super) started: Instant,
    /// The gauges this session holds up (client, user, middle proxy) until it ends.
    pub(super) _live: [GaugeGuard; 3],
}

impl<R: Runtime> MiddleReady<R> {
    /// The rate gates (up, down) of a session of the `admitted` user.
    pub(super) fn gates(admitted: &Admitted) -> (RateGate<R>, RateGate<R>) {
        let (user, waited) = (admitted.shared_stats(), admitted.rate_meter());
        (
            RateGate::new(user.clone(), Direction::Up, waited.clone()),
            RateGate::new(user, Direction::Down, waited),
        )
    }
}

/// The per-session parts of a middle-proxy session, before its counters are attached.
pub(super) struct Leg {
    pub(super) leg: ClientLeg,
    pub(super) base: ProxyReq,
}

/// Takes the client's own leg from its handshake and builds the request fields: `client` its
/// address, `ours` the client-facing socket's local address as seen from outside.
pub(super) fn client_leg<R: Runtime>(
    shared: &Shared,
    client: &R::Stream,
    peer: SocketAddr,
    established: Established,
    slot: &ClientSlot,
    tag: AdTag,
) -> Option<Leg> {
    let leg = established.into_client_leg()?;
    let config = &shared.settings.config;
    let local = R::local_addr(client).ok()?;
    let ours = kdf::as_seen_from_outside(local, config.public_ipv4, config.public_ipv6);
    let base = ProxyReq {
        conn_id: slot.conn_id(),
        transport: leg.transport,
        quick_ack: false,
        client: peer,
        ours,
        ad_tag: Some(*tag.as_bytes()),
    };
    Some(Leg { leg, base })
}

/// Reads from the client into a pooled buffer taken for each poll and given back when the
/// read is pending, so an idle session holds no read buffer (as the direct relay's pumps);
/// each read waits for the user's rate (`gate`). The caller gives the buffer back after use.
fn read_pooled<'a, S: futures_util::AsyncRead + Unpin, R: Runtime>(
    client: &'a mut S,
    gate: &'a mut RateGate<R>,
) -> impl Future<Output = std::io::Result<(Box<[u8]>, usize)>> + 'a {
    std::future::poll_fn(move |cx| {
        let Poll::Ready(limit) = gate.poll_grant(cx, READ_CHUNK) else {
            return Poll::Pending;
        };
        let mut buf = buffer_pool::take();
        let read = std::pin::Pin::new(&mut *client).poll_read(cx, &mut buf[..limit.min(READ_CHUNK)]);
        gate.settle(match read {
            Poll::Ready(Ok(n)) => n,
            _ => 0,
        });
        match read {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok((buf, n))),
            Poll::Ready(Err(e)) => {
                buffer_pool::give(buf);
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                buffer_pool::give(buf);
                Poll::Pending
            }
        }
    })
}

/// One thing that happened to a session.
enum Event {
    Read(std::io::Result<(Box<[u8]>, usize)>),
    Answer(Option<Answer>),
    Revoked,
    Timer,
}

/// Relays a middle-proxy session until either side ends it; returns why.
pub(super) async fn relay<R: Runtime>(ready: &mut MiddleReady<R>) -> End {
    let mut session =
        Session { deframer: TransportDeframer::new(ready.transport), encoded: Vec::new(), reported: (0, 0) };
    let mut leftover = std::mem::take(&mut ready.leftover);
    if let Err(end) = session.forward_client_bytes(ready, &mut leftover).await {
        return end;
    }
    drop(leftover);
    let mut last_activity = Instant::now();
    // The idle deadline, or the user's `expires` when that comes first.
    let idle_at = last_activity + ready.idle;
    let expires_at = ready.admitted.until_expiry().map(|left| last_activity + left);
    let mut timer = R::timer_at(expires_at.map_or(idle_at, |at| at.min(idle_at)));
    loop {
        let event = {
            let read = std::pin::pin!(read_pooled(&mut ready.client, &mut ready.gates.0));
            let answer = std::pin::pin!(ready.slot.recv());
            let revoked = std::pin::pin!(ready.watch.recv());
            match select(select(read, answer), select(revoked, &mut timer)).await {
                Either::Left((Either::Left((read, _)), _)) => Event::Read(read),
                Either::Left((Either::Right((answer, _)), _)) => Event::Answer(answer),
                Either::Right((Either::Left(_), _)) => Event::Revoked,
                Either::Right((Either::Right(_), _)) => Event::Timer,
            }
        };
        let step = match event {
            Event::Read(Ok((buf, 0))) => {
                buffer_pool::give(buf);
                Err(End::ClientClosed)
            }
            Event::Read(Ok((mut buf, n))) => {
                let forwarded = session.forward_client_bytes(ready, &mut buf[..n]).await;
                buffer_pool::give(buf);
                forwarded
            }
            Event::Read(Err(e)) => Err(End::Io(e)),
            Event::Answer(None) => Err(End::UpstreamClosed),
            Event::Answer(Some(answer)) => session.write_answer(ready, answer).await,
            Event::Revoked => Err(End::Revoked),
            Event::Timer => {
                let now = Instant::now();
                let mut deadline = last_activity + ready.idle;
                if now >= deadline {
                    return End::Idle;
                }
                // The user's `expires` as it is now (a reload may have moved it).
                if let Some(at) = ready.admitted.until_expiry().map(|left| now + left) {
                    if at <= now {
                        return End::Expired;
                    }
                    deadline = deadline.min(at);
                }
                R::reset(&mut timer, deadline);
                continue;
            }
        };
        if let Err(end) = step {
            session.report(ready);
            return end;
        }
        session.report(ready);
        last_activity = Instant::now();
    }
}

/// Largest capacity of the framed-answer buffer kept between answers; a bigger one (after an
/// unusually large answer) is freed.
const ENCODED_KEEP: usize = 64 * 1024;

/// A session's reusable state and reported byte counts. The record buffer of each write is
/// taken from the thread's pool and given back after it, so idle sessions hold none.
struct Session {
    deframer: TransportDeframer,
    /// One answer framed in the client's transport.
    encoded: Vec<u8>,
    reported: (u64, u64),
}

impl Session {
    /// Decrypts bytes read from the client and forwards every whole, forwardable packet.
    async fn forward_client_bytes<R: Runtime>(
        &mut self,
        ready: &mut MiddleReady<R>,
        bytes: &mut [u8],
    ) -> Result<(), End> {
        let range = ready.client_in.process(bytes).map_err(End::Protocol)?;
        let mut input = &bytes[range];
        loop {
            let (req, packet) = match self.deframer.next(&mut input) {
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Transport(e)),
                Ok(Some(packet)) => {
                    if let Err(reason) = rpc::forwardable(packet.data) {
                        debug!(user = %ready.name, %reason, "client packet not forwarded");
                        continue;
                    }
                    let mut buf = ready.slot.request_buffer();
                    buf.extend_from_slice(packet.data);
                    (ProxyReq { quick_ack: packet.quick_ack, ..ready.base }, buf)
                }
            };
            if !ready.slot.send(req, packet).await {
                return Err(End::UpstreamClosed);
            }
        }
    }

    /// Frames one answer for the client and writes it, in records of at most one chunk.
    async fn write_answer<R: Runtime>(
        &mut self,
        ready: &mut MiddleReady<R>,
        answer: Answer,
    ) -> Result<(), End> {
        self.encoded.clear();
        match answer {
            Answer::Data(data) => {
                let encoded =
                    transport::encode_packet(ready.transport, &data, &mut rand::rng(), &mut self.encoded);
                ready.slot.recycle_answer(data);
                if let Err(e) = encoded {
                    debug!(user = %ready.name, error = %e, "answer not encodable, dropped");
                    return Ok(());
                }
            }
            Answer::Ack(confirm) => {
                self.encoded.extend_from_slice(&transport::simple_ack_bytes(ready.transport, confirm));
            }
        }
        const { assert!(ClientOut::BUFFER_LEN <= buffer_pool::BUF_LEN, "pooled buffers too short") };
        let mut out = buffer_pool::take();
        let written = write_records(ready, &self.encoded, &mut out[..ClientOut::BUFFER_LEN]).await;
        buffer_pool::give(out);
        if self.encoded.capacity() > ENCODED_KEEP {
            self.encoded = Vec::new();
        }
        written
    }

    /// Adds the bytes moved since the last call to the user's counters and the meters.
    fn report<R: Runtime>(&mut self, ready: &MiddleReady<R>) {
        let (up, down) = (ready.client_in.bytes(), ready.client_out.bytes());
        let (new_up, new_down) = (up - self.reported.0, down - self.reported.1);
        if new_up == 0 && new_down == 0 {
            return;
        }
        self.reported = (up, down);
        ready.admitted.add_bytes(new_up, new_down);
        for traffic in &ready.meters {
            traffic.add(new_up, new_down);
        }
    }
}

/// Seals `encoded` into records of at most one chunk each (in `out`, headroom + one chunk)
/// and writes them to the client.
async fn write_records<R: Runtime>(
    ready: &mut MiddleReady<R>,
    encoded: &[u8],
    out: &mut [u8],
) -> Result<(), End> {
    for chunk in encoded.chunks(ClientOut::MAX_CHUNK) {
        ready.gates.1.take(chunk.len()).await;
        out[ClientOut::HEADROOM..ClientOut::HEADROOM + chunk.len()].copy_from_slice(chunk);
        let range = ready.client_out.process(out, chunk.len()).map_err(End::Protocol)?;
        ready.client.write_all(&out[range]).await.map_err(End::Io)?;
    }
    Ok(())
}

/// Serves a middle-proxy session to its end and logs it.
pub(super) async fn serve<R: Runtime>(mut ready: MiddleReady<R>) {
    let end = relay(&mut ready).await;
    let _ = ready.client.close().await;
    info!(
        user = %ready.name,
        dc = ready.dc,
        middle_proxy = %ready.slot.endpoint(),
        conn_id = ready.slot.conn_id(),
        bytes_in = ready.client_in.bytes(),
        bytes_out = ready.client_out.bytes(),
        duration_ms = ready.started.elapsed().as_millis() as u64,
        reason = %end,
        "session ended"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtg_proto::middle::{ProxySecret, proxy_config};

    fn snapshot() -> MiddleSnapshot {
        let parse = |text: &str| proxy_config::parse(text).map;
        MiddleSnapshot {
            secret: ProxySecret::new(&[7; 128]).expect("a valid length"),
            v4: parse("proxy_for 2 10.0.0.1:8888;\nproxy_for 2 10.0.0.2:8888;\nproxy_for 4 10.0.0.4:8888;\n"),
            v6: parse("proxy_for 2 [2001:db8::1]:80;\n"),
        }
    }

    #[test]
    fn ipv4_middle_proxies_come_first_and_ipv6_ones_only_as_a_fallback() {
        let s = snapshot();
        let v4: [SocketAddr; 2] = ["10.0.0.1:8888".parse().unwrap(), "10.0.0.2:8888".parse().unwrap()];
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        for prefer in [PreferIp::PreferIpv4, PreferIp::PreferIpv6] {
            let got = candidates(&s, prefer, 2);
            assert_eq!(got.len(), 3, "{prefer:?}");
            assert!(v4.contains(&got[0]) && v4.contains(&got[1]) && got[0] != got[1], "{prefer:?} {got:?}");
            assert_eq!(got[2], v6, "{prefer:?}");
        }
        let only_v4 = candidates(&s, PreferIp::OnlyIpv4, 2);
        assert!(only_v4.len() == 2 && only_v4.iter().all(|a| v4.contains(a)), "{only_v4:?}");
        assert_eq!(candidates(&s, PreferIp::OnlyIpv6, 2), [v6]);
        // DC 4 has IPv4 proxies of its own; its IPv6 group is the default (DC 2) one.
        assert_eq!(candidates(&s, PreferIp::PreferIpv4, 4), ["10.0.0.4:8888".parse().unwrap(), v6]);
        assert_eq!(candidates(&s, PreferIp::OnlyIpv6, -4), [v6]);
    }
}
