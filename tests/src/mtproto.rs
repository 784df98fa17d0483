//! Just enough MTProto for a first exchange: padded-intermediate framing, unencrypted
//! messages, `req_pq_multi` and `resPQ` (valid TL). Shared by the fake DC, the tests and later
//! `doctor`.
//!
//! ```text
//! padded intermediate frame: len u32 LE (bit 31 = quick-ack) | payload | 0..3 random bytes
//! unencrypted message:       auth_key_id = 0 (8) | msg_id (8) | body len u32 (4) | body
//! req_pq_multi#be7e8ef1 nonce:int128 = ResPQ
//! resPQ#05162463 nonce:int128 server_nonce:int128 pq:bytes
//!               server_public_key_fingerprints:Vector<long> = ResPQ
//! ```

use core::fmt;
use core::time::Duration;

use rand::RngCore;

/// Constructor of `req_pq_multi`.
pub const REQ_PQ_MULTI: u32 = 0xbe7e_8ef1;
/// Constructor of `resPQ`.
pub const RES_PQ: u32 = 0x0516_2463;
/// Constructor of the boxed `Vector`.
pub const VECTOR: u32 = 0x1cb5_c415;
/// The quick-ack flag in a frame's length word.
pub const QUICK_ACK: u32 = 0x8000_0000;
/// A `pq` like Telegram's (the product of two primes, as 8 big-endian bytes).
pub const DEFAULT_PQ: u64 = 0x17ED_4894_1A08_F981;
/// A server key fingerprint Telegram announces.
pub const DEFAULT_FINGERPRINT: u64 = 0xd09d_1d85_de64_fd85;
/// Size of the unencrypted message header (auth_key_id, msg_id, length).
pub const UNENCRYPTED_HEADER_LEN: usize = 20;
/// Largest frame payload the parsers accept (a sanity bound for test traffic).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why bytes are not the MTProto expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MtprotoError {
    /// The bytes end before the structure does.
    Truncated,
    /// A frame length above [`MAX_FRAME_LEN`]; the value is the length.
    FrameTooLong(usize),
    /// The message is not unencrypted (auth_key_id is not zero).
    Encrypted,
    /// The body starts with another constructor; the value is that constructor.
    Constructor(u32),
}

impl fmt::Display for MtprotoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated MTProto data"),
            Self::FrameTooLong(n) => write!(f, "frame length {n} exceeds {MAX_FRAME_LEN}"),
            Self::Encrypted => f.write_str("message has a non-zero auth_key_id"),
            Self::Constructor(c) => write!(f, "unexpected constructor {c:#010x}"),
        }
    }
}

impl std::error::Error for MtprotoError {}

/// A client message id for `now` (Unix time): seconds in the high half, a fraction below, the
/// two low bits cleared as clients must.
pub fn client_msg_id(now: Duration) -> u64 {
    msg_id(now) & !3
}

/// A server response message id for `now`: like [`client_msg_id`] but `≡ 1 (mod 4)`.
pub fn server_msg_id(now: Duration) -> u64 {
    (msg_id(now) & !3) | 1
}

fn msg_id(now: Duration) -> u64 {
    let fraction = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
    (now.as_secs() << 32) | fraction
}

/// The current wall-clock time since the Unix epoch.
pub fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// Wraps `payload` in a padded-intermediate frame with `padding` random bytes after it.
pub fn frame(payload: &[u8], padding: usize, rng: &mut (impl RngCore + ?Sized)) -> Vec<u8> {
    let len = payload.len() + padding;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).expect("frame fits u32").to_le_bytes());
    out.extend_from_slice(payload);
    let mut pad = vec![0u8; padding];
    rng.fill_bytes(&mut pad);
    out.extend_from_slice(&pad);
    out
}

/// One padded-intermediate frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The payload with any padding (the length word's bytes).
    pub payload: &'a [u8],
    /// Whether the length word had the quick-ack bit.
    pub quick_ack: bool,
    /// Bytes of the buffer the frame took (4 + payload).
    pub consumed: usize,
}

/// Splits the first padded-intermediate frame off `buf`: `Ok(None)` if more bytes are needed.
pub fn split_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, MtprotoError> {
    let Some(word) = buf.get(..4) else {
        return Ok(None);
    };
    let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    let len = (word & !QUICK_ACK) as usize;
    if len > MAX_FRAME_LEN {
        return Err(MtprotoError::FrameTooLong(len));
    }
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some(Frame { payload, quick_ack: word & QUICK_ACK != 0, consumed: 4 + len }))
}

