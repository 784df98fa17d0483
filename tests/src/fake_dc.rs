//! A fake Telegram datacenter on loopback: accepts the proxy's obfuscated2 leg (no secret,
//! tag `dd dd dd dd`), records what arrives and answers per [`DcMode`].
//!
//! ```text
//! proxy ──64-byte frame──► FakeDc: obfs2::respond(frame, None) → tag, DC id (recorded)
//!       ──encrypted bytes─► decrypt → record → Echo: send back | Telegram: resPQ | Sink: count
//! ```
//! The server runs on the shared runtime ([`crate::runtime`]) and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mtg_proto::FrameHeader;
use mtg_proto::obfs2::{self, FRAME_LEN, LegCipher, TAG_PADDED_INTERMEDIATE};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::mtproto;
use crate::runtime;

/// Plaintext bytes kept per connection in [`DcConnection::received`]; later bytes are only
/// counted.
pub const RECORD_LIMIT: usize = 4 * 1024 * 1024;

/// Bytes kept of the start of a stream as it was on the wire ([`DcConnection::sent_head`],
/// `ProxyClient::wire_head`): in fast mode the client receives what the DC sent.
pub const WIRE_HEAD: usize = 64;

/// Appends to `head` what fits of `data` below [`WIRE_HEAD`] bytes.
pub fn keep_head(head: &mut Vec<u8>, data: &[u8]) {
    let room = WIRE_HEAD.saturating_sub(head.len());
    head.extend_from_slice(&data[..data.len().min(room)]);
}

/// How the fake DC behaves on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcMode {
    /// Decrypts everything and sends the same plaintext back, encrypted.
    Echo,
    /// Parses padded-intermediate frames and answers `req_pq_multi` with `resPQ`.
    Telegram,
    /// Closes right after accept.
    Refuse,
    /// Reads up to one frame's worth of bytes, then closes with a TCP RST (SO_LINGER 0).
    Reset,
    /// Accepts and never reads or answers; the socket stays open until the DC is dropped.
    Blackhole,
    /// Reads the frame, then discards everything, counting bytes (for load tests).
    Sink,
    /// Echoes like `Echo` until this many bytes arrived after the frame, then closes with a
    /// TCP RST mid-stream (bytes beyond the threshold are not echoed).
    EchoThenReset(u64),
    /// Reads the frame, then sends `bytes` bytes of [`flood_byte`] as fast as the proxy takes
    /// them, then discards what arrives. The bytes are encrypted ahead in blocks of
    /// [`FLOOD_BLOCK`], so the sending is never slower than the socket (`bytes_sent` is updated
    /// after every write).
    Flood {
        /// How many bytes to send.
        bytes: u64,
    },
}

/// The block size of a [`DcMode::Flood`] stream.
pub const FLOOD_BLOCK: usize = 8 << 20;

/// The plaintext byte at `offset` of a [`DcMode::Flood`] stream.
pub fn flood_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// What the fake DC saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcConnection {
    /// The proxy's address.
    pub peer: SocketAddr,
    /// The decrypted frame header (tag and DC id), once 64 bytes arrived.
    pub header: Option<FrameHeader>,
    /// Decrypted bytes after the frame (raw bytes in `Reset` mode; nothing in `Sink` mode),
    /// up to [`RECORD_LIMIT`] (or the limit given to [`FakeDc::start_recording`]).
    pub received: Vec<u8>,
    /// Bytes received after the frame (all of them, recorded or not).
    pub bytes_received: u64,
    /// Bytes sent back.
    pub bytes_sent: u64,
    /// The first [`WIRE_HEAD`] bytes sent back, encrypted as on the wire (`Echo`, `Telegram`,
    /// `Flood` modes).
    pub sent_head: Vec<u8>,
    /// Nonces of the `req_pq_multi` messages seen (`Telegram` mode).
    pub req_pq_nonces: Vec<[u8; 16]>,
    /// Whether the connection has ended (either side closed, or an error).
    pub ended: bool,
}

impl DcConnection {
    fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            header: None,
            received: Vec::new(),
            bytes_received: 0,
            bytes_sent: 0,
            sent_head: Vec::new(),
            req_pq_nonces: Vec::new(),
            ended: false,
        }
    }

    /// Whether the frame carried the padded-intermediate tag.
    pub fn tag_ok(&self) -> bool {
        self.header.is_some_and(|h| h.tag == TAG_PADDED_INTERMEDIATE)
    }
}

