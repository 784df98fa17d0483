//! One multiplexed connection to a middle proxy, written once against the runtime seam.
//!
//! ```text
//!  sessions ──ClientSlot::send(req, packet)──► bounded queue ──► writer task: one Batch per
//!                                                                 wake-up, one socket write
//!  middle proxy ──► reader task: decrypt, deframe, decode ──► registry[conn_id] (bounded
//!                   answer queue per client) ──► ClientSlot::recv
//! ```
//! The registry (`conn_id` → the client's answer queue) sits behind a `Mutex` held only to
//! look up, insert or remove one entry, never across an `await`. A client whose queue stays
//! full for [`SLOW_CLIENT`] is dropped (its queue closed, `RPC_CLOSE_CONN` sent) so it cannot
//! stall the others. After [`IDLE_PING`] without input the reader sends `RPC_PING`; after as
//! long again the connection is dead. A dead connection closes every client's queue (the
//! sessions end) and takes no new clients. A retired connection (its secret rotated, or its
//! endpoint left the lists) takes no new clients either and closes when its last one leaves.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::io::{ReadHalf, WriteHalf};
use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::middle::{
    ClientStep, Endpoints, FromMiddle, MiddleConnection, MiddleHandshake, ProxyReq, ProxySecret, RpcReader,
    RpcWriter, kdf, rpc,
};
use rand::Rng;
use tracing::{debug, info};

use crate::engine::with_timeout;
use crate::metrics::{GaugeGuard, Metrics};
use crate::runtime::Runtime;

/// Deadline of the TCP connect to a middle proxy.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the nonce exchange and handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence after which the reader pings; as long again without input and the connection is
/// dead (the pool's default; see `MiddlePool::set_idle_ping`).
pub const IDLE_PING: Duration = Duration::from_secs(15);
/// Answers queued per client before the reader waits for it.
pub const ANSWER_QUEUE: usize = 64;
/// How long the reader waits for a client whose answer queue is full before dropping it.
pub const SLOW_CLIENT: Duration = Duration::from_millis(100);
/// Messages queued for the writer before senders wait (TCP backpressure reaches the clients).
pub const WRITE_QUEUE: usize = 1024;
/// Most messages the writer puts into one batch (one socket write).
const BATCH_MAX: usize = 256;
/// Read size of the reader task.
const READ_CHUNK: usize = 64 * 1024;
/// Buffers kept per client for reuse in each direction (so packets allocate nothing once warm).
const SPARE_BUFFERS: usize = 8;
/// Largest buffer kept for reuse; bigger ones are freed.
const SPARE_MAX: usize = 64 * 1024;

/// What the middle proxy sent for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An MTProto packet (`RPC_PROXY_ANS` data): frame it for the client.
    Data(Vec<u8>),
    /// A quick ack (`RPC_SIMPLE_ACK`): write its 4 bytes in the client's transport's form.
    Ack([u8; 4]),
}

/// A message for the writer task.
enum Outbound {
    /// A request; the packet's buffer goes back to `spare` once encoded.
    Req {
        req: ProxyReq,
        packet: Vec<u8>,
        spare: async_channel::Sender<Vec<u8>>,
    },
    CloseConn(u64),
    Ping(i64),
    Pong(i64),
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect failed.
    Connect(std::io::Error),
    /// The TCP connect took longer than [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// The nonce exchange or handshake failed (wrong secret, clock, KDF addresses...).
    Handshake(String),
    /// The nonce exchange and handshake took longer than [`HANDSHAKE_TIMEOUT`].
    HandshakeTimeout,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect failed: {e}"),
            Self::ConnectTimeout => write!(f, "connect timed out after {}s", CONNECT_TIMEOUT.as_secs()),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::HandshakeTimeout => write!(f, "handshake timed out after {}s", HANDSHAKE_TIMEOUT.as_secs()),
        }
    }
}

impl ConnectError {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) | Self::ConnectTimeout => "connect",
            Self::Handshake(_) | Self::HandshakeTimeout => "handshake",
        }
    }
}

