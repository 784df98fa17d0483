//! The nonce exchange and the encrypted handshake of a middle-proxy connection, both sides.
//!
//! ```text
//!  client (us)                                         middle proxy
//!  start() ── nonce frame, plaintext, seq -2 (44 B) ──►  MiddleServerHandshake::feed
//!          ◄── its nonce frame, plaintext, seq -2 ────   (derives keys)
//!  feed()  (checks, derives keys)
//!          ── RPC_HANDSHAKE, CBC, seq -1 (48 B) ─────►  feed (checks)
//!          ◄── RPC_HANDSHAKE (or _ERROR), seq -1 ─────
//!  feed()  ─► Ready(MiddleConnection)                   ─► Ready(MiddleConnection)
//! ```
//!
//! Each side is one value consumed by `feed` and handed back inside `NeedMore` while it waits,
//! so a finished or failed handshake cannot be fed again. `feed` takes from its input only
//! what the handshake needs; whatever is left in `input` after `Ready` belongs to the
//! connection's reader. Bytes to send are appended to `out`.
//! [`MiddleServerHandshake`] is the middle proxy's side, for tests and tools (the fake middle
//! proxy of the integration tests).

use core::fmt;

use rand_core::CryptoRng;

use crate::middle::cbc::{CbcDecryptor, CbcEncryptor};
use crate::middle::conn::{MiddleConnection, RpcReader, RpcWriter};
use crate::middle::frame::{FrameError, MAX_FRAME_LEN, RpcDeframer, SEQ_HANDSHAKE, SEQ_NONCE};
use crate::middle::kdf::{self, Endpoints, KdfInput, Purpose};
use crate::middle::proxy_secret::ProxySecret;
use crate::middle::rpc::{RPC_HANDSHAKE, RPC_HANDSHAKE_ERROR, RPC_NONCE};

/// Length of a nonce frame on the wire (never padded).
pub const NONCE_FRAME_LEN: usize = 44;
/// The pid we send as both `sender_pid` and `peer_pid` (as alexbers, seriyps and mtg-multi).
pub const PID: [u8; 12] = *b"IPIPPRPDTIME";
/// Largest accepted distance between the two nonce times, in seconds.
pub const MAX_SKEW_SECS: i64 = 30;
/// The only crypto schema we speak (AES).
pub const CRYPTO_SCHEMA_AES: u32 = 1;
/// Handshake flag asking for CRC-32C frames; we never send it and refuse it in a reply.
pub const FLAG_CRC32C: u32 = 0x800;
/// Largest frame accepted during the handshake (its frames are 44 bytes).
const HANDSHAKE_MAX_LEN: usize = 1024;

/// Why a handshake failed. Never carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A malformed frame (length, CRC or seq). After our handshake frame was sent, a bad CRC
    /// usually means the two sides derived different keys (wrong addresses or secret).
    Frame(FrameError),
    /// The nonce frame's payload is not 32 bytes.
    NonceLength(usize),
    /// The nonce frame's type is not `RPC_NONCE`.
    NonceType(u32),
    /// The nonce frame asks for a crypto schema other than 1 (AES).
    NonceSchema(u32),
    /// The peer's `key_select` differs from ours (the two proxy secrets differ).
    KeySelect {
        /// Ours (the first 4 bytes of our proxy secret, LE).
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The two nonce times are more than 30 s apart.
    ClockSkew {
        /// Our time (what we sent, or our clock on the middle proxy's side).
        ours: u32,
        /// The peer's time.
        theirs: u32,
    },
    /// The handshake frame's payload is not 32 bytes.
    HandshakeLength(usize),
    /// The handshake frame's type is neither `RPC_HANDSHAKE` nor `RPC_HANDSHAKE_ERROR`.
    HandshakeType(u32),
    /// The handshake sets unknown low flag bits.
    HandshakeFlags(u32),
    /// The handshake asks for CRC-32C frames, which we do not speak.
    Crc32cRequested,
    /// The reply's `peer_pid` is not the `sender_pid` we sent.
    PeerPid([u8; 12]),
    /// The peer answered `RPC_HANDSHAKE_ERROR` with this code.
    Rejected {
        /// The error code (C: -3 bad length, -4 peer_pid, -6 sender_pid, -7 flags, -8 CRC32C).
        code: i32,
    },
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

fn error_code_meaning(code: i32) -> &'static str {
    match code {
        -3 => "bad handshake length",
        -4 => "peer_pid does not match the receiver",
        -6 => "sender_pid mismatch",
        -7 => "unknown low flag bits",
        -8 => "CRC32C requested but not enabled",
        _ => "unknown code",
    }
}

