//! RPC messages inside the frames of an established middle-proxy connection.
//!
//! We send one `RPC_PROXY_REQ` per client transport packet, `RPC_CLOSE_CONN` when a client
//! goes, `RPC_PONG` for each `RPC_PING` (and our own pings); the middle proxy sends
//! `RPC_PROXY_ANS`, `RPC_SIMPLE_ACK`, `RPC_CLOSE_EXT` and pings. Encoders append a payload to
//! a caller's buffer (frame it with [`crate::middle::Batch`] or
//! [`crate::middle::frame::begin_frame`]); decoders borrow from the payload.
//! The middle proxy's side (decoding requests, encoding answers) is here too, for tests and
//! tools.

use core::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::middle::frame::EncodeError;
use crate::middle::transport::Transport;

/// `RPC_NONCE`.
pub const RPC_NONCE: u32 = 0x7acb_87aa;
/// `RPC_HANDSHAKE`.
pub const RPC_HANDSHAKE: u32 = 0x7682_eef5;
/// `RPC_HANDSHAKE_ERROR`.
pub const RPC_HANDSHAKE_ERROR: u32 = 0x6a27_beda;
/// `RPC_PROXY_REQ`: one client packet, us → middle proxy.
pub const RPC_PROXY_REQ: u32 = 0x36ce_f1ee;
/// `RPC_PROXY_ANS`: data for one client, middle proxy → us.
pub const RPC_PROXY_ANS: u32 = 0x4403_da0d;
/// `RPC_SIMPLE_ACK`: a quick ack for one client.
pub const RPC_SIMPLE_ACK: u32 = 0x3bac_409b;
/// `RPC_CLOSE_EXT`: the middle proxy closed a client.
pub const RPC_CLOSE_EXT: u32 = 0x5eb6_34a2;
/// `RPC_CLOSE_CONN`: we closed a client.
pub const RPC_CLOSE_CONN: u32 = 0x1fcf_425d;
/// `RPC_PING`.
pub const RPC_PING: u32 = 0x5730_a2df;
/// `RPC_PONG`.
pub const RPC_PONG: u32 = 0x8430_eaa7;
/// `TL_PROXY_TAG`: the constructor of the ad-tag block.
pub const TL_PROXY_TAG: u32 = 0xdb1e_26ae;

/// Request flag: the packet's auth_key_id is zero.
pub const FLAG_NOT_ENCRYPTED: u32 = 0x2;
/// Request flag: the extra block with the ad tag follows the addresses.
pub const FLAG_HAS_AD_TAG: u32 = 0x8;
/// Request flag: always set for TCP clients.
pub const FLAG_MAGIC: u32 = 0x1000;
/// Request flag: obfuscated2 / FakeTLS client.
pub const FLAG_EXTMODE2: u32 = 0x20000;
/// Request flag: padded intermediate client. Never sent (the official server drops it too).
pub const FLAG_PAD: u32 = 0x0800_0000;
/// Request flag: intermediate or padded-intermediate client.
pub const FLAG_INTERMEDIATE: u32 = 0x2000_0000;
/// Request flag: abridged client.
pub const FLAG_ABRIDGED: u32 = 0x4000_0000;
/// Request flag: the client asked for a quick ack of this packet.
pub const FLAG_QUICKACK: u32 = 0x8000_0000;

/// Largest client packet (C `MAX_POST_SIZE`); a bigger one closes the client.
pub const MAX_POST_SIZE: usize = 1_044_480;
/// Bytes of a request before the packet, without the ad-tag block.
pub const PROXY_REQ_HEADER_LEN: usize = 56;
/// Bytes of a request before the packet, with the ad-tag block.
pub const PROXY_REQ_TAGGED_HEADER_LEN: usize = 84;
/// Size of the ad-tag block that follows `extra_size`.
const EXTRA_SIZE: u32 = 24;

/// The unencrypted MTProto constructors the official server forwards.
const UNENCRYPTED_WHITELIST: [u32; 4] = [
    0x6046_9778, // req_pq
    0xbe7e_8ef1, // req_pq_multi
    0xd712_e4be, // req_DH_params
    0xf504_5f1f, // set_client_DH_params
];

