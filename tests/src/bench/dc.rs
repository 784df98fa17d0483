//! The far end of every benchmark: a TCP server standing in for the Telegram DC (behind the
//! proxy) or for the sink behind the plain relay. It does no crypto: it skips the proxy's
//! 64-byte obfuscated2 frame, then sinks, sources, echoes or answers once, counting bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::wire;

/// Bytes of the proxy's obfuscated2 frame at the start of each DC connection.
pub const FRAME_LEN: usize = mtg_proto::obfs2::FRAME_LEN;
/// Read buffer of a sinking or sourcing connection.
const BULK_BUF: usize = 64 * 1024;
/// Read buffer of an echoing connection (small: thousands of them stay open).
const ECHO_BUF: usize = 4 * 1024;

/// What the server does with each connection after the skipped prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Reads and counts until the peer closes.
    Sink,
    /// Writes random bytes as fast as it can while counting what it reads.
    Source,
    /// Sends back what it reads.
    Echo,
    /// Reads `expect` bytes, writes `reply` random bytes, closes (a fronting site, or the
    /// baseline's answer to a hello).
    Reply {
        /// Bytes to read first.
        expect: usize,
        /// Bytes to answer.
        reply: usize,
    },
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    received: AtomicU64,
    sent: AtomicU64,
}

/// A running server; stops and drops its connections when dropped.
#[derive(Debug)]
pub struct BenchDc {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for BenchDc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BenchDc {
    /// Starts on a free loopback port on the current tokio runtime. `skip` bytes at the start of
    /// each connection are read and ignored (the frame: [`FRAME_LEN`] behind the proxy, 0 behind
    /// the plain relay).
    pub async fn start(behavior: Behavior, skip: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, behavior, skip, counters.clone()));
        Ok(Self { addr, counters, task })
    }

    /// Where to send connections.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Bytes received after the skipped prefixes, over all connections.
    pub fn received(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Bytes sent, over all connections.
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, behavior: Behavior, skip: usize, counters: Arc<Counters>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, behavior, skip, counters.clone()));
                }
                // Out of descriptors or similar: back off briefly rather than spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, behavior: Behavior, skip: usize, counters: Arc<Counters>) {
    let mut prefix = vec![0u8; skip];
    if stream.read_exact(&mut prefix).await.is_err() {
        return;
    }
    let _ = match behavior {
        Behavior::Sink => sink(&mut stream, &counters).await,
        Behavior::Source => source(stream, &counters).await,
        Behavior::Echo => echo(&mut stream, &counters).await,
        Behavior::Reply { expect, reply } => answer(&mut stream, expect, reply, &counters).await,
    };
}

async fn sink(stream: &mut TcpStream, counters: &Counters) -> std::io::Result<()> {
    let mut buf = vec![0u8; BULK_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counters.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn source(stream: TcpStream, counters: &Counters) -> std::io::Result<()> {
    let (mut read, mut write) = stream.into_split();
    let data = wire::garbage(BULK_BUF);
    let writer = async {
        loop {
            let n = write.write(&data).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    let reader = async {
        let mut buf = vec![0u8; BULK_BUF];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            counters.received.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    // Either side ending (the peer closed or reset) ends the connection.
    tokio::select! {
        r = writer => r,
        r = reader => r,
    }
}

async fn echo(stream: &mut TcpStream, counters: &Counters) -> std::io::Result<()> {
    let mut buf = vec![0u8; ECHO_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counters.received.fetch_add(n as u64, Ordering::Relaxed);
        stream.write_all(&buf[..n]).await?;
        counters.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn answer(
    stream: &mut TcpStream,
    expect: usize,
    reply: usize,
    counters: &Counters,
) -> std::io::Result<()> {
    let mut got = vec![0u8; expect];
    stream.read_exact(&mut got).await?;
    counters.received.fetch_add(expect as u64, Ordering::Relaxed);
    stream.write_all(&wire::garbage(reply)).await?;
    counters.sent.fetch_add(reply as u64, Ordering::Relaxed);
    stream.shutdown().await
}
