//! A fake Telegram middle proxy on loopback, built on the middle proxy's side of
//! [`mtg_proto::middle`]: nonce exchange and handshake (srv = its local address, clt = the
//! peer address), then it records every `RPC_PROXY_REQ`, answers an unencrypted
//! `req_pq_multi` with `resPQ` echoing the client's nonce, echoes every other packet, answers
//! `RPC_PING` with `RPC_PONG` and records `RPC_CLOSE_CONN` and `RPC_PONG`.
//!
//! Hooks settable at run time: send `RPC_CLOSE_EXT` or `RPC_PING`, close every socket, stall
//! (stop reading), answer the handshake with `RPC_HANDSHAKE_ERROR`, refuse connections. Tests
//! wait on what it saw with [`FakeMiddle::wait_until`] (a condition variable, no polling).
//! The server runs on the shared runtime ([`crate::runtime`]) and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtg_proto::middle::rpc::{self, ToMiddle};
use mtg_proto::middle::{
    Endpoints, MiddleConnection, MiddleServerHandshake, ProxySecret, RpcWriter, ServerStep,
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::mtproto;
use crate::runtime;

/// `req_pq_multi`'s constructor.
const REQ_PQ_MULTI: u32 = 0xbe7e_8ef1;

/// The 128 fixed bytes tests use as the proxy secret (first 4 bytes: `key_select`).
pub fn test_secret() -> ProxySecret {
    let bytes: Vec<u8> = (0..128u32).map(|i| (i.wrapping_mul(37).wrapping_add(0xc4)) as u8).collect();
    ProxySecret::new(&bytes).expect("128 bytes is a valid proxy secret")
}

/// One `RPC_PROXY_REQ` as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Which accepted connection carried it (0-based, accept order).
    pub connection: usize,
    /// The client's id.
    pub conn_id: u64,
    /// The flags word.
    pub flags: u32,
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy's client-facing address.
    pub ours: SocketAddr,
    /// The ad tag, if the request carried one.
    pub ad_tag: Option<[u8; 16]>,
    /// The client's MTProto packet.
    pub packet: Vec<u8>,
}

/// Everything the fake saw so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Connections accepted (refused ones included).
    pub accepted: usize,
    /// Connections whose handshake completed.
    pub handshakes: usize,
    /// Connections that ended.
    pub ended: usize,
    /// Every request, in arrival order.
    pub requests: Vec<Request>,
    /// The `conn_id` of every `RPC_CLOSE_CONN`, in arrival order.
    pub close_conns: Vec<u64>,
    /// The id of every `RPC_PONG`, in arrival order.
    pub pongs: Vec<i64>,
    /// The id of every `RPC_PING` received.
    pub pings: Vec<i64>,
    /// The `resPQ` answers sent, by the nonce they echo.
    pub res_pq_nonces: Vec<[u8; 16]>,
}

/// Run-time hooks.
#[derive(Debug, Clone, Copy, Default)]
struct Hooks {
    refuse: bool,
    /// Extra copies of every echoed answer (0: echo once).
    extra_echoes: usize,
    stall: bool,
    reject_handshake: Option<i32>,
}

enum Command {
    CloseExt(u64),
    Ping(i64),
    Close,
    /// Re-read the hooks (stall changed).
    Wake,
}

#[derive(Debug)]
struct State {
    /// The secret later handshakes use (live connections keep their keys).
    secret: Mutex<ProxySecret>,
    seen: Mutex<Seen>,
    changed: Condvar,
    hooks: Mutex<Hooks>,
    conns: Mutex<Vec<mpsc::UnboundedSender<CommandBox>>>,
}

/// A command in a box that is `Debug` (for the state's derive).
struct CommandBox(Command);

impl std::fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl State {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen());
        self.changed.notify_all();
    }

    fn hooks(&self) -> Hooks {
        *self.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn broadcast(&self, command: impl Fn() -> Command) {
        for tx in self.conns.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = tx.send(CommandBox(command()));
        }
    }
}

/// A running fake middle proxy; stops accepting and closes its connections when dropped.
#[derive(Debug)]
pub struct FakeMiddle {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeMiddle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMiddle {
    /// Starts a fake middle proxy on `127.0.0.1:0` with [`test_secret`].
    pub fn start() -> Self {
        Self::start_with(test_secret())
    }