#[derive(Debug)]
struct State {
    conns: Mutex<Vec<DcConnection>>,
    changed: Notify,
    record_limit: usize,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Vec<DcConnection>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut DcConnection)) {
        f(&mut self.lock()[index]);
        self.changed.notify_waiters();
    }
}

/// A running fake DC; stops accepting and closes its connections when dropped.
#[derive(Debug)]
pub struct FakeDc {
    addr: SocketAddr,
    mode: DcMode,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeDc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDc {
    /// Starts a fake DC on `127.0.0.1:0`. Callable from synchronous code or any runtime.
    pub fn start(mode: DcMode) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), mode)
    }

    /// Starts a fake DC on a chosen loopback address (port 0 picks one).
    ///
    /// Panics if `addr` is not a loopback address or cannot be bound.
    pub fn start_on(addr: SocketAddr, mode: DcMode) -> Self {
        Self::start_recording(addr, mode, RECORD_LIMIT)
    }

    /// Like [`Self::start_on`], keeping at most `record_limit` plaintext bytes per connection
    /// in [`DcConnection::received`] (0 for long runs that only need the counts).
    pub fn start_recording(addr: SocketAddr, mode: DcMode, record_limit: usize) -> Self {
        assert!(addr.ip().is_loopback(), "the fake DC only listens on loopback, not {addr}");
        let std_listener = std::net::TcpListener::bind(addr).expect("bind the fake DC");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("fake DC address");
        let state = Arc::new(State { conns: Mutex::default(), changed: Notify::new(), record_limit });
        let task = runtime::handle().spawn(accept_loop(std_listener, mode, Arc::clone(&state)));
        Self { addr, mode, state, task }
    }

    /// The address the proxy should dial (`[network.dc-overrides]`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The mode given at start.
    pub fn mode(&self) -> DcMode {
        self.mode
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().len()
    }

    /// A copy of what every connection saw, in accept order.
    pub fn snapshot(&self) -> Vec<DcConnection> {
        self.state.lock().clone()
    }

    /// The DC ids of the frames received, in accept order.
    pub fn dc_ids(&self) -> Vec<i16> {
        self.state.lock().iter().filter_map(|c| c.header.map(|h| h.dc)).collect()
    }

    /// Every `req_pq_multi` nonce seen, over all connections.
    pub fn req_pq_nonces(&self) -> Vec<[u8; 16]> {
        self.state.lock().iter().flat_map(|c| c.req_pq_nonces.iter().copied()).collect()
    }

    /// Bytes received after the frames, over all connections.
    pub fn bytes_received(&self) -> u64 {
        self.state.lock().iter().map(|c| c.bytes_received).sum()
    }

    /// Blocks (polling) until `pred` holds for the connection list or `timeout` passes;
    /// returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[DcConnection]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.state.lock()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `pred` holds for the connection list. Works on any async runtime; wrap it in
    /// the runtime's timeout.
    pub async fn wait_for(&self, pred: impl Fn(&[DcConnection]) -> bool) {
        loop {
            let notified = self.state.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.state.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// Blocks until a `req_pq_multi` arrived (returns its nonce) or `timeout` passes.
    pub fn wait_req_pq(&self, timeout: Duration) -> Option<[u8; 16]> {
        self.wait_until(timeout, |c| c.iter().any(|c| !c.req_pq_nonces.is_empty()));
        self.req_pq_nonces().first().copied()
    }
}

async fn accept_loop(std_listener: std::net::TcpListener, mode: DcMode, state: Arc<State>) {
    let listener = TcpListener::from_std(std_listener).expect("register the fake DC listener");
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let index = {
            let mut list = state.lock();
            list.push(DcConnection::new(peer));
            list.len() - 1
        };
        state.changed.notify_waiters();
        let state = Arc::clone(&state);
        conns.spawn(async move {
            serve(stream, mode, &state, index).await;
            state.update(index, |c| c.ended = true);
        });
    }
}