fn skew(ours: u32, theirs: u32) -> i64 {
    i64::from(theirs.wrapping_sub(ours) as i32)
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "middle-proxy handshake: {e}"),
            Self::NonceLength(len) => write!(f, "middle-proxy nonce of {len} bytes, expected 32"),
            Self::NonceType(t) => write!(f, "middle-proxy nonce frame of type {t:08x}, expected RPC_NONCE"),
            Self::NonceSchema(s) => {
                write!(f, "middle-proxy nonce asks for crypto schema {s}, expected 1 (AES)")
            }
            Self::KeySelect { ours, theirs } => write!(
                f,
                "middle-proxy key_select {theirs:08x} differs from ours {ours:08x} (different proxy secrets)"
            ),
            Self::ClockSkew { ours, theirs } => write!(
                f,
                "middle-proxy clock differs from ours by {} s (ours {ours}, theirs {theirs}; at most {MAX_SKEW_SECS} s)",
                skew(*ours, *theirs)
            ),
            Self::HandshakeLength(len) => write!(f, "middle-proxy handshake of {len} bytes, expected 32"),
            Self::HandshakeType(t) => {
                write!(f, "middle-proxy handshake frame of type {t:08x}, expected RPC_HANDSHAKE")
            }
            Self::HandshakeFlags(flags) => {
                write!(f, "middle-proxy handshake flags {flags:08x} have unknown low bits")
            }
            Self::Crc32cRequested => {
                f.write_str("middle-proxy handshake asks for CRC32C frames, which we do not use")
            }
            Self::PeerPid(pid) => {
                write!(f, "middle-proxy handshake peer_pid {pid:02x?} is not the pid we sent")
            }
            Self::Rejected { code } => {
                write!(f, "middle proxy refused the handshake: error {code} ({})", error_code_meaning(*code))
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// A nonce frame's payload fields.
struct Nonce {
    key_select: u32,
    ts: u32,
    nonce: [u8; 16],
}

fn nonce_frame(key_select: [u8; 4], ts: u32, nonce: &[u8; 16]) -> [u8; NONCE_FRAME_LEN] {
    let mut f = [0u8; NONCE_FRAME_LEN];
    f[0..4].copy_from_slice(&(NONCE_FRAME_LEN as u32).to_le_bytes());
    f[4..8].copy_from_slice(&SEQ_NONCE.to_le_bytes());
    f[8..12].copy_from_slice(&RPC_NONCE.to_le_bytes());
    f[12..16].copy_from_slice(&key_select);
    f[16..20].copy_from_slice(&CRYPTO_SCHEMA_AES.to_le_bytes());
    f[20..24].copy_from_slice(&ts.to_le_bytes());
    f[24..40].copy_from_slice(nonce);
    let crc = crc32fast::hash(&f[..40]);
    f[40..44].copy_from_slice(&crc.to_le_bytes());
    f
}

fn word(p: &[u8], at: usize) -> u32 {
    p.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn parse_nonce(payload: &[u8]) -> Result<Nonce, HandshakeError> {
    let p: &[u8; 32] = payload.try_into().map_err(|_| HandshakeError::NonceLength(payload.len()))?;
    if word(p, 0) != RPC_NONCE {
        return Err(HandshakeError::NonceType(word(p, 0)));
    }
    if word(p, 8) != CRYPTO_SCHEMA_AES {
        return Err(HandshakeError::NonceSchema(word(p, 8)));
    }
    let mut nonce = [0; 16];
    nonce.copy_from_slice(&p[16..32]);
    Ok(Nonce { key_select: word(p, 4), ts: word(p, 12), nonce })
}

fn check_skew(ours: u32, theirs: u32) -> Result<(), HandshakeError> {
    if skew(ours, theirs).abs() > MAX_SKEW_SECS {
        return Err(HandshakeError::ClockSkew { ours, theirs });
    }
    Ok(())
}

fn handshake_payload(sender: &[u8; 12], peer: &[u8; 12]) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0..4].copy_from_slice(&RPC_HANDSHAKE.to_le_bytes());
    // flags 0 (bytes 4..8)
    p[8..20].copy_from_slice(sender);
    p[20..32].copy_from_slice(peer);
    p
}