    /// Starts a fake middle proxy on `127.0.0.1:0` with `secret`.
    pub fn start_with(secret: ProxySecret) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), secret)
    }

    /// Starts a fake middle proxy on `bind` (a loopback address, port 0) with `secret`.
    pub fn start_on(bind: SocketAddr, secret: ProxySecret) -> Self {
        let std_listener = std::net::TcpListener::bind(bind).expect("bind the fake middle proxy");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("fake middle proxy address");
        let state = Arc::new(State {
            secret: Mutex::new(secret),
            seen: Mutex::default(),
            changed: Condvar::new(),
            hooks: Mutex::default(),
            conns: Mutex::default(),
        });
        let task = runtime::handle().spawn(accept_loop(std_listener, Arc::clone(&state)));
        Self { addr, state, task }
    }

    /// Where the proxy should connect (`proxy_for` lines).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of what the fake saw so far.
    pub fn seen(&self) -> Seen {
        self.state.seen().clone()
    }

    /// Blocks until `pred` holds for what the fake saw or `timeout` passes; returns whether it
    /// held. Woken by every change (a condition variable), never by polling.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = self.state.seen();
        loop {
            if pred(&seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self.state.changed.wait_timeout(seen, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Uses `secret` for later handshakes (a rotated proxy secret); live connections keep
    /// their keys.
    pub fn set_secret(&self, secret: ProxySecret) {
        *self.state.secret.lock().unwrap_or_else(PoisonError::into_inner) = secret;
    }

    /// Closes new connections right after accepting them (`true`) or serves them again.
    pub fn set_refuse(&self, refuse: bool) {
        self.state.hooks.lock().unwrap_or_else(PoisonError::into_inner).refuse = refuse;
    }

    /// Answers later handshakes with `RPC_HANDSHAKE_ERROR` and `code` (`None`: accept).
    pub fn set_reject_handshake(&self, code: Option<i32>) {
        self.state.hooks.lock().unwrap_or_else(PoisonError::into_inner).reject_handshake = code;
    }

    /// Echoes every packet that is not `req_pq_multi` `copies` times (at least once), to flood
    /// a client with answers.
    pub fn set_echo_copies(&self, copies: usize) {
        self.state.hooks.lock().unwrap_or_else(PoisonError::into_inner).extra_echoes =
            copies.saturating_sub(1);
    }

    /// Stops reading every connection (`true`) or resumes.
    pub fn set_stall(&self, stall: bool) {
        self.state.hooks.lock().unwrap_or_else(PoisonError::into_inner).stall = stall;
        self.state.broadcast(|| Command::Wake);
    }

    /// Sends `RPC_CLOSE_EXT` for `conn_id` on every live connection.
    pub fn close_ext(&self, conn_id: u64) {
        self.state.broadcast(|| Command::CloseExt(conn_id));
    }

    /// Sends `RPC_PING` with `ping_id` on every live connection.
    pub fn ping(&self, ping_id: i64) {
        self.state.broadcast(|| Command::Ping(ping_id));
    }

    /// Closes every live connection's socket.
    pub fn close_all(&self) {
        self.state.broadcast(|| Command::Close);
    }
}

async fn accept_loop(std_listener: std::net::TcpListener, state: Arc<State>) {
    let listener = TcpListener::from_std(std_listener).expect("register the fake middle proxy listener");
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let index = {
            let mut seen = state.seen();
            seen.accepted += 1;
            seen.accepted - 1
        };
        state.changed.notify_all();
        if state.hooks().refuse {
            drop(stream);
            state.update(|s| s.ended += 1);
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        state.conns.lock().unwrap_or_else(PoisonError::into_inner).push(tx);
        let state = Arc::clone(&state);
        conns.spawn(async move {
            let _ = serve(stream, peer, &state, index, rx).await;
            state.update(|s| s.ended += 1);
        });
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &State,
    index: usize,
    commands: mpsc::UnboundedReceiver<CommandBox>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let secret = state.secret.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let reject = state.hooks().reject_handshake;
    let Some((connection, leftover)) = accept_handshake(&mut stream, peer, &secret, reject, &mut buf).await?
    else {
        return Ok(());
    };
    state.update(|s| s.handshakes += 1);
    let (rd, mut wr) = stream.into_split();
    let MiddleConnection { mut writer, mut reader } = connection;
    let mut conn = Conn { rd, commands, index };
    let mut pending = leftover;
    loop {
        // Act on everything read so far, then wait for the next read or command.
        let mut input = pending.as_slice();
        while let Some(payload) = reader.next(&mut input).map_err(std::io::Error::other)? {
            answer(state, index, payload, &mut writer, &mut out);
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        pending.clear();
        match conn.next(state, &mut buf).await? {
            Next::Read(n) => pending.extend_from_slice(&buf[..n]),
            Next::Closed => return Ok(()),
            Next::Command(Command::Close) => return Ok(()),
            Next::Command(Command::CloseExt(id)) => writer.batch(&mut out).close_ext(id),
            Next::Command(Command::Ping(id)) => writer.batch(&mut out).ping(id),
            Next::Command(Command::Wake) => {}
        }
    }
}

/// The middle proxy's side of a connection's nonce exchange and handshake over `stream`
/// (accepted from `peer`), reading into `buf`: the established connection and the bytes that
/// followed the handshake, or `None` when the peer closed first or the handshake was answered
/// with `RPC_HANDSHAKE_ERROR` and `reject`'s code. Shared by this fake and the benchmark's
/// middle proxy ([`crate::bench::middle`]).
pub async fn accept_handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    secret: &ProxySecret,
    reject: Option<i32>,
    buf: &mut [u8],
) -> std::io::Result<Option<(MiddleConnection, Vec<u8>)>> {
    let local = stream.local_addr()?;
    let endpoints = Endpoints::new(peer, local).map_err(std::io::Error::other)?;
    let mut hs = MiddleServerHandshake::new(secret, unix_secs(), endpoints, &mut rand::rng());
    if let Some(code) = reject {
        hs = hs.reject_handshake_with(code);
    }
    let mut out = Vec::new();
    loop {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let mut input = &buf[..n];
        let step = hs.feed(&mut input, &mut out).map_err(std::io::Error::other)?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        match step {
            ServerStep::NeedMore(next) => hs = next,
            ServerStep::Rejected { .. } => return Ok(None),
            ServerStep::Ready(connection) => return Ok(Some((connection, input.to_vec()))),
        }
    }
}

/// A connection's read half and its commands.
struct Conn {
    rd: OwnedReadHalf,
    commands: mpsc::UnboundedReceiver<CommandBox>,
    #[expect(dead_code, reason = "kept for debugging output")]
    index: usize,
}

enum Next {
    Read(usize),
    Closed,
    Command(Command),
}

impl Conn {
    /// The next read (unless stalled) or command.
    async fn next(&mut self, state: &State, buf: &mut [u8]) -> std::io::Result<Next> {
        if state.hooks().stall {
            return Ok(self.commands.recv().await.map_or(Next::Closed, |c| Next::Command(c.0)));
        }
        tokio::select! {
            read = self.rd.read(buf) => Ok(match read? { 0 => Next::Closed, n => Next::Read(n) }),
            command = self.commands.recv() => Ok(command.map_or(Next::Closed, |c| Next::Command(c.0))),
        }
    }
}

/// Records one message from the proxy and appends the fake's answer (if any) to `out`.
fn answer(state: &State, index: usize, payload: &[u8], writer: &mut RpcWriter, out: &mut Vec<u8>) {
    let Ok(message) = rpc::decode_to_middle(payload) else {
        return;
    };
    match message {
        ToMiddle::ProxyReq(req) => {
            let recorded = Request {
                connection: index,
                conn_id: req.conn_id,
                flags: req.flags,
                client: req.client,
                ours: req.ours,
                ad_tag: req.ad_tag,
                packet: req.packet.to_vec(),
            };
            let res_pq = req_pq_nonce(req.packet).map(|nonce| {
                let mut rng = rand::rng();
                let res = mtproto::ResPq::answer(nonce, &mut rng);
                (nonce, mtproto::unencrypted(mtproto::server_msg_id(mtproto::unix_now()), &res.encode()))
            });
            let data = res_pq.as_ref().map_or(req.packet, |(_, data)| data.as_slice());
            let copies = if res_pq.is_some() { 1 } else { 1 + state.hooks().extra_echoes };
            let mut batch = writer.batch(out);
            for _ in 0..copies {
                // Whole-word packets always encode.
                let _ = batch.proxy_ans(0, req.conn_id, data);
            }
            batch.finish();
            state.update(|s| {
                s.requests.push(recorded);
                if let Some((nonce, _)) = res_pq {
                    s.res_pq_nonces.push(nonce);
                }
            });
        }
        ToMiddle::CloseConn { conn_id } => state.update(|s| s.close_conns.push(conn_id)),
        ToMiddle::Ping { ping_id } => {
            writer.batch(out).pong(ping_id);
            state.update(|s| s.pings.push(ping_id));
        }
        ToMiddle::Pong { ping_id } => state.update(|s| s.pongs.push(ping_id)),
        ToMiddle::Unknown { .. } => {}
    }
}

/// The nonce of an unencrypted `req_pq_multi` packet (constructor at offset 20).
fn req_pq_nonce(packet: &[u8]) -> Option<[u8; 16]> {
    if packet.get(..8)? != [0u8; 8] {
        return None;
    }
    let ctor = u32::from_le_bytes(packet.get(20..24)?.try_into().ok()?);
    (ctor == REQ_PQ_MULTI).then(|| packet.get(24..40)?.try_into().ok()).flatten()
}

/// A random ping id (for tests).
pub fn random_ping_id() -> i64 {
    rand::rng().random()
}
