//! The benchmark's middle proxy: the server side of the middle-proxy protocol (the handshake
//! is [`crate::fake_middle::accept_handshake`], framing and CBC are [`mtg_proto::middle`]'s),
//! answering each `RPC_PROXY_REQ` as the packet itself says, and the files that point the proxy
//! under test at it (`[middle-proxy]` `secret-url`, `config-url`, `config-url-v6`).
//!
//! ```text
//! bench packet = "mtgbench" | command u32 LE | answer length u32 LE | pattern[16..len]
//!   command 0 sink: count it, no answer (bulk upload; direct mode's sinking DC)
//!   command 1 echo: answer with the packet itself (bulk both ways, pings, fences)
//!   command 2 serve: answer with a sink packet of `answer length` bytes (bulk download)
//! ```
//! The first 8 bytes are a non-zero `auth_key_id`, so the proxy forwards every packet as an
//! encrypted MTProto packet. Both sides check every packet byte for byte against the same
//! pattern, and count packet bytes (no transport or RPC headers): what the middle proxy
//! received and sent must equal what the clients sent and received.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use mtg_proto::middle::rpc::{self, ToMiddle};
use mtg_proto::middle::{Batch, MiddleConnection, ProxySecret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::fake_middle::{accept_handshake, test_secret};

/// The `auth_key_id` of every bench packet.
pub const MARKER: [u8; 8] = *b"mtgbench";
/// Bytes before a bench packet's pattern: marker, command, answer length.
pub const HEADER: usize = 16;
/// The smallest bench packet (the proxy forwards encrypted packets of 56 bytes and more).
pub const MIN_PACKET: usize = 64;
/// The largest bench packet: the middle-proxy protocol's packet limit.
pub const MAX_PACKET: usize = rpc::MAX_POST_SIZE;
/// Clients at most per endpoint: the proxy's pool holds 8 connections of 300 clients each per
/// middle proxy; more sessions get more endpoints (with headroom).
pub const SESSIONS_PER_ENDPOINT: usize = 2000;
/// Read buffer of a middle-proxy connection.
const READ_BUF: usize = 256 * 1024;

/// What the middle proxy does with a bench packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Count it, answer nothing.
    Sink = 0,
    /// Answer with the packet itself.
    Echo = 1,
    /// Answer with a sink packet of the length the packet names.
    Serve = 2,
}

fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..MAX_PACKET as u32).map(|i| (i.wrapping_mul(0x9e37_79b1) >> 24) as u8 ^ (i as u8)).collect()
    })
}

/// A bench packet of `len` bytes (a multiple of 4, [`MIN_PACKET`]..=[`MAX_PACKET`]).
pub fn packet(command: Command, answer_len: usize, len: usize) -> Vec<u8> {
    assert!(
        (MIN_PACKET..=MAX_PACKET).contains(&len) && len.is_multiple_of(4),
        "bench packet length {len}: whole words in {MIN_PACKET}..={MAX_PACKET}"
    );
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&(command as u32).to_le_bytes());
    out.extend_from_slice(&(answer_len as u32).to_le_bytes());
    out.extend_from_slice(&pattern()[HEADER..len]);
    out
}

/// `count` bench packets framed for padded intermediate (a u32 length, no padding), back to
/// back: what a client encrypts and sends.
pub fn framed(command: Command, answer_len: usize, len: usize, count: usize) -> Vec<u8> {
    let one = packet(command, answer_len, len);
    let mut out = Vec::with_capacity(count * (4 + len));
    for _ in 0..count {
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&one);
    }
    out
}