/// One client packet's request, minus the packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyReq {
    /// The client's id on this middle-proxy connection.
    pub conn_id: u64,
    /// The client's transport.
    pub transport: Transport,
    /// Whether the client asked for a quick ack of this packet.
    pub quick_ack: bool,
    /// The client's address.
    pub client: SocketAddr,
    /// Our client-facing address (public IP, the port clients connect to).
    pub ours: SocketAddr,
    /// The ad tag, if this client has one.
    pub ad_tag: Option<[u8; 16]>,
}

impl ProxyReq {
    /// The flags word for `packet`: MAGIC and EXTMODE2 always, the transport bit, QUICKACK
    /// as asked, NOT_ENCRYPTED when the first 8 bytes are zero, HAS_AD_TAG with a tag; never PAD.
    pub fn flags(&self, packet: &[u8]) -> u32 {
        let mut flags = FLAG_MAGIC | FLAG_EXTMODE2;
        flags |= match self.transport {
            Transport::Abridged => FLAG_ABRIDGED,
            Transport::Intermediate | Transport::PaddedIntermediate => FLAG_INTERMEDIATE,
        };
        if self.quick_ack {
            flags |= FLAG_QUICKACK;
        }
        if packet.get(..8).is_some_and(|id| id == [0; 8]) {
            flags |= FLAG_NOT_ENCRYPTED;
        }
        if self.ad_tag.is_some() {
            flags |= FLAG_HAS_AD_TAG;
        }
        flags
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let v6 = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&v6.octets());
    put_u32(out, u32::from(addr.port()));
}

/// Appends an `RPC_PROXY_REQ` payload for `packet` (which must be whole words and at most
/// [`MAX_POST_SIZE`] bytes; otherwise nothing is written).
pub fn encode_proxy_req(req: &ProxyReq, packet: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if !packet.len().is_multiple_of(4) {
        return Err(EncodeError::NotWords { len: packet.len() });
    }
    if packet.len() > MAX_POST_SIZE {
        return Err(EncodeError::TooLong { len: packet.len(), max: MAX_POST_SIZE });
    }
    put_u32(out, RPC_PROXY_REQ);
    put_u32(out, req.flags(packet));
    out.extend_from_slice(&req.conn_id.to_le_bytes());
    put_addr(out, req.client);
    put_addr(out, req.ours);
    if let Some(tag) = &req.ad_tag {
        put_u32(out, EXTRA_SIZE);
        put_u32(out, TL_PROXY_TAG);
        out.push(16);
        out.extend_from_slice(tag);
        out.extend_from_slice(&[0; 3]);
    }
    out.extend_from_slice(packet);
    Ok(())
}

/// Appends an `RPC_CLOSE_CONN` payload (we closed this client).
pub fn encode_close_conn(conn_id: u64, out: &mut Vec<u8>) {
    put_u32(out, RPC_CLOSE_CONN);
    out.extend_from_slice(&conn_id.to_le_bytes());
}

/// Appends an `RPC_PING` payload.
pub fn encode_ping(ping_id: i64, out: &mut Vec<u8>) {
    put_u32(out, RPC_PING);
    out.extend_from_slice(&ping_id.to_le_bytes());
}

/// Appends an `RPC_PONG` payload (the answer to a ping with the same id).
pub fn encode_pong(ping_id: i64, out: &mut Vec<u8>) {
    put_u32(out, RPC_PONG);
    out.extend_from_slice(&ping_id.to_le_bytes());
}

/// The middle proxy's side: appends an `RPC_PROXY_ANS` payload (`data` must be whole words).
pub fn encode_proxy_ans(flags: u32, conn_id: u64, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if !data.len().is_multiple_of(4) {
        return Err(EncodeError::NotWords { len: data.len() });
    }
    put_u32(out, RPC_PROXY_ANS);
    put_u32(out, flags);
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// The middle proxy's side: appends an `RPC_SIMPLE_ACK` payload.
pub fn encode_simple_ack(conn_id: u64, confirm: [u8; 4], out: &mut Vec<u8>) {
    put_u32(out, RPC_SIMPLE_ACK);
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&confirm);
}

/// The middle proxy's side: appends an `RPC_CLOSE_EXT` payload (the middle proxy closed a client).
pub fn encode_close_ext(conn_id: u64, out: &mut Vec<u8>) {
    put_u32(out, RPC_CLOSE_EXT);
    out.extend_from_slice(&conn_id.to_le_bytes());
}