async fn serve(mut stream: TcpStream, mode: DcMode, state: &State, index: usize) {
    let _ = stream.set_nodelay(true);
    match mode {
        DcMode::Refuse => return,
        DcMode::Blackhole => {
            std::future::pending::<()>().await;
            return;
        }
        DcMode::Reset => {
            let mut buf = [0u8; FRAME_LEN];
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            if let Ok(Ok(n)) = read {
                state.update(index, |c| {
                    c.bytes_received = n as u64;
                    c.received.extend_from_slice(&buf[..n]);
                });
            }
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        }
        DcMode::Echo | DcMode::Telegram | DcMode::Sink | DcMode::EchoThenReset(_) | DcMode::Flood { .. } => {}
    }
    let mut frame = [0u8; FRAME_LEN];
    if stream.read_exact(&mut frame).await.is_err() {
        return;
    }
    let (header, cipher) = obfs2::respond(&frame, None);
    state.update(index, |c| c.header = Some(header));
    if header.tag != TAG_PADDED_INTERMEDIATE {
        return;
    }
    let _ = match mode {
        DcMode::Echo => echo(&mut stream, cipher, state, index, u64::MAX).await,
        DcMode::EchoThenReset(limit) => {
            let echoed = echo(&mut stream, cipher, state, index, limit).await;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            echoed
        }
        DcMode::Telegram => telegram(&mut stream, cipher, state, index).await,
        DcMode::Flood { bytes } => flood(&mut stream, cipher, bytes, state, index).await,
        _ => sink(&mut stream, state, index).await,
    };
}

fn record(c: &mut DcConnection, data: &[u8], limit: usize) {
    c.bytes_received += data.len() as u64;
    let room = limit.saturating_sub(c.received.len());
    c.received.extend_from_slice(&data[..data.len().min(room)]);
}

/// Echoes until the peer closes or `limit` bytes arrived (the bytes past it are not echoed).
async fn echo(
    stream: &mut TcpStream,
    mut cipher: LegCipher,
    state: &State,
    index: usize,
    limit: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        let n = if total >= limit { n - usize::try_from(total - limit).unwrap_or(n).min(n) } else { n };
        let chunk = &mut buf[..n];
        cipher.decrypt(chunk);
        state.update(index, |c| record(c, chunk, state.record_limit));
        cipher.encrypt(chunk);
        stream.write_all(chunk).await?;
        state.update(index, |c| {
            c.bytes_sent += n as u64;
            keep_head(&mut c.sent_head, chunk);
        });
        if total >= limit {
            return Ok(());
        }
    }
}

async fn telegram(
    stream: &mut TcpStream,
    mut cipher: LegCipher,
    state: &State,
    index: usize,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let chunk = &mut buf[..n];
        cipher.decrypt(chunk);
        state.update(index, |c| record(c, chunk, state.record_limit));
        pending.extend_from_slice(chunk);
        let mut answers = Vec::new();
        let mut used = 0;
        loop {
            let frame = match mtproto::split_frame(&pending[used..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return Ok(()),
            };
            used += frame.consumed;
            let nonce =
                mtproto::parse_unencrypted(frame.payload).and_then(|m| mtproto::parse_req_pq_multi(m.body));
            if let Ok(nonce) = nonce {
                state.update(index, |c| c.req_pq_nonces.push(nonce));
                let mut rng = rand::rng();
                let res = mtproto::ResPq::answer(nonce, &mut rng);
                let padding = rng.random_range(0..4);
                let msg_id = mtproto::server_msg_id(mtproto::unix_now());
                answers.extend_from_slice(&mtproto::res_pq_packet(&res, msg_id, padding, &mut rng));
            }
        }
        pending.drain(..used);
        if !answers.is_empty() {
            cipher.encrypt(&mut answers);
            stream.write_all(&answers).await?;
            state.update(index, |c| {
                c.bytes_sent += answers.len() as u64;
                keep_head(&mut c.sent_head, &answers);
            });
        }
    }
}

async fn sink(stream: &mut TcpStream, state: &State, index: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        state.update(index, |c| c.bytes_received += n as u64);
    }
}

async fn flood(
    stream: &mut TcpStream,
    mut cipher: LegCipher,
    bytes: u64,
    state: &State,
    index: usize,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; FLOOD_BLOCK.min(usize::try_from(bytes).unwrap_or(FLOOD_BLOCK))];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(chunk.len() as u64) as usize;
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = flood_byte(sent + i as u64);
        }
        cipher.encrypt(&mut chunk[..n]);
        if sent == 0 {
            state.update(index, |c| keep_head(&mut c.sent_head, &chunk[..n]));
        }
        let mut written = 0;
        while written < n {
            let w = stream.write(&chunk[written..n]).await?;
            if w == 0 {
                return Ok(());
            }
            written += w;
            state.update(index, |c| c.bytes_sent = sent + written as u64);
        }
        sent += n as u64;
    }
    sink(stream, state, index).await
}