/// An unencrypted MTProto message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unencrypted<'a> {
    /// The message id.
    pub msg_id: u64,
    /// The TL body (exactly the announced length; padding after it is ignored).
    pub body: &'a [u8],
}

/// Encodes an unencrypted message.
pub fn unencrypted(msg_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(UNENCRYPTED_HEADER_LEN + body.len());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&msg_id.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).expect("body fits u32").to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Parses a frame payload as an unencrypted message.
pub fn parse_unencrypted(payload: &[u8]) -> Result<Unencrypted<'_>, MtprotoError> {
    let header = payload.get(..UNENCRYPTED_HEADER_LEN).ok_or(MtprotoError::Truncated)?;
    if header[..8] != [0; 8] {
        return Err(MtprotoError::Encrypted);
    }
    let msg_id = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    let body =
        payload.get(UNENCRYPTED_HEADER_LEN..UNENCRYPTED_HEADER_LEN + len).ok_or(MtprotoError::Truncated)?;
    Ok(Unencrypted { msg_id, body })
}

/// The TL body of `req_pq_multi nonce`.
pub fn req_pq_multi_body(nonce: &[u8; 16]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&REQ_PQ_MULTI.to_le_bytes());
    out[4..].copy_from_slice(nonce);
    out
}

/// A complete padded-intermediate packet carrying an unencrypted `req_pq_multi` (what a client
/// or `doctor` sends first), with `padding` (0..=15) random bytes.
pub fn req_pq_multi_packet(
    nonce: &[u8; 16],
    msg_id: u64,
    padding: usize,
    rng: &mut (impl RngCore + ?Sized),
) -> Vec<u8> {
    frame(&unencrypted(msg_id, &req_pq_multi_body(nonce)), padding, rng)
}

/// The nonce of a `req_pq_multi` body.
pub fn parse_req_pq_multi(body: &[u8]) -> Result<[u8; 16], MtprotoError> {
    let ctor = read_u32(body, 0)?;
    if ctor != REQ_PQ_MULTI {
        return Err(MtprotoError::Constructor(ctor));
    }
    body.get(4..20).map(|n| n.try_into().expect("16 bytes")).ok_or(MtprotoError::Truncated)
}

/// A `resPQ` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResPq {
    /// The client's nonce, echoed.
    pub nonce: [u8; 16],
    /// The server's nonce.
    pub server_nonce: [u8; 16],
    /// `pq` as big-endian bytes.
    pub pq: Vec<u8>,
    /// The server public key fingerprints.
    pub fingerprints: Vec<u64>,
}

impl ResPq {
    /// A Telegram-like answer to `nonce` with a random server nonce, [`DEFAULT_PQ`] and
    /// [`DEFAULT_FINGERPRINT`].
    pub fn answer(nonce: [u8; 16], rng: &mut (impl RngCore + ?Sized)) -> Self {
        let mut server_nonce = [0u8; 16];
        rng.fill_bytes(&mut server_nonce);
        Self {
            nonce,
            server_nonce,
            pq: DEFAULT_PQ.to_be_bytes().to_vec(),
            fingerprints: vec![DEFAULT_FINGERPRINT],
        }
    }

    /// The TL body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&RES_PQ.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.server_nonce);
        write_tl_bytes(&mut out, &self.pq);
        out.extend_from_slice(&VECTOR.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.fingerprints.len()).expect("count fits").to_le_bytes());
        for f in &self.fingerprints {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out
    }

    /// Parses a TL body.
    pub fn parse(body: &[u8]) -> Result<Self, MtprotoError> {
        let ctor = read_u32(body, 0)?;
        if ctor != RES_PQ {
            return Err(MtprotoError::Constructor(ctor));
        }
        let nonce = body.get(4..20).ok_or(MtprotoError::Truncated)?.try_into().expect("16 bytes");
        let server_nonce = body.get(20..36).ok_or(MtprotoError::Truncated)?.try_into().expect("16 bytes");
        let (pq, mut at) = read_tl_bytes(body, 36)?;
        let vector = read_u32(body, at)?;
        if vector != VECTOR {
            return Err(MtprotoError::Constructor(vector));
        }
        let count = read_u32(body, at + 4)? as usize;
        at += 8;
        let mut fingerprints = Vec::with_capacity(count.min(16));
        for _ in 0..count {
            let f = body.get(at..at + 8).ok_or(MtprotoError::Truncated)?;
            fingerprints.push(u64::from_le_bytes(f.try_into().expect("8 bytes")));
            at += 8;
        }
        Ok(Self { nonce, server_nonce, pq: pq.to_vec(), fingerprints })
    }
}