/// A message payload of the wrong size for its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than 4 bytes: no type.
    NoType {
        /// The payload length.
        len: usize,
    },
    /// The payload length does not fit the message type.
    BadLength {
        /// The message type.
        kind: u32,
        /// The payload length.
        len: usize,
    },
    /// A request's extra block is malformed.
    BadExtra {
        /// The `extra_size` field.
        extra_size: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoType { len } => write!(f, "RPC payload of {len} bytes has no type"),
            Self::BadLength { kind, len } => {
                write!(f, "RPC message {} ({kind:08x}) with a payload of {len} bytes", type_name(*kind))
            }
            Self::BadExtra { extra_size } => {
                write!(f, "RPC_PROXY_REQ extra block of {extra_size} bytes is malformed")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A readable name for an RPC type (for logs).
pub fn type_name(kind: u32) -> &'static str {
    match kind {
        RPC_NONCE => "RPC_NONCE",
        RPC_HANDSHAKE => "RPC_HANDSHAKE",
        RPC_HANDSHAKE_ERROR => "RPC_HANDSHAKE_ERROR",
        RPC_PROXY_REQ => "RPC_PROXY_REQ",
        RPC_PROXY_ANS => "RPC_PROXY_ANS",
        RPC_SIMPLE_ACK => "RPC_SIMPLE_ACK",
        RPC_CLOSE_EXT => "RPC_CLOSE_EXT",
        RPC_CLOSE_CONN => "RPC_CLOSE_CONN",
        RPC_PING => "RPC_PING",
        RPC_PONG => "RPC_PONG",
        _ => "unknown",
    }
}

/// A message from the middle proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromMiddle<'a> {
    /// Data for a client: frame `data` for it (flags are informational).
    ProxyAns {
        /// The answer's flags (unused for TCP clients).
        flags: u32,
        /// The client's id.
        conn_id: u64,
        /// The MTProto packet for the client.
        data: &'a [u8],
    },
    /// A quick ack for a client: write `confirm` in the client's transport's ack form.
    SimpleAck {
        /// The client's id.
        conn_id: u64,
        /// The 4 confirm bytes as received.
        confirm: [u8; 4],
    },
    /// The middle proxy closed this client: close it, send nothing back.
    CloseExt {
        /// The client's id.
        conn_id: u64,
    },
    /// `RPC_CLOSE_CONN` from the middle proxy (not sent by the official server); treat as CloseExt.
    CloseConn {
        /// The client's id.
        conn_id: u64,
    },
    /// Answer with a pong carrying the same id.
    Ping {
        /// The ping's id.
        ping_id: i64,
    },
    /// The answer to one of our pings.
    Pong {
        /// The ping's id.
        ping_id: i64,
    },
    /// Any other type: ignore it.
    Unknown {
        /// The message type.
        kind: u32,
    },
}

/// What the middle proxy receives from us (the middle proxy's side, for tests and tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToMiddle<'a> {
    /// One client packet.
    ProxyReq(ProxyReqView<'a>),
    /// The client was closed.
    CloseConn {
        /// The client's id.
        conn_id: u64,
    },
    /// A ping.
    Ping {
        /// The ping's id.
        ping_id: i64,
    },
    /// A pong.
    Pong {
        /// The ping's id.
        ping_id: i64,
    },
    /// Any other type.
    Unknown {
        /// The message type.
        kind: u32,
    },
}

/// A decoded `RPC_PROXY_REQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyReqView<'a> {
    /// The flags word.
    pub flags: u32,
    /// The client's id.
    pub conn_id: u64,
    /// The client's address (IPv4-mapped addresses as IPv4).
    pub client: SocketAddr,
    /// The proxy's client-facing address (IPv4-mapped addresses as IPv4).
    pub ours: SocketAddr,
    /// `extra_size` when the extra block is present.
    pub extra_size: Option<u32>,
    /// The ad tag, when the extra block holds a `TL_PROXY_TAG` with a 16-byte string.
    pub ad_tag: Option<[u8; 16]>,
    /// The client's packet.
    pub packet: &'a [u8],
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    p.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