/// A valid handshake's pids.
struct Pids {
    sender: [u8; 12],
    peer: [u8; 12],
}

fn parse_handshake(payload: &[u8]) -> Result<Pids, HandshakeError> {
    let kind = word(payload, 0);
    if kind == RPC_HANDSHAKE_ERROR && payload.len() >= 8 {
        return Err(HandshakeError::Rejected { code: word(payload, 4) as i32 });
    }
    let p: &[u8; 32] = payload.try_into().map_err(|_| HandshakeError::HandshakeLength(payload.len()))?;
    if kind != RPC_HANDSHAKE {
        return Err(HandshakeError::HandshakeType(kind));
    }
    let flags = word(p, 4);
    if flags & FLAG_CRC32C != 0 {
        return Err(HandshakeError::Crc32cRequested);
    }
    if flags & 0xff != 0 {
        return Err(HandshakeError::HandshakeFlags(flags));
    }
    let (mut sender, mut peer) = ([0; 12], [0; 12]);
    sender.copy_from_slice(&p[8..20]);
    peer.copy_from_slice(&p[20..32]);
    Ok(Pids { sender, peer })
}

/// Derives both directions and builds the halves; `ours` is the purpose we write with.
fn halves(input: &KdfInput<'_>, ours: Purpose) -> (RpcWriter, RpcReader) {
    let theirs = match ours {
        Purpose::Client => Purpose::Server,
        Purpose::Server => Purpose::Client,
    };
    let write = kdf::derive(input, ours);
    let read = kdf::derive(input, theirs);
    (
        RpcWriter::new(CbcEncryptor::new(&write), SEQ_HANDSHAKE),
        RpcReader::new(CbcDecryptor::new(&read), SEQ_HANDSHAKE, HANDSHAKE_MAX_LEN),
    )
}

fn ready(writer: RpcWriter, mut reader: RpcReader) -> MiddleConnection {
    reader.set_max_len(MAX_FRAME_LEN);
    MiddleConnection { writer, reader }
}

enum Stage {
    Nonce {
        deframer: RpcDeframer,
        secret: ProxySecret,
    },
    /// Boxed: the two AES key schedules are large and this stage is short-lived.
    Handshake(Box<(RpcWriter, RpcReader)>),
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Self::Nonce { .. } => "awaiting nonce",
            Self::Handshake(_) => "awaiting handshake",
        }
    }
}

/// What the client handshake needs next.
#[must_use = "a step owns the rest of the handshake or the connection"]
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "returned once per connection and unpacked at once")]
pub enum ClientStep {
    /// Send `out` if it is not empty, read more, and feed again.
    NeedMore(MiddleHandshake),
    /// The connection is ready; `input` holds whatever followed the handshake reply.
    Ready(MiddleConnection),
}

/// Our side of a middle-proxy connection's nonce exchange and handshake.
pub struct MiddleHandshake {
    endpoints: Endpoints,
    nonce: [u8; 16],
    ts: u32,
    stage: Stage,
}

impl fmt::Debug for MiddleHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiddleHandshake")
            .field("endpoints", &self.endpoints)
            .field("ts", &self.ts)
            .field("stage", &self.stage.name())
            .finish_non_exhaustive()
    }
}

