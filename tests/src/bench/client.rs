//! The load generator's client: real FakeTLS handshakes through the proxy (the core's client
//! encoder), then pre-built records; a plain TCP connection for the baseline relay. Every read
//! and write is bounded by [`IO_TIMEOUT`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mtg_proto::Secret;
use mtg_proto::client::{ClientSession, FakeTlsHello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{Counter, Framing};

/// How long any single read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The DC every session asks for (all are overridden to the bench DC).
const DC: i16 = 2;

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} took longer than {IO_TIMEOUT:?}"))
}

/// Runs one I/O step with [`IO_TIMEOUT`].
pub async fn bounded<T>(what: &str, step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, step).await.map_err(|_| timed_out(what))?
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    crate::ensure_loopback(addr)?;
    let stream = bounded("connect", TcpStream::connect(addr)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn unix_secs() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

/// A ClientHello for `secret` stamped now, and what verifying the answer needs.
pub fn hello(secret: &Secret) -> (FakeTlsHello, Vec<u8>) {
    let mut bytes = Vec::new();
    let hello = FakeTlsHello::build(secret, unix_secs(), &mut rand::rng(), &mut bytes)
        .expect("an ee secret builds a hello");
    (hello, bytes)
}

/// Connects to the proxy and completes the FakeTLS handshake (hello, verified server flight).
pub async fn handshake(proxy: SocketAddr, secret: &Secret) -> io::Result<TcpStream> {
    let (hello, bytes) = hello(secret);
    let mut stream = connect(proxy).await?;
    bounded("sending the hello", stream.write_all(&bytes)).await?;
    let mut received = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let verdict =
            hello.verify_flight(&received).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(len) = verdict {
            if received.len() != len {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the server flight"));
            }
            return Ok(stream);
        }
        let n = bounded("reading the server flight", stream.read(&mut buf)).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake"));
        }
        received.extend_from_slice(&buf[..n]);
    }
}

/// Opens a session ready for payload records: through the proxy (`Tls`: handshake, then the
/// obfuscated2 frame, which makes the proxy dial the DC) or the plain relay (`Raw`: connect).
pub async fn open(addr: SocketAddr, framing: Framing, secret: &Secret) -> io::Result<TcpStream> {
    match framing {
        Framing::Raw => connect(addr).await,
        Framing::Tls => Ok(open_session(addr, secret).await?.0),
    }
}

/// Opens a session through the proxy (handshake, then the obfuscated2 frame with the padded
/// intermediate tag) and keeps its cipher, for clients that send real transport packets (the
/// middle-proxy modes).
pub async fn open_session(addr: SocketAddr, secret: &Secret) -> io::Result<(TcpStream, ClientSession)> {
    let mut stream = handshake(addr, secret).await?;
    let mut first = Vec::new();
    let session = ClientSession::start(secret, DC, &mut rand::rng(), &mut first);
    bounded("sending the frame", stream.write_all(&first)).await?;
    Ok((stream, session))
}

/// Sends `record` and waits until `payload` bytes came back; the stream stays open.
pub async fn ping(
    stream: &mut TcpStream,
    counter: &mut Counter,
    record: &[u8],
    payload: usize,
) -> io::Result<()> {
    bounded("sending a ping", stream.write_all(record)).await?;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < payload {
        let n = bounded("reading a pong", stream.read(&mut buf)).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the pong"));
        }
        got += counter.feed(&buf[..n]);
    }
    if got != payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pong of {got} bytes, not {payload}"),
        ));
    }
    Ok(())
}

/// Sends `bytes`, then reads until the peer closes; returns how many bytes came back.
pub async fn send_and_drain(addr: SocketAddr, bytes: &[u8]) -> io::Result<usize> {
    let mut stream = connect(addr).await?;
    bounded("sending", stream.write_all(bytes)).await?;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        let n = bounded("reading to the close", stream.read(&mut buf)).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n;
    }
}