fn u64_at(p: &[u8], at: usize) -> Option<u64> {
    p.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

fn addr_at(p: &[u8], at: usize) -> Option<SocketAddr> {
    let ip: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
    let ip = Ipv6Addr::from(ip);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    // The port is a u32 field; keep its low 16 bits as the official server does.
    Some(SocketAddr::new(ip, u32_at(p, at + 16)? as u16))
}

/// A message whose payload must be exactly `want` bytes: the u64 at offset 4.
fn id_exact(payload: &[u8], kind: u32, want: usize) -> Result<u64, DecodeError> {
    match u64_at(payload, 4) {
        Some(v) if payload.len() == want => Ok(v),
        _ => Err(DecodeError::BadLength { kind, len: payload.len() }),
    }
}

/// Decodes a message from the middle proxy (length checks per type; unknown types are not an
/// error).
pub fn decode_from_middle(payload: &[u8]) -> Result<FromMiddle<'_>, DecodeError> {
    let kind = u32_at(payload, 0).ok_or(DecodeError::NoType { len: payload.len() })?;
    let bad = DecodeError::BadLength { kind, len: payload.len() };
    Ok(match kind {
        RPC_PROXY_ANS => match (u32_at(payload, 4), u64_at(payload, 8), payload.get(16..)) {
            (Some(flags), Some(conn_id), Some(data)) => FromMiddle::ProxyAns { flags, conn_id, data },
            _ => return Err(bad),
        },
        RPC_SIMPLE_ACK => {
            let conn_id = id_exact(payload, kind, 16)?;
            let confirm = payload.get(12..16).and_then(|c| c.try_into().ok()).ok_or(bad)?;
            FromMiddle::SimpleAck { conn_id, confirm }
        }
        RPC_CLOSE_EXT => FromMiddle::CloseExt { conn_id: id_exact(payload, kind, 12)? },
        RPC_CLOSE_CONN => FromMiddle::CloseConn { conn_id: id_exact(payload, kind, 12)? },
        RPC_PING => FromMiddle::Ping { ping_id: id_exact(payload, kind, 12)? as i64 },
        RPC_PONG => FromMiddle::Pong { ping_id: id_exact(payload, kind, 12)? as i64 },
        _ => FromMiddle::Unknown { kind },
    })
}

/// The middle proxy's side: decodes a message we send.
pub fn decode_to_middle(payload: &[u8]) -> Result<ToMiddle<'_>, DecodeError> {
    let kind = u32_at(payload, 0).ok_or(DecodeError::NoType { len: payload.len() })?;
    Ok(match kind {
        RPC_PROXY_REQ => ToMiddle::ProxyReq(decode_proxy_req(payload)?),
        RPC_CLOSE_CONN => ToMiddle::CloseConn { conn_id: id_exact(payload, kind, 12)? },
        RPC_PING => ToMiddle::Ping { ping_id: id_exact(payload, kind, 12)? as i64 },
        RPC_PONG => ToMiddle::Pong { ping_id: id_exact(payload, kind, 12)? as i64 },
        _ => ToMiddle::Unknown { kind },
    })
}

/// The middle proxy's side: decodes an `RPC_PROXY_REQ` payload (type included).
///
/// The extra block is present when flags has `0x8` or `0x4` (as C); its `extra_size` must be
/// whole words inside the payload. The ad tag is read when the block starts with
/// `TL_PROXY_TAG` and a 16-byte TL string.
pub fn decode_proxy_req(payload: &[u8]) -> Result<ProxyReqView<'_>, DecodeError> {
    let bad = DecodeError::BadLength { kind: RPC_PROXY_REQ, len: payload.len() };
    if u32_at(payload, 0) != Some(RPC_PROXY_REQ) {
        return Err(bad);
    }
    let (Some(flags), Some(conn_id), Some(client), Some(ours)) =
        (u32_at(payload, 4), u64_at(payload, 8), addr_at(payload, 16), addr_at(payload, 36))
    else {
        return Err(bad);
    };
    let mut at = PROXY_REQ_HEADER_LEN;
    let (mut extra_size, mut ad_tag) = (None, None);
    if flags & 0xc != 0 {
        let size = u32_at(payload, at).ok_or(bad)?;
        let extra = usize::try_from(size)
            .ok()
            .filter(|n| n % 4 == 0)
            .and_then(|n| payload.get(at + 4..(at + 4).checked_add(n)?))
            .ok_or(DecodeError::BadExtra { extra_size: size })?;
        if u32_at(extra, 0) == Some(TL_PROXY_TAG) && extra.get(4) == Some(&16) {
            ad_tag = extra.get(5..21).and_then(|t| t.try_into().ok());
        }
        extra_size = Some(size);
        at += 4 + extra.len();
    }
    let packet = payload.get(at..).ok_or(bad)?;
    Ok(ProxyReqView { flags, conn_id, client, ours, extra_size, ad_tag, packet })
}