impl MiddleHandshake {
    /// Starts a handshake at `now_unix_secs` with a fresh nonce from `rng`; returns it and the
    /// 44-byte plaintext nonce frame to send first. `endpoints.client()` must be our address as
    /// the middle proxy sees it (see [`Endpoints`]).
    pub fn start(
        secret: &ProxySecret,
        now_unix_secs: u64,
        endpoints: Endpoints,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> (Self, [u8; NONCE_FRAME_LEN]) {
        // crypto_ts is the Unix time mod 2^32.
        let ts = now_unix_secs as u32;
        let mut nonce = [0; 16];
        rng.fill_bytes(&mut nonce);
        let frame = nonce_frame(secret.key_select_bytes(), ts, &nonce);
        let deframer = RpcDeframer::with_max_len(SEQ_NONCE, HANDSHAKE_MAX_LEN);
        (Self { endpoints, nonce, ts, stage: Stage::Nonce { deframer, secret: secret.clone() } }, frame)
    }

    /// The addresses the keys are derived from (for logs when the peer closes on us).
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    /// Takes received bytes from `input`: checks the middle proxy's nonce (then appends our
    /// encrypted handshake frame to `out`) and its handshake reply.
    pub fn feed(self, input: &mut &[u8], out: &mut Vec<u8>) -> Result<ClientStep, HandshakeError> {
        let Self { endpoints, nonce, ts, mut stage } = self;
        loop {
            stage = match stage {
                Stage::Nonce { mut deframer, secret } => {
                    let reply = match deframer.next(input)? {
                        Some(payload) => parse_nonce(payload)?,
                        None => {
                            let stage = Stage::Nonce { deframer, secret };
                            return Ok(ClientStep::NeedMore(Self { endpoints, nonce, ts, stage }));
                        }
                    };
                    if reply.key_select != secret.key_select() {
                        return Err(HandshakeError::KeySelect {
                            ours: secret.key_select(),
                            theirs: reply.key_select,
                        });
                    }
                    check_skew(ts, reply.ts)?;
                    let input = KdfInput {
                        nonce_srv: &reply.nonce,
                        nonce_clt: &nonce,
                        clt_ts: ts,
                        endpoints: &endpoints,
                        secret: &secret,
                    };
                    let (mut writer, reader) = halves(&input, Purpose::Client);
                    let mut batch = writer.batch(out);
                    // A fixed 32-byte payload always frames.
                    let _ = batch.payload(&handshake_payload(&PID, &PID));
                    batch.finish();
                    Stage::Handshake(Box::new((writer, reader)))
                }
                Stage::Handshake(halves) => {
                    let (writer, mut reader) = *halves;
                    let pids = match reader.next(input)? {
                        Some(payload) => parse_handshake(payload)?,
                        None => {
                            let stage = Stage::Handshake(Box::new((writer, reader)));
                            return Ok(ClientStep::NeedMore(Self { endpoints, nonce, ts, stage }));
                        }
                    };
                    if pids.peer != PID {
                        return Err(HandshakeError::PeerPid(pids.peer));
                    }
                    return Ok(ClientStep::Ready(ready(writer, reader)));
                }
            };
        }
    }
}

/// What the middle proxy's side needs next.
#[must_use = "a step owns the rest of the handshake or the connection"]
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "returned once per connection and unpacked at once")]
pub enum ServerStep {
    /// Send `out` if it is not empty, read more, and feed again.
    NeedMore(MiddleServerHandshake),
    /// The connection is ready (`out` holds the handshake reply to send).
    Ready(MiddleConnection),
    /// The handshake was answered with `RPC_HANDSHAKE_ERROR` as asked by
    /// [`MiddleServerHandshake::reject_handshake_with`]; send `out`, then close.
    Rejected {
        /// The code sent.
        code: i32,
    },
}

/// The middle proxy's side of the nonce exchange and handshake, for tests and tools: accepts
/// a nonce (schema 1, matching `key_select`, time within 30 s), answers with its own, derives
/// with mirrored purposes, accepts the handshake and answers with `peer_pid` = the client's
/// `sender_pid`.
pub struct MiddleServerHandshake {
    endpoints: Endpoints,
    nonce: [u8; 16],
    now: u32,
    reject_with: Option<i32>,
    stage: Stage,
}

impl fmt::Debug for MiddleServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiddleServerHandshake")
            .field("endpoints", &self.endpoints)
            .field("now", &self.now)
            .field("reject_with", &self.reject_with)
            .field("stage", &self.stage.name())
            .finish_non_exhaustive()
    }
}

impl MiddleServerHandshake {
    /// Waits for a client's nonce. `endpoints.server()` is the middle proxy's local address,
    /// `endpoints.client()` the client's address as seen from here.
    pub fn new(
        secret: &ProxySecret,
        now_unix_secs: u64,
        endpoints: Endpoints,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        let mut nonce = [0; 16];
        rng.fill_bytes(&mut nonce);
        let deframer = RpcDeframer::with_max_len(SEQ_NONCE, HANDSHAKE_MAX_LEN);
        Self {
            endpoints,
            nonce,
            now: now_unix_secs as u32,
            reject_with: None,
            stage: Stage::Nonce { deframer, secret: secret.clone() },
        }
    }

