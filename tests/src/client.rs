//! An async test client that talks through the proxy like a Telegram app, built on
//! `mtg_proto::client`: FakeTLS (`ee`) or secured (`dd`) obfuscated2, then payload both ways.
//!
//! ```text
//! connect_ee: TCP ─► ClientHello(now) ─► read flight, verify digest ─► CCS + frame record
//! connect_dd: TCP ─► frame
//! send: seal ─► write          recv_exact: read ─► open (deframe + decrypt) ─► bytes
//! ```
//! Needs a tokio runtime (a `#[tokio::test]`, or [`crate::runtime::block_on`]). Every read
//! gives up after [`IO_TIMEOUT`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mtg_proto::client::{ClientSession, DEFAULT_HELLO_LEN, FakeTlsHello};
use mtg_proto::doppel::RecordTap;
use mtg_proto::tls::record::Deframer;
use mtg_proto::{Secret, SecretKind};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::mtproto::{self, ResPq};

/// How long one read waits before failing with `TimedOut`.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Choices for the FakeTLS hello (defaults: the secret's hostname, the wall clock, 517 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EeOptions {
    /// The SNI to send instead of the secret's hostname.
    pub sni: Option<String>,
    /// The Unix time to stamp instead of now.
    pub unix_secs: Option<u32>,
    /// Total hello record length.
    pub hello_len: usize,
    /// The loopback address to connect from (bound before connecting) instead of the OS choice.
    pub source: Option<IpAddr>,
    /// Bytes sent before the hello (a PROXY protocol header, say).
    pub preamble: Vec<u8>,
    /// The transport tag of the obfuscated2 frame (padded intermediate unless set).
    pub tag: [u8; 4],
    /// SO_RCVBUF set before connecting (a small receive window), instead of the OS default.
    pub recv_buffer: Option<u32>,
}

impl Default for EeOptions {
    fn default() -> Self {
        Self {
            sni: None,
            unix_secs: None,
            hello_len: DEFAULT_HELLO_LEN,
            source: None,
            preamble: Vec::new(),
            tag: mtg_proto::obfs2::TAG_PADDED_INTERMEDIATE,
            recv_buffer: None,
        }
    }
}

/// A client connection through the proxy, after its handshake.
#[derive(Debug)]
pub struct ProxyClient {
    stream: TcpStream,
    session: ClientSession,
    /// Received bytes not yet opened (an `ee` record split across reads is fine: the
    /// session's deframer keeps its state).
    plain: Vec<u8>,
    flight_len: Option<usize>,
    /// Finds the TLS records in what arrives after the flight (`ee` only).
    tap: RecordTap,
    records: Vec<ReceivedRecord>,
    /// The first [`crate::fake_dc::WIRE_HEAD`] payload bytes received, before decryption.
    wire_head: Vec<u8>,
    /// Strips the records of a copy of what arrives until `wire_head` is full (`ee` only).
    wire_deframer: Option<Deframer>,
}

/// One TLS record received after the server flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedRecord {
    /// Payload length.
    pub len: usize,
    /// When the read that completed it returned.
    pub at: std::time::Instant,
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    tokio::time::timeout(IO_TIMEOUT, stream.read(buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no data from the proxy"))?
}

/// What the proxy sent back to a lone hello before closing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The connection ended with a reset rather than a clean close.
    pub reset: bool,
}

/// A FakeTLS hello for `secret` with `options`, and the bytes to send (preamble, hello).
fn build_hello(secret: &Secret, options: &EeOptions) -> (FakeTlsHello, Vec<u8>) {
    let now = u32::try_from(mtproto::unix_now().as_secs()).unwrap_or(u32::MAX);
    let mut hello_bytes = options.preamble.clone();
    let mut rng = rand::rng();
    let hello = FakeTlsHello::build_with(
        secret,
        options.sni.as_deref().unwrap_or(secret.host()),
        options.unix_secs.unwrap_or(now),
        options.hello_len,
        &mut rng,
        &mut hello_bytes,
    )
    .expect("an ee secret builds a hello");
    (hello, hello_bytes)
}