/// Why a client packet is not forwarded (the client stays connected; C drops it silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than 28 bytes.
    TooShort(usize),
    /// Not a multiple of 4 bytes.
    NotWords(usize),
    /// An encrypted packet (auth_key_id != 0) shorter than 56 bytes.
    EncryptedTooShort(usize),
    /// An unencrypted packet whose message length field is out of range.
    BadMessageLength(u32),
    /// An unencrypted packet whose constructor is not one of the four handshake requests.
    Constructor(u32),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(len) => write!(f, "client packet of {len} bytes is under 28"),
            Self::NotWords(len) => write!(f, "client packet of {len} bytes is not whole words"),
            Self::EncryptedTooShort(len) => write!(f, "encrypted client packet of {len} bytes is under 56"),
            Self::BadMessageLength(m) => write!(f, "unencrypted client packet with message length {m}"),
            Self::Constructor(c) => write!(f, "unencrypted client packet with constructor {c:08x}"),
        }
    }
}

impl std::error::Error for DropReason {}

/// The official server's filters before forwarding a client packet (C
/// `forward_mtproto_packet`). Packets over [`MAX_POST_SIZE`] are the transport deframer's
/// business (they close the client).
pub fn forwardable(packet: &[u8]) -> Result<(), DropReason> {
    let len = packet.len();
    if len < 28 {
        return Err(DropReason::TooShort(len));
    }
    if !len.is_multiple_of(4) {
        return Err(DropReason::NotWords(len));
    }
    if packet.get(..8).is_some_and(|id| id != [0; 8]) {
        return if len < 56 { Err(DropReason::EncryptedTooShort(len)) } else { Ok(()) };
    }
    let m = u32_at(packet, 16).unwrap_or(0);
    if m < 20 || (m as usize).saturating_add(20) > len {
        return Err(DropReason::BadMessageLength(m));
    }
    let constructor = u32_at(packet, 20).unwrap_or(0);
    if !UNENCRYPTED_WHITELIST.contains(&constructor) {
        return Err(DropReason::Constructor(constructor));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn spec_req() -> ProxyReq {
        ProxyReq {
            conn_id: 0x0102_0304_0506_0708,
            transport: Transport::Intermediate,
            quick_ack: false,
            client: "198.51.100.7:40000".parse().unwrap(),
            ours: "203.0.113.5:443".parse().unwrap(),
            ad_tag: Some(hex("00112233445566778899aabbccddeeff").try_into().unwrap()),
        }
    }

    #[test]
    fn spec_example_bytes() {
        let packet = [0xabu8; 56];
        let mut out = vec![0xee];
        encode_proxy_req(&spec_req(), &packet, &mut out).unwrap();
        let want = hex(
            "ee f1 ce 36 08 10 02 20 08 07 06 05 04 03 02 01   00 00 00 00 00 00 00 00 00 00 ff ff c6 33 64 07
             40 9c 00 00 00 00 00 00 00 00 00 00 00 00 ff ff   cb 00 71 05 bb 01 00 00 18 00 00 00 ae 26 1e db
             10 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee   ff 00 00 00",
        );
        assert_eq!(out[1..85], want[..]);
        assert_eq!(out[85..], packet[..]);
        let view = decode_proxy_req(&out[1..]).unwrap();
        assert_eq!(view.flags, 0x2002_1008);
        assert_eq!(view.conn_id, 0x0102_0304_0506_0708);
        assert_eq!(view.client, spec_req().client);
        assert_eq!(view.ours, spec_req().ours);
        assert_eq!(view.extra_size, Some(24));
        assert_eq!(view.ad_tag, spec_req().ad_tag);
        assert_eq!(view.packet, &packet[..]);
    }

    #[test]
    fn typical_flags() {
        let mut req = spec_req();
        let unencrypted = [0u8; 40];
        assert_eq!(req.flags(&[1; 40]), 0x2002_1008);
        req.transport = Transport::PaddedIntermediate;
        assert_eq!(req.flags(&[1; 40]), 0x2002_1008, "no PAD for dd");
        req.transport = Transport::Abridged;
        assert_eq!(req.flags(&unencrypted), 0x4002_100a);
        req.quick_ack = true;
        req.ad_tag = None;
        assert_eq!(req.flags(&[1; 40]), 0xc002_1000);
        let mut out = Vec::new();
        encode_proxy_req(&req, &[1; 40], &mut out).unwrap();
        assert_eq!(out.len(), PROXY_REQ_HEADER_LEN + 40);
        let view = decode_proxy_req(&out).unwrap();
        assert_eq!((view.extra_size, view.ad_tag, view.packet), (None, None, &[1; 40][..]));
        assert_eq!(encode_proxy_req(&req, &[1; 6], &mut out), Err(EncodeError::NotWords { len: 6 }));
    }

    #[test]
    fn decodes_middle_messages() {
        let mut p = Vec::new();
        encode_proxy_ans(0x8, 42, &[5; 8], &mut p).unwrap();
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::ProxyAns { flags: 8, conn_id: 42, data: &[5; 8] }));
        p.clear();
        encode_simple_ack(7, [1, 2, 3, 4], &mut p);
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::SimpleAck { conn_id: 7, confirm: [1, 2, 3, 4] }));
        p.push(0);
        assert_eq!(decode_from_middle(&p), Err(DecodeError::BadLength { kind: RPC_SIMPLE_ACK, len: 17 }));
        p.clear();
        encode_close_ext(9, &mut p);
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::CloseExt { conn_id: 9 }));
        p.clear();
        encode_close_conn(9, &mut p);
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::CloseConn { conn_id: 9 }));
        assert_eq!(decode_to_middle(&p), Ok(ToMiddle::CloseConn { conn_id: 9 }));
        p.clear();
        encode_ping(-5, &mut p);
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::Ping { ping_id: -5 }));
        assert_eq!(decode_to_middle(&p), Ok(ToMiddle::Ping { ping_id: -5 }));
        p.clear();
        encode_pong(-5, &mut p);
        assert_eq!(decode_from_middle(&p), Ok(FromMiddle::Pong { ping_id: -5 }));
        assert_eq!(decode_from_middle(&[1, 2, 3, 4, 5]), Ok(FromMiddle::Unknown { kind: 0x0403_0201 }));
        assert_eq!(decode_from_middle(&[1, 2]), Err(DecodeError::NoType { len: 2 }));
        assert_eq!(
            decode_from_middle(&RPC_PROXY_ANS.to_le_bytes()),
            Err(DecodeError::BadLength { kind: RPC_PROXY_ANS, len: 4 })
        );
    }

    #[test]
    fn bad_extra_block() {
        let mut out = Vec::new();
        encode_proxy_req(&spec_req(), &[1; 28], &mut out).unwrap();
        out[56..60].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode_proxy_req(&out), Err(DecodeError::BadExtra { extra_size: 1000 }));
        out[56..60].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(decode_proxy_req(&out), Err(DecodeError::BadExtra { extra_size: 5 }));
    }

    #[test]
    fn forwarding_filters() {
        assert_eq!(forwardable(&[1; 24]), Err(DropReason::TooShort(24)));
        assert_eq!(forwardable(&[1; 30]), Err(DropReason::NotWords(30)));
        assert_eq!(forwardable(&[1; 52]), Err(DropReason::EncryptedTooShort(52)));
        assert_eq!(forwardable(&[1; 56]), Ok(()));
        let mut p = vec![0u8; 40];
        p[16..20].copy_from_slice(&20u32.to_le_bytes());
        p[20..24].copy_from_slice(&0xbe7e_8ef1u32.to_le_bytes());
        assert_eq!(forwardable(&p), Ok(()));
        p[20..24].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(forwardable(&p), Err(DropReason::Constructor(0x1234_5678)));
        p[16..20].copy_from_slice(&21u32.to_le_bytes());
        assert_eq!(forwardable(&p), Err(DropReason::BadMessageLength(21)));
        p[16..20].copy_from_slice(&19u32.to_le_bytes());
        assert_eq!(forwardable(&p), Err(DropReason::BadMessageLength(19)));
        p[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(forwardable(&p), Err(DropReason::BadMessageLength(u32::MAX)));
    }
}