    /// Answers the client's (valid) handshake with `RPC_HANDSHAKE_ERROR` and `code` instead.
    pub fn reject_handshake_with(mut self, code: i32) -> Self {
        self.reject_with = Some(code);
        self
    }

    /// Takes received bytes from `input`: checks the client's nonce (then appends our nonce
    /// frame to `out`) and its handshake (then appends our reply).
    pub fn feed(self, input: &mut &[u8], out: &mut Vec<u8>) -> Result<ServerStep, HandshakeError> {
        let Self { endpoints, nonce, now, reject_with, mut stage } = self;
        loop {
            stage = match stage {
                Stage::Nonce { mut deframer, secret } => {
                    let hello = match deframer.next(input)? {
                        Some(payload) => parse_nonce(payload)?,
                        None => {
                            let stage = Stage::Nonce { deframer, secret };
                            return Ok(ServerStep::NeedMore(Self {
                                endpoints,
                                nonce,
                                now,
                                reject_with,
                                stage,
                            }));
                        }
                    };
                    if hello.key_select != secret.key_select() {
                        return Err(HandshakeError::KeySelect {
                            ours: secret.key_select(),
                            theirs: hello.key_select,
                        });
                    }
                    check_skew(now, hello.ts)?;
                    out.extend_from_slice(&nonce_frame(secret.key_select_bytes(), now, &nonce));
                    let input = KdfInput {
                        nonce_srv: &nonce,
                        nonce_clt: &hello.nonce,
                        clt_ts: hello.ts,
                        endpoints: &endpoints,
                        secret: &secret,
                    };
                    let (writer, reader) = halves(&input, Purpose::Server);
                    Stage::Handshake(Box::new((writer, reader)))
                }
                Stage::Handshake(halves) => {
                    let (mut writer, mut reader) = *halves;
                    let pids = match reader.next(input)? {
                        Some(payload) => parse_handshake(payload)?,
                        None => {
                            let stage = Stage::Handshake(Box::new((writer, reader)));
                            return Ok(ServerStep::NeedMore(Self {
                                endpoints,
                                nonce,
                                now,
                                reject_with,
                                stage,
                            }));
                        }
                    };
                    let mut batch = writer.batch(out);
                    if let Some(code) = reject_with {
                        let mut p = [0u8; 20];
                        p[0..4].copy_from_slice(&RPC_HANDSHAKE_ERROR.to_le_bytes());
                        p[4..8].copy_from_slice(&code.to_le_bytes());
                        p[8..20].copy_from_slice(&PID);
                        // A fixed 20-byte payload always frames.
                        let _ = batch.payload(&p);
                        batch.finish();
                        return Ok(ServerStep::Rejected { code });
                    }
                    let _ = batch.payload(&handshake_payload(&PID, &pids.sender));
                    batch.finish();
                    return Ok(ServerStep::Ready(ready(writer, reader)));
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middle::rpc::{self, FromMiddle, ToMiddle};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_700_000_000;

    fn secret() -> ProxySecret {
        let mut bytes: Vec<u8> = (0..128u8).collect();
        bytes[..4].copy_from_slice(&[0xc4, 0xf9, 0xfa, 0xca]);
        ProxySecret::new(&bytes).unwrap()
    }

    fn endpoints() -> Endpoints {
        Endpoints::new("127.0.0.1:40001".parse().unwrap(), "127.0.0.1:8888".parse().unwrap()).unwrap()
    }

    /// Runs both sides, delivering `chunk` bytes at a time each way.
    fn run(
        client_endpoints: Endpoints,
        server_now: u64,
        chunk: usize,
        reject: Option<i32>,
    ) -> (Result<MiddleConnection, HandshakeError>, Result<Option<MiddleConnection>, HandshakeError>) {
        let mut rng = StdRng::seed_from_u64(1);
        let (mut client, first) = MiddleHandshake::start(&secret(), NOW, client_endpoints, &mut rng);
        assert_eq!(first.len(), NONCE_FRAME_LEN);
        let mut server = Some(MiddleServerHandshake::new(&secret(), server_now, endpoints(), &mut rng));
        if let Some(code) = reject {
            server = server.map(|s| s.reject_handshake_with(code));
        }
        let mut to_server = first.to_vec();
        let mut to_client = Vec::new();
        let mut server_done = None;
        for _ in 0..10_000 {
            if let Some(s) = server.take() {
                let take = to_server.len().min(chunk);
                let piece: Vec<u8> = to_server.drain(..take).collect();
                let mut input = &piece[..];
                match s.feed(&mut input, &mut to_client) {
                    Ok(ServerStep::NeedMore(s)) => server = Some(s),
                    Ok(ServerStep::Ready(c)) => server_done = Some(Ok(Some(c))),
                    Ok(ServerStep::Rejected { .. }) => server_done = Some(Ok(None)),
                    Err(e) => return (Err(e), Err(e)),
                }
                assert!(input.is_empty());
            }
            let take = to_client.len().min(chunk);
            let piece: Vec<u8> = to_client.drain(..take).collect();
            let mut input = &piece[..];
            match client.feed(&mut input, &mut to_server) {
                Ok(ClientStep::NeedMore(c)) => client = c,
                Ok(ClientStep::Ready(conn)) => {
                    assert!(input.is_empty());
                    return (Ok(conn), server_done.unwrap_or(Ok(None)));
                }
                Err(e) => return (Err(e), server_done.unwrap_or(Ok(None))),
            }
        }
        panic!("handshake did not finish");
    }

    fn exchange(client: &mut MiddleConnection, server: &mut MiddleConnection) {
        let mut wire = Vec::new();
        let req = rpc::ProxyReq {
            conn_id: 5,
            transport: crate::middle::Transport::PaddedIntermediate,
            quick_ack: false,
            client: "127.0.0.1:5000".parse().unwrap(),
            ours: "127.0.0.1:443".parse().unwrap(),
            ad_tag: Some([0xab; 16]),
        };
        let mut b = client.writer.batch(&mut wire);
        b.proxy_req(&req, &[0; 40]).unwrap();
        b.ping(99);
        b.finish();
        let mut input = &wire[..];
        let p = server.reader.next(&mut input).unwrap().unwrap();
        let ToMiddle::ProxyReq(view) = rpc::decode_to_middle(p).unwrap() else { panic!("not a request") };
        assert_eq!((view.conn_id, view.ad_tag, view.flags), (5, Some([0xab; 16]), 0x2002_100a));
        let p = server.reader.next(&mut input).unwrap().unwrap();
        assert_eq!(rpc::decode_to_middle(p), Ok(ToMiddle::Ping { ping_id: 99 }));

        let mut wire = Vec::new();
        let mut b = server.writer.batch(&mut wire);
        b.proxy_ans(0, 5, &[1; 12]).unwrap();
        b.pong(99);
        b.finish();
        let mut input = &wire[..];
        let p = client.reader.next(&mut input).unwrap().unwrap();
        assert_eq!(
            rpc::decode_from_middle(p),
            Ok(FromMiddle::ProxyAns { flags: 0, conn_id: 5, data: &[1; 12] })
        );
        let p = client.reader.next(&mut input).unwrap().unwrap();
        assert_eq!(rpc::decode_from_middle(p), Ok(FromMiddle::Pong { ping_id: 99 }));
        assert_eq!(client.reader.next(&mut input), Ok(None));
    }

    #[test]
    fn round_trip_whole_and_one_byte_at_a_time() {
        for chunk in [usize::MAX, 1, 7, 16] {
            let (client, server) = run(endpoints(), NOW + 30, chunk, None);
            let (mut client, mut server) = (client.unwrap(), server.unwrap().unwrap());
            assert_eq!(client.writer.next_seq(), 0);
            assert_eq!(client.reader.next_seq(), 0);
            assert_eq!(server.reader.next_seq(), 0);
            exchange(&mut client, &mut server);
        }
    }

    #[test]
    fn the_nonce_frame() {
        let mut rng = StdRng::seed_from_u64(1);
        let (_, f) = MiddleHandshake::start(&secret(), NOW, endpoints(), &mut rng);
        assert_eq!(
            f[..20],
            [44, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xaa, 0x87, 0xcb, 0x7a, 0xc4, 0xf9, 0xfa, 0xca, 1, 0, 0, 0]
        );
        assert_eq!(f[20..24], (NOW as u32).to_le_bytes());
        let mut d = RpcDeframer::new(SEQ_NONCE);
        assert_eq!(d.next(&mut &f[..]).unwrap().map(<[u8]>::len), Some(32));
    }

    #[test]
    fn skew_over_30_s_fails_on_both_sides() {
        let (client, server) = run(endpoints(), NOW + 31, usize::MAX, None);
        assert!(matches!(client, Err(HandshakeError::ClockSkew { .. })), "{client:?}");
        assert!(server.is_err());
        // The client's own check, against a reply 31 s behind.
        let mut rng = StdRng::seed_from_u64(1);
        let (client, _) = MiddleHandshake::start(&secret(), NOW, endpoints(), &mut rng);
        let reply = nonce_frame(secret().key_select_bytes(), (NOW - 31) as u32, &[3; 16]);
        let e = client.feed(&mut &reply[..], &mut Vec::new()).unwrap_err();
        assert_eq!(e, HandshakeError::ClockSkew { ours: NOW as u32, theirs: (NOW - 31) as u32 });
        assert!(e.to_string().contains("by -31 s"), "{e}");
        let (client, _) = MiddleHandshake::start(&secret(), NOW, endpoints(), &mut rng);
        let reply = nonce_frame(secret().key_select_bytes(), (NOW - 30) as u32, &[3; 16]);
        let mut out = Vec::new();
        assert!(matches!(client.feed(&mut &reply[..], &mut out), Ok(ClientStep::NeedMore(_))));
        assert_eq!(out.len(), 48, "encrypted handshake: 44-byte frame and one padding word");
    }

    #[test]
    fn wrong_client_address_breaks_the_server_read() {
        let wrong =
            Endpoints::new("127.0.0.2:40001".parse().unwrap(), "127.0.0.1:8888".parse().unwrap()).unwrap();
        let (_, server) = run(wrong, NOW, usize::MAX, None);
        assert!(matches!(server, Err(HandshakeError::Frame(_))), "{server:?}");
    }

    #[test]
    fn handshake_error_is_typed() {
        let (client, server) = run(endpoints(), NOW, 3, Some(-6));
        assert_eq!(client.unwrap_err(), HandshakeError::Rejected { code: -6 });
        assert!(server.unwrap().is_none());
        assert_eq!(
            HandshakeError::Rejected { code: -8 }.to_string(),
            "middle proxy refused the handshake: error -8 (CRC32C requested but not enabled)"
        );
    }

    #[test]
    fn wrong_key_select() {
        let mut rng = StdRng::seed_from_u64(1);
        let (_, first) = MiddleHandshake::start(&secret(), NOW, endpoints(), &mut rng);
        let other = ProxySecret::new(&[1; 64]).unwrap();
        let server = MiddleServerHandshake::new(&other, NOW, endpoints(), &mut rng);
        let e = server.feed(&mut &first[..], &mut Vec::new()).unwrap_err();
        assert_eq!(e, HandshakeError::KeySelect { ours: 0x0101_0101, theirs: 0xcafa_f9c4 });
    }

    #[test]
    fn reply_checks() {
        assert!(matches!(parse_nonce(&[0; 31]), Err(HandshakeError::NonceLength(31))));
        let mut p = [0u8; 32];
        p[..4].copy_from_slice(&RPC_NONCE.to_le_bytes());
        p[8] = 2;
        assert!(matches!(parse_nonce(&p), Err(HandshakeError::NonceSchema(2))));
        let mut h = handshake_payload(&PID, &PID);
        assert!(parse_handshake(&h).is_ok());
        h[5] = 0x08;
        assert!(matches!(parse_handshake(&h), Err(HandshakeError::Crc32cRequested)));
        h[5] = 0;
        h[4] = 1;
        assert!(matches!(parse_handshake(&h), Err(HandshakeError::HandshakeFlags(1))));
        assert!(matches!(parse_handshake(&h[..28]), Err(HandshakeError::HandshakeLength(28))));
        h[0] = 0;
        assert!(matches!(parse_handshake(&h), Err(HandshakeError::HandshakeType(_))));
        assert!(check_skew(u32::MAX - 10, 10).is_ok(), "time wraps mod 2^32");
    }
}