/// A complete padded-intermediate packet carrying an unencrypted `resPQ`.
pub fn res_pq_packet(res: &ResPq, msg_id: u64, padding: usize, rng: &mut (impl RngCore + ?Sized)) -> Vec<u8> {
    frame(&unencrypted(msg_id, &res.encode()), padding, rng)
}

/// Parses a frame payload holding an unencrypted `resPQ`.
pub fn parse_res_pq_payload(payload: &[u8]) -> Result<ResPq, MtprotoError> {
    ResPq::parse(parse_unencrypted(payload)?.body)
}

/// Appends TL `bytes` (short or long length form, padded to 4).
pub fn write_tl_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    if data.len() < 254 {
        out.push(data.len() as u8);
    } else {
        out.push(254);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
    }
    out.extend_from_slice(data);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

/// Reads TL `bytes` at `at`; returns them and the offset after the padding.
pub fn read_tl_bytes(buf: &[u8], at: usize) -> Result<(&[u8], usize), MtprotoError> {
    let first = *buf.get(at).ok_or(MtprotoError::Truncated)?;
    let (len, head) = if first < 254 {
        (usize::from(first), 1)
    } else {
        let l = buf.get(at + 1..at + 4).ok_or(MtprotoError::Truncated)?;
        (usize::from(l[0]) | usize::from(l[1]) << 8 | usize::from(l[2]) << 16, 4)
    };
    let data = buf.get(at + head..at + head + len).ok_or(MtprotoError::Truncated)?;
    Ok((data, at + (head + len).next_multiple_of(4)))
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, MtprotoError> {
    let b = buf.get(at..at + 4).ok_or(MtprotoError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_pq_round_trip() {
        let mut rng = rand::rng();
        let nonce = [7u8; 16];
        let packet = req_pq_multi_packet(&nonce, client_msg_id(unix_now()), 3, &mut rng);
        let frame = split_frame(&packet).unwrap().unwrap();
        assert_eq!(frame.consumed, packet.len());
        let msg = parse_unencrypted(frame.payload).unwrap();
        assert_eq!(msg.msg_id % 4, 0);
        assert_eq!(parse_req_pq_multi(msg.body).unwrap(), nonce);
        assert_eq!(&packet[24..28], &[0xf1, 0x8e, 0x7e, 0xbe]);
    }

    #[test]
    fn res_pq_round_trip() {
        let mut rng = rand::rng();
        let res = ResPq::answer([9; 16], &mut rng);
        let body = res.encode();
        assert_eq!(body.len(), 64);
        assert_eq!(&body[..4], &[0x63, 0x24, 0x16, 0x05]);
        let packet = res_pq_packet(&res, server_msg_id(unix_now()), 2, &mut rng);
        let frame = split_frame(&packet).unwrap().unwrap();
        assert_eq!(parse_res_pq_payload(frame.payload).unwrap(), res);
    }

    #[test]
    fn long_tl_bytes() {
        let data = vec![5u8; 300];
        let mut out = Vec::new();
        write_tl_bytes(&mut out, &data);
        assert_eq!(out.len() % 4, 0);
        let (back, end) = read_tl_bytes(&out, 0).unwrap();
        assert_eq!(back, &data[..]);
        assert_eq!(end, out.len());
    }

    #[test]
    fn incomplete_frames_need_more() {
        assert_eq!(split_frame(&[1, 0]).unwrap(), None);
        assert_eq!(split_frame(&[4, 0, 0, 0x80, 1, 2]).unwrap(), None);
        let f = split_frame(&[2, 0, 0, 0x80, 1, 2, 9]).unwrap().unwrap();
        assert!(f.quick_ack);
        assert_eq!(f.payload, &[1, 2]);
    }
}