/// A TCP connection to the loopback `proxy`, from the loopback `options.source` when given,
/// with `options.recv_buffer` as SO_RCVBUF when given.
async fn connect_from(proxy: SocketAddr, options: &EeOptions) -> io::Result<TcpStream> {
    crate::ensure_loopback(proxy)?;
    let stream = match (options.source, options.recv_buffer) {
        (None, None) => TcpStream::connect(proxy).await?,
        (source, recv_buffer) => {
            let socket = if proxy.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            if let Some(ip) = source {
                let from = SocketAddr::new(ip, 0);
                crate::ensure_loopback(from)?;
                socket.bind(from)?;
            }
            if let Some(size) = recv_buffer {
                socket.set_recv_buffer_size(size)?;
            }
            socket.connect(proxy).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl ProxyClient {
    /// Connects with an `ee` secret to `dc` and completes the FakeTLS handshake.
    pub async fn connect_ee(proxy: SocketAddr, secret: &Secret, dc: i16) -> io::Result<Self> {
        Self::connect_ee_with(proxy, secret, dc, &EeOptions::default()).await
    }

    /// Like [`Self::connect_ee`] with hello choices. Fails with `InvalidData` if the answer
    /// is not a server flight signed with the secret (for example the fronting site's).
    pub async fn connect_ee_with(
        proxy: SocketAddr,
        secret: &Secret,
        dc: i16,
        options: &EeOptions,
    ) -> io::Result<Self> {
        if secret.kind() != SecretKind::FakeTls {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "connect_ee needs an ee secret"));
        }
        let (hello, hello_bytes) = build_hello(secret, options);
        let mut stream = connect_from(proxy, options).await?;
        stream.write_all(&hello_bytes).await?;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let flight_len = loop {
            match hello.verify_flight(&received).map_err(invalid)? {
                Some(len) => break len,
                None => {
                    let n = read_some(&mut stream, &mut buf).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "proxy closed during handshake",
                        ));
                    }
                    received.extend_from_slice(&buf[..n]);
                }
            }
        };
        let mut first = Vec::new();
        let session = ClientSession::start_with_tag(secret, dc, options.tag, &mut rand::rng(), &mut first);
        stream.write_all(&first).await?;
        let mut client = Self {
            stream,
            session,
            plain: Vec::new(),
            flight_len: Some(flight_len),
            tap: RecordTap::new(),
            records: Vec::new(),
            wire_head: Vec::new(),
            wire_deframer: Some(Deframer::new()),
        };
        let mut rest = received.split_off(flight_len);
        client.open(&mut rest)?;
        Ok(client)
    }

    /// Sends a valid `ee` ClientHello and returns everything the proxy answers until it
    /// closes the connection (or [`IO_TIMEOUT`] passes: an error).
    pub async fn hello_answer(proxy: SocketAddr, secret: &Secret, options: &EeOptions) -> io::Result<Answer> {
        if secret.kind() != SecretKind::FakeTls {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "hello_answer needs an ee secret"));
        }
        let (_, hello_bytes) = build_hello(secret, options);
        let mut stream = connect_from(proxy, options).await?;
        // The proxy may close before the hello is written: then the write fails with a reset.
        let _ = stream.write_all(&hello_bytes).await;
        let mut answer = Answer::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match read_some(&mut stream, &mut buf).await {
                Ok(0) => return Ok(answer),
                Ok(n) => answer.bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    answer.reset = true;
                    return Ok(answer);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects with a `dd` secret to `dc`: sends the obfuscated2 frame straight away.
    pub async fn connect_dd(proxy: SocketAddr, secret: &Secret, dc: i16) -> io::Result<Self> {
        if secret.kind() != SecretKind::Secured {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "connect_dd needs a dd secret"));
        }
        crate::ensure_loopback(proxy)?;
        let mut stream = TcpStream::connect(proxy).await?;
        stream.set_nodelay(true)?;
        let mut first = Vec::new();
        let session = ClientSession::start(secret, dc, &mut rand::rng(), &mut first);
        stream.write_all(&first).await?;
        Ok(Self {
            stream,
            session,
            plain: Vec::new(),
            flight_len: None,
            tap: RecordTap::new(),
            records: Vec::new(),
            wire_head: Vec::new(),
            wire_deframer: None,
        })
    }

    /// The length of the proxy's server flight (`ee` only).
    pub fn flight_len(&self) -> Option<usize> {
        self.flight_len
    }

    /// The client's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The TLS records received after the flight so far, in order (`ee` only).
    pub fn records(&self) -> &[ReceivedRecord] {
        &self.records
    }

    /// The first [`crate::fake_dc::WIRE_HEAD`] payload bytes received so far as they were on
    /// the wire, before decryption (`ee`: record payloads; `dd`: the bytes). In fast mode they
    /// are the bytes the DC sent ([`crate::fake_dc::DcConnection::sent_head`]).
    pub fn wire_head(&self) -> &[u8] {
        &self.wire_head
    }

    fn open(&mut self, bytes: &mut [u8]) -> io::Result<()> {
        if self.wire_head.len() < crate::fake_dc::WIRE_HEAD {
            let mut copy = bytes.to_vec();
            let range = match &mut self.wire_deframer {
                Some(deframer) => deframer.deframe_in_place(&mut copy).map_err(invalid)?,
                None => 0..copy.len(),
            };
            crate::fake_dc::keep_head(&mut self.wire_head, &copy[range]);
        }
        if self.flight_len.is_some() {
            let at = std::time::Instant::now();
            let records = &mut self.records;
            self.tap.feed(bytes, |r| records.push(ReceivedRecord { len: usize::from(r.len), at }));
        }
        let range = self.session.open(bytes).map_err(invalid)?;
        self.plain.extend_from_slice(&bytes[range]);
        Ok(())
    }

    /// Encrypts and sends `payload` (any bytes: the proxy does not parse them).
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 64);
        self.session.seal(payload, &mut out);
        self.stream.write_all(&out).await
    }

    /// Writes `bytes` to the socket as they are, without sealing (to send garbage after the
    /// handshake).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads until at least `n` payload bytes arrived and returns exactly `n` of them.
    pub async fn recv_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.plain.len() < n {
            let got = read_some(&mut self.stream, &mut buf).await?;
            if got == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "proxy closed the connection"));
            }
            self.open(&mut buf[..got])?;
        }
        let rest = self.plain.split_off(n);
        Ok(std::mem::replace(&mut self.plain, rest))
    }

    /// Sends `payload` to an echoing DC and reads it back, interleaved (256 KiB out, then what
    /// came back, up to 64 KiB at a time) so that neither side stalls.
    pub async fn echo(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let (mut sent, mut got) = (0, Vec::with_capacity(payload.len()));
        while got.len() < payload.len() {
            if sent < payload.len() {
                let end = (sent + 256 * 1024).min(payload.len());
                self.send(&payload[sent..end]).await?;
                sent = end;
            }
            let want = (sent - got.len()).min(64 * 1024);
            got.extend(self.recv_exact(want).await?);
        }
        Ok(got)
    }

    /// Reads one padded-intermediate frame and returns its payload (padding included).
    pub async fn recv_frame(&mut self) -> io::Result<Vec<u8>> {
        let head = self.recv_exact(4).await?;
        let len = (u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & !mtproto::QUICK_ACK) as usize;
        if len > mtproto::MAX_FRAME_LEN {
            return Err(invalid(mtproto::MtprotoError::FrameTooLong(len)));
        }
        self.recv_exact(len).await
    }

    /// Sends `req_pq_multi` with a random nonce and reads the `resPQ`; fails unless it echoes
    /// the nonce.
    pub async fn req_pq(&mut self) -> io::Result<ResPq> {
        let (nonce, packet) = {
            let mut rng = rand::rng();
            let nonce: [u8; 16] = rng.random();
            let padding = rng.random_range(0..4);
            let msg_id = mtproto::client_msg_id(mtproto::unix_now());
            (nonce, mtproto::req_pq_multi_packet(&nonce, msg_id, padding, &mut rng))
        };
        self.send(&packet).await?;
        let payload = self.recv_frame().await?;
        let res = mtproto::parse_res_pq_payload(&payload).map_err(invalid)?;
        if res.nonce != nonce {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "resPQ does not echo the nonce"));
        }
        Ok(res)
    }

    /// Waits until the proxy closes the connection (reading and dropping anything that comes
    /// first); `Ok` on a clean close, the error on a reset or after [`IO_TIMEOUT`].
    pub async fn wait_closed(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        while read_some(&mut self.stream, &mut buf).await? != 0 {}
        Ok(())
    }

    /// Closes the sending side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}