/// One established, multiplexed middle-proxy connection.
pub struct MiddleConn {
    endpoint: SocketAddr,
    outbound: async_channel::Sender<Outbound>,
    slots: Mutex<HashMap<u64, Registered>>,
    dead: AtomicBool,
    /// Set (under the `slots` lock) when retired: no new clients, close when empty.
    retired: AtomicBool,
    /// The proxy secret the handshake used.
    secret: ProxySecret,
    /// Closed when the connection dies: wakes the reader.
    stop: async_channel::Sender<()>,
    /// Holds `middle_proxy_connections{endpoint}` up until the connection dies.
    live: Mutex<Option<GaugeGuard>>,
}

impl fmt::Debug for MiddleConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiddleConn")
            .field("endpoint", &self.endpoint)
            .field("clients", &self.load())
            .field("dead", &self.is_dead())
            .field("retired", &self.retired.load(Ordering::Relaxed))
            .finish()
    }
}

/// A client's entry in the registry: where its answers go, and the answer buffers its
/// session gave back.
#[derive(Clone)]
struct Registered {
    answers: async_channel::Sender<Answer>,
    spare: async_channel::Receiver<Vec<u8>>,
}

/// Gives `buf` back through `spare` if it is small enough to keep (never waits).
fn recycle(spare: &async_channel::Sender<Vec<u8>>, mut buf: Vec<u8>) {
    if buf.capacity() <= SPARE_MAX {
        buf.clear();
        let _ = spare.try_send(buf);
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl MiddleConn {
    /// Dials `endpoint`, runs the nonce exchange and handshake with `secret` (our KDF address:
    /// the socket's local address, translated to `public_v4`/`public_v6` when private) and
    /// spawns the reader and writer tasks on `runtime`; the reader pings after `idle_ping` of
    /// silence and gives up after as long again. The connection is counted in `metrics` while
    /// it lives.
    pub async fn connect<R: Runtime>(
        runtime: &R,
        endpoint: SocketAddr,
        secret: &ProxySecret,
        (public_v4, public_v6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
        idle_ping: Duration,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, ConnectError> {
        let mut stream = match with_timeout::<R, _>(CONNECT_TIMEOUT, R::connect(endpoint)).await {
            None => return Err(ConnectError::ConnectTimeout),
            Some(Err(e)) => return Err(ConnectError::Connect(e)),
            Some(Ok(stream)) => stream,
        };
        let _ = R::socket(&stream).set_tcp_nodelay(true);
        let _ = R::socket(&stream).set_keepalive(true);
        let shake = handshake::<R>(&mut stream, endpoint, secret, public_v4, public_v6);
        let (connection, leftover) = match with_timeout::<R, _>(HANDSHAKE_TIMEOUT, shake).await {
            None => return Err(ConnectError::HandshakeTimeout),
            Some(Err(e)) => return Err(ConnectError::Handshake(e)),
            Some(Ok(ok)) => ok,
        };
        let MiddleConnection { writer, reader } = connection;
        let (outbound, queued) = async_channel::bounded(WRITE_QUEUE);
        let (stop, stopped) = async_channel::bounded(1);
        let conn = Arc::new(Self {
            endpoint,
            outbound,
            slots: Mutex::default(),
            dead: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            secret: secret.clone(),
            stop,
            live: Mutex::new(Some(metrics.middle_proxy_connection(endpoint))),
        });
        let (rd, wr) = stream.split();
        runtime.spawn(read_loop::<R>(rd, reader, leftover, conn.clone(), stopped, idle_ping));
        runtime.spawn(write_loop::<R>(wr, writer, queued, conn.clone()));
        debug!(%endpoint, "middle-proxy connection ready");
        Ok(conn)
    }

    /// The middle proxy's address.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Clients registered now.
    pub fn load(&self) -> usize {
        self.lock().len()
    }

    /// Whether the connection died (it takes no new clients).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Whether the handshake used `secret`.
    pub fn made_with(&self, secret: &ProxySecret) -> bool {
        self.secret == *secret
    }

    /// Takes no new clients from now on and closes once the last client leaves (at once when
    /// it has none): what a connection made with a rotated secret, or to an endpoint no longer
    /// listed, becomes. Its clients are never cut.
    pub fn retire(&self) {
        let slots = self.lock();
        self.retired.store(true, Ordering::Relaxed);
        let empty = slots.is_empty();
        drop(slots);
        if empty {
            self.die();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new client with a fresh random non-zero `conn_id`; `None` when dead or
    /// retired.
    pub fn open_client(self: &Arc<Self>) -> Option<ClientSlot> {
        let (tx, answers) = async_channel::bounded(ANSWER_QUEUE);
        let (answer_spare, spare) = async_channel::bounded(SPARE_BUFFERS);
        let request_spare = async_channel::bounded(SPARE_BUFFERS);
        let mut slots = self.lock();
        if self.is_dead() || self.retired.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = rand::rng();
        let conn_id = loop {
            let id: u64 = rng.random();
            if id != 0 && !slots.contains_key(&id) {
                break id;
            }
        };
        slots.insert(conn_id, Registered { answers: tx, spare });
        drop(slots);
        Some(ClientSlot { conn_id, answers, conn: self.clone(), request_spare, answer_spare })
    }

    /// Marks the connection dead: every client's queue closes, the writer and reader stop.
    fn die(&self) {
        if self.dead.swap(true, Ordering::Relaxed) {
            return;
        }
        let slots = std::mem::take(&mut *self.lock());
        let clients = slots.len();
        drop(slots);
        // The gauge first: whoever sees the socket close sees the gauge down.
        drop(self.live.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.outbound.close();
        self.stop.close();
        let retired = self.retired.load(Ordering::Relaxed);
        info!(endpoint = %self.endpoint, clients, retired, "middle-proxy connection closed");
    }

    /// Sends `RPC_CLOSE_CONN` for a client we dropped (never waits).
    fn close_conn(&self, conn_id: u64) {
        // A full queue loses this notice (the middle proxy then keeps the id until the
        // connection ends), rather than evicting a queued request.
        let _ = self.outbound.try_send(Outbound::CloseConn(conn_id));
    }
}

/// One client's place on a middle-proxy connection. Dropping it forgets the client and, unless
/// the middle proxy closed it first, sends `RPC_CLOSE_CONN`.
pub struct ClientSlot {
    conn_id: u64,
    answers: async_channel::Receiver<Answer>,
    conn: Arc<MiddleConn>,
    /// Request buffers the writer gave back.
    request_spare: (async_channel::Sender<Vec<u8>>, async_channel::Receiver<Vec<u8>>),
    /// Where answer buffers go back to the reader.
    answer_spare: async_channel::Sender<Vec<u8>>,
}

impl fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSlot")
            .field("conn_id", &self.conn_id)
            .field("endpoint", &self.conn.endpoint)
            .finish_non_exhaustive()
    }
}

impl ClientSlot {
    /// The client's id on its connection.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The middle proxy this client goes through.
    pub fn endpoint(&self) -> SocketAddr {
        self.conn.endpoint
    }

    /// An empty buffer for the next request's packet (a reused one once warm).
    pub fn request_buffer(&self) -> Vec<u8> {
        self.request_spare.1.try_recv().unwrap_or_default()
    }

    /// Queues one request (waits while the writer's queue is full); `false` once the
    /// connection is dead. The packet's buffer comes back through [`Self::request_buffer`].
    pub async fn send(&self, req: ProxyReq, packet: Vec<u8>) -> bool {
        let spare = self.request_spare.0.clone();
        self.conn.outbound.send(Outbound::Req { req, packet, spare }).await.is_ok()
    }

    /// Gives an answer's buffer back to the reader for reuse.
    pub fn recycle_answer(&self, buf: Vec<u8>) {
        recycle(&self.answer_spare, buf);
    }

    /// The next answer; `None` when the middle proxy closed this client (`RPC_CLOSE_EXT`), the
    /// client was too slow, or the connection died.
    pub async fn recv(&self) -> Option<Answer> {
        self.answers.recv().await.ok()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut slots = self.conn.lock();
        let was_open = slots.remove(&self.conn_id).is_some();
        let last_of_retired = slots.is_empty() && self.conn.retired.load(Ordering::Relaxed);
        drop(slots);
        if last_of_retired {
            self.conn.die();
        } else if was_open && !self.conn.is_dead() {
            self.conn.close_conn(self.conn_id);
        }
    }
}

/// The nonce exchange and handshake on a fresh socket; returns the connection and the bytes
/// read past the handshake reply.
async fn handshake<R: Runtime>(
    stream: &mut R::Stream,
    endpoint: SocketAddr,
    secret: &ProxySecret,
    public_v4: Option<Ipv4Addr>,
    public_v6: Option<Ipv6Addr>,
) -> Result<(MiddleConnection, Vec<u8>), String> {
    let local = R::local_addr(stream).map_err(|e| format!("no local address: {e}"))?;
    let ours = kdf::as_seen_from_outside(local, public_v4, public_v6);
    let endpoints = Endpoints::new(ours, endpoint).map_err(|e| e.to_string())?;
    let (mut hs, nonce) = MiddleHandshake::start(secret, unix_secs(), endpoints, &mut rand::rng());
    stream.write_all(&nonce).await.map_err(|e| format!("cannot send the nonce: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            // The usual cause: the peer could not decrypt our handshake (KDF addresses, NAT).
            return Err(format!(
                "middle proxy closed the connection during the handshake (KDF addresses: ours {}, theirs {}; \
                 check public-ipv4/public-ipv6 and the clock)",
                endpoints.client(),
                endpoints.server()
            ));
        }
        let mut input = &buf[..n];
        let step = hs.feed(&mut input, &mut out).map_err(|e| e.to_string())?;
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| format!("cannot send the handshake: {e}"))?;
            out.clear();
        }
        match step {
            ClientStep::NeedMore(next) => hs = next,
            ClientStep::Ready(connection) => return Ok((connection, input.to_vec())),
        }
    }
}

/// Reads, decrypts and dispatches until the socket ends, a frame is bad, the peer stays silent
/// past the ping, or the connection is stopped.
async fn read_loop<R: Runtime>(
    mut rd: ReadHalf<R::Stream>,
    mut reader: RpcReader,
    leftover: Vec<u8>,
    conn: Arc<MiddleConn>,
    stopped: async_channel::Receiver<()>,
    idle_ping: Duration,
) {
    let why = read_until_end::<R>(&mut rd, &mut reader, leftover, &conn, &stopped, idle_ping).await;
    debug!(endpoint = %conn.endpoint, reason = why, "middle-proxy reader ended");
    conn.die();
}

async fn read_until_end<R: Runtime>(
    rd: &mut ReadHalf<R::Stream>,
    reader: &mut RpcReader,
    leftover: Vec<u8>,
    conn: &MiddleConn,
    stopped: &async_channel::Receiver<()>,
    idle_ping: Duration,
) -> &'static str {
    use futures_util::future::{Either, select};
    if let Err(why) = dispatch::<R>(reader, &leftover, conn).await {
        return why;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pinged = false;
    loop {
        let read = {
            let read = std::pin::pin!(with_timeout::<R, _>(idle_ping, rd.read(&mut buf)));
            let stop = std::pin::pin!(stopped.recv());
            match select(read, stop).await {
                Either::Right(_) => return "stopped",
                Either::Left((read, _)) => read,
            }
        };
        let n = match read {
            None if pinged => return "no answer to a ping",
            None => {
                pinged = true;
                let ping_id: i64 = rand::rng().random();
                let _ = conn.outbound.send(Outbound::Ping(ping_id)).await;
                continue;
            }
            Some(Ok(0)) => return "closed by the middle proxy",
            Some(Err(_)) => return "read error",
            Some(Ok(n)) => n,
        };
        pinged = false;
        if let Err(why) = dispatch::<R>(reader, &buf[..n], conn).await {
            return why;
        }
    }
}

/// Decodes every whole frame in `bytes` and acts on it.
async fn dispatch<R: Runtime>(
    reader: &mut RpcReader,
    bytes: &[u8],
    conn: &MiddleConn,
) -> Result<(), &'static str> {
    let mut input = bytes;
    loop {
        let payload = match reader.next(&mut input) {
            Ok(Some(payload)) => payload,
            Ok(None) => return Ok(()),
            Err(e) => {
                info!(endpoint = %conn.endpoint, error = %e, "bad frame from the middle proxy, closing");
                return Err("bad frame");
            }
        };
        let message = match rpc::decode_from_middle(payload) {
            Ok(message) => message,
            Err(e) => {
                debug!(endpoint = %conn.endpoint, error = %e, "undecodable message from the middle proxy, ignored");
                continue;
            }
        };
        match message {
            FromMiddle::ProxyAns { conn_id, data, .. } => {
                deliver::<R>(conn, conn_id, |spare| {
                    let mut buf = spare.try_recv().unwrap_or_default();
                    buf.extend_from_slice(data);
                    Answer::Data(buf)
                })
                .await;
            }
            FromMiddle::SimpleAck { conn_id, confirm } => {
                deliver::<R>(conn, conn_id, |_| Answer::Ack(confirm)).await;
            }
            FromMiddle::CloseExt { conn_id } | FromMiddle::CloseConn { conn_id } => {
                // Dropping the sender ends the client once it has read what was queued.
                drop(conn.lock().remove(&conn_id));
            }
            FromMiddle::Ping { ping_id } => {
                let _ = conn.outbound.send(Outbound::Pong(ping_id)).await;
            }
            FromMiddle::Pong { .. } => {}
            FromMiddle::Unknown { kind } => {
                debug!(endpoint = %conn.endpoint, kind = format_args!("{kind:#010x}"), "unknown message ignored");
            }
        }
    }
}

/// Queues an answer for `conn_id`: an unknown id gets `RPC_CLOSE_CONN`; a client whose queue
/// stays full for [`SLOW_CLIENT`] is dropped and gets `RPC_CLOSE_CONN`.
async fn deliver<R: Runtime>(
    conn: &MiddleConn,
    conn_id: u64,
    answer: impl FnOnce(&async_channel::Receiver<Vec<u8>>) -> Answer,
) {
    let Some(Registered { answers: tx, spare }) = conn.lock().get(&conn_id).cloned() else {
        conn.close_conn(conn_id);
        return;
    };
    let answer = match tx.try_send(answer(&spare)) {
        Ok(()) | Err(async_channel::TrySendError::Closed(_)) => return,
        Err(async_channel::TrySendError::Full(answer)) => answer,
    };
    if with_timeout::<R, _>(SLOW_CLIENT, tx.send(answer)).await.is_none() {
        debug!(endpoint = %conn.endpoint, conn_id, "client too slow for its answers, closing it");
        drop(conn.lock().remove(&conn_id));
        tx.close();
        conn.close_conn(conn_id);
    }
}

/// Writes what is queued, one batch (one write) per wake-up, until the queue closes or a
/// write fails.
async fn write_loop<R: Runtime>(
    mut wr: WriteHalf<R::Stream>,
    mut writer: RpcWriter,
    queued: async_channel::Receiver<Outbound>,
    conn: Arc<MiddleConn>,
) {
    let mut out = Vec::with_capacity(READ_CHUNK);
    while let Ok(first) = queued.recv().await {
        out.clear();
        {
            let mut batch = writer.batch(&mut out);
            push(&mut batch, first);
            for _ in 1..BATCH_MAX {
                match queued.try_recv() {
                    Ok(next) => push(&mut batch, next),
                    Err(_) => break,
                }
            }
            batch.finish();
        }
        if let Err(e) = wr.write_all(&out).await {
            debug!(endpoint = %conn.endpoint, error = %e, "middle-proxy write failed");
            break;
        }
    }
    conn.die();
    let _ = wr.close().await;
}

fn push(batch: &mut mtg_proto::middle::Batch<'_>, message: Outbound) {
    match message {
        Outbound::Req { req, packet, spare } => {
            // Sessions forward only whole-word packets within MAX_POST_SIZE; anything else is
            // dropped here rather than breaking the connection.
            if let Err(e) = batch.proxy_req(&req, &packet) {
                debug!(conn_id = req.conn_id, error = %e, "request not encodable, dropped");
            }
            recycle(&spare, packet);
        }
        Outbound::CloseConn(id) => batch.close_conn(id),
        Outbound::Ping(id) => batch.ping(id),
        Outbound::Pong(id) => batch.pong(id),
    }
}