/// The command of a well-formed bench packet (marker and pattern checked byte for byte).
pub fn check(packet: &[u8]) -> Option<(Command, usize)> {
    if packet.len() < HEADER || packet.len() > MAX_PACKET || packet[..8] != MARKER {
        return None;
    }
    if packet[HEADER..] != pattern()[HEADER..packet.len()] {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
    let command = match word(8) {
        0 => Command::Sink,
        1 => Command::Echo,
        2 => Command::Serve,
        _ => return None,
    };
    Some((command, word(12) as usize))
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    sessions: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    corrupt: AtomicU64,
    new_session: Notify,
}

/// A running bench middle proxy on one or more loopback ports, with its files; stops and
/// removes them when dropped.
#[derive(Debug)]
pub struct BenchMiddle {
    addrs: Vec<SocketAddr>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for BenchMiddle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl BenchMiddle {
    /// Starts `endpoints` listeners (at least one) on the current tokio runtime, all answering
    /// for DC 2, and writes the proxy secret and the lists into a fresh directory.
    pub async fn start(endpoints: usize) -> io::Result<Self> {
        let secret = test_secret();
        let counters = Arc::new(Counters::default());
        let (mut addrs, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..endpoints.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(listener, secret.clone(), counters.clone())));
        }
        let dir = super::subject::unique_dir("mtg-bench-middle")?;
        let mut list = String::new();
        for addr in &addrs {
            list.push_str(&format!("proxy_for 2 {addr};\n"));
        }
        list.push_str("default 2;\n");
        std::fs::write(dir.join("proxy-secret"), secret.as_bytes())?;
        std::fs::write(dir.join("proxy-multi.conf"), list)?;
        std::fs::write(dir.join("proxy-multi-v6.conf"), "")?;
        Ok(Self { addrs, counters, tasks, dir })
    }

    /// Where the proxy connects.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The `[middle-proxy]` table pointing at this server's files (the secret and the IPv4
    /// list; an empty IPv6 list).
    pub fn config_section(&self) -> String {
        let file = |name: &str| self.dir.join(name).display().to_string();
        format!(
            "[middle-proxy]\nsecret-url = \"{}\"\nconfig-url = \"{}\"\nconfig-url-v6 = \"{}\"\n",
            file("proxy-secret"),
            file("proxy-multi.conf"),
            file("proxy-multi-v6.conf")
        )
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connections whose handshake completed.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Client sessions seen (distinct `conn_id`s per connection).
    pub fn sessions(&self) -> u64 {
        self.counters.sessions.load(Ordering::Relaxed)
    }

    /// Packet bytes received in `RPC_PROXY_REQ`s.
    pub fn received(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Packet bytes sent in `RPC_PROXY_ANS`s.
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Packets that were not well-formed bench packets.
    pub fn corrupt(&self) -> u64 {
        self.counters.corrupt.load(Ordering::Relaxed)
    }

    /// Waits until more than `than` sessions were seen (woken by each new session).
    pub async fn sessions_above(&self, than: u64) {
        loop {
            let notified = self.counters.new_session.notified();
            if self.sessions() > than {
                return;
            }
            notified.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, secret: ProxySecret, counters: Arc<Counters>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (secret, counters) = (secret.clone(), counters.clone());
                    conns.spawn(async move { let _ = serve(stream, peer, &secret, &counters).await; });
                }
                // Out of descriptors or similar: back off briefly rather than spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    secret: &ProxySecret,
    counters: &Counters,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; READ_BUF];
    let Some((connection, leftover)) = accept_handshake(&mut stream, peer, secret, None, &mut buf).await?
    else {
        return Ok(());
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let MiddleConnection { mut writer, mut reader } = connection;
    let mut conn = Conn { sessions: HashSet::new(), served: Vec::new(), counters };
    let mut out = Vec::with_capacity(READ_BUF);
    let mut pending = leftover;
    loop {
        {
            // Every answer to one read goes into one batch (one padding run, one write).
            let mut batch = writer.batch(&mut out);
            let mut input = pending.as_slice();
            while let Some(payload) = reader.next(&mut input).map_err(io::Error::other)? {
                conn.answer(payload, &mut batch);
            }
            batch.finish();
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
}

/// One connection's clients and its buffer of served answers.
struct Conn<'a> {
    sessions: HashSet<u64>,
    served: Vec<u8>,
    counters: &'a Counters,
}

impl Conn<'_> {
    /// Counts one message and adds its answer (if any) to `batch`.
    fn answer(&mut self, payload: &[u8], batch: &mut Batch<'_>) {
        let counters = self.counters;
        match rpc::decode_to_middle(payload) {
            Ok(ToMiddle::ProxyReq(req)) => {
                if self.sessions.insert(req.conn_id) {
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                    counters.new_session.notify_waiters();
                }
                counters.received.fetch_add(req.packet.len() as u64, Ordering::Relaxed);
                let answer = match check(req.packet) {
                    None => {
                        counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some((Command::Sink, _)) => return,
                    Some((Command::Echo, _)) => req.packet,
                    Some((Command::Serve, len)) => {
                        if !(MIN_PACKET..=MAX_PACKET).contains(&len) || !len.is_multiple_of(4) {
                            counters.corrupt.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        if self.served.len() != len {
                            self.served = packet(Command::Sink, 0, len);
                        }
                        &self.served
                    }
                };
                // Whole-word packets under the limit always encode.
                if batch.proxy_ans(0, req.conn_id, answer).is_ok() {
                    counters.sent.fetch_add(answer.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(ToMiddle::CloseConn { conn_id }) => {
                self.sessions.remove(&conn_id);
            }
            Ok(ToMiddle::Ping { ping_id }) => batch.pong(ping_id),
            Ok(ToMiddle::Pong { .. } | ToMiddle::Unknown { .. }) => {}
            Err(_) => {
                counters.corrupt.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_check_and_corruption_is_caught() {
        let p = packet(Command::Serve, 4096, 1024);
        assert_eq!(p.len(), 1024);
        assert_eq!(check(&p), Some((Command::Serve, 4096)));
        let mut bad = p.clone();
        bad[700] ^= 1;
        assert_eq!(check(&bad), None);
        assert_eq!(check(&p[..1020]), Some((Command::Serve, 4096)), "a prefix is still pattern");
        let f = framed(Command::Echo, 0, 64, 3);
        assert_eq!(f.len(), 3 * 68);
        assert_eq!(&f[..4], &64u32.to_le_bytes());
        assert!(rpc::forwardable(&f[4..68]).is_ok());
    }
}
