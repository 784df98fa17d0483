//! Just enough MTProto for a first exchange: padded-intermediate framing, unencrypted
//! messages, `req_pq_multi` and `resPQ` (valid TL). `doctor` probes DCs with it; the tests'
//! fake DC and client use it too. Parsers are total (any bytes give a value or an error).
//!
//! ```text
//! padded intermediate frame: len u32 LE (bit 31 = quick-ack) | payload | 0..3 random bytes
//! unencrypted message:       auth_key_id = 0 (8) | msg_id (8) | body len u32 (4) | body
//! req_pq_multi#be7e8ef1 nonce:int128 = ResPQ
//! resPQ#05162463 nonce:int128 server_nonce:int128 pq:bytes
//!               server_public_key_fingerprints:Vector<long> = ResPQ
//! ```

use core::fmt;
use core::ops::RangeInclusive;
use core::time::Duration;

use rand_core::RngCore;

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
/// Largest frame payload the parsers accept.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Payload sizes a DC's answer to a `req_pq_multi` probe may have (as mtg's doctor checks).
pub const PROBE_ANSWER_LEN: RangeInclusive<usize> = 40..=256;

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
    /// A probe answer whose payload size is outside [`PROBE_ANSWER_LEN`]; the value is it.
    AnswerSize(usize),
    /// A `resPQ` that does not echo the nonce sent.
    NonceMismatch,
}

impl fmt::Display for MtprotoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated MTProto data"),
            Self::FrameTooLong(n) => write!(f, "frame length {n} exceeds {MAX_FRAME_LEN}"),
            Self::Encrypted => f.write_str("message has a non-zero auth_key_id"),
            Self::Constructor(c) => write!(f, "unexpected constructor {c:#010x}"),
            Self::AnswerSize(n) => write!(
                f,
                "answer of {n} bytes, expected {}..={}",
                PROBE_ANSWER_LEN.start(),
                PROBE_ANSWER_LEN.end()
            ),
            Self::NonceMismatch => f.write_str("resPQ does not echo the nonce sent"),
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

/// A length as a little-endian u32.
///
/// # Panics
/// If `len` does not fit in 31 bits: encoders here only frame small messages.
fn length_word(len: usize) -> [u8; 4] {
    let len = u32::try_from(len).ok().filter(|l| l & QUICK_ACK == 0).expect("MTProto length fits 31 bits");
    len.to_le_bytes()
}

/// Wraps `payload` in a padded-intermediate frame with `padding` random bytes after it.
///
/// # Panics
/// If `payload.len() + padding` does not fit in 31 bits.
pub fn frame(payload: &[u8], padding: usize, rng: &mut (impl RngCore + ?Sized)) -> Vec<u8> {
    let len = payload.len() + padding;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&length_word(len));
    out.extend_from_slice(payload);
    let start = out.len();
    out.resize(start + padding, 0);
    rng.fill_bytes(&mut out[start..]);
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
    let Ok(word) = read_u32(buf, 0) else {
        return Ok(None);
    };
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
///
/// # Panics
/// If `body` is longer than 31 bits can say.
pub fn unencrypted(msg_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(UNENCRYPTED_HEADER_LEN + body.len());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&msg_id.to_le_bytes());
    out.extend_from_slice(&length_word(body.len()));
    out.extend_from_slice(body);
    out
}

/// Parses a frame payload as an unencrypted message.
pub fn parse_unencrypted(payload: &[u8]) -> Result<Unencrypted<'_>, MtprotoError> {
    if read_u64(payload, 0)? != 0 {
        return Err(MtprotoError::Encrypted);
    }
    let msg_id = read_u64(payload, 8)?;
    let len = read_u32(payload, 16)? as usize;
    let body = UNENCRYPTED_HEADER_LEN
        .checked_add(len)
        .and_then(|end| payload.get(UNENCRYPTED_HEADER_LEN..end))
        .ok_or(MtprotoError::Truncated)?;
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
    read_int128(body, 4)
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
    ///
    /// # Panics
    /// If `pq` or the fingerprint list is longer than TL can say (16 MiB, 2^31).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&RES_PQ.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.server_nonce);
        write_tl_bytes(&mut out, &self.pq);
        out.extend_from_slice(&VECTOR.to_le_bytes());
        out.extend_from_slice(&length_word(self.fingerprints.len()));
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
        let nonce = read_int128(body, 4)?;
        let server_nonce = read_int128(body, 20)?;
        let (pq, mut at) = read_tl_bytes(body, 36)?;
        let vector = read_u32(body, at)?;
        if vector != VECTOR {
            return Err(MtprotoError::Constructor(vector));
        }
        let count = read_u32(body, at + 4)? as usize;
        at += 8;
        // The count is checked against the bytes present before anything is allocated.
        let room = body.len().saturating_sub(at) / 8;
        if count > room {
            return Err(MtprotoError::Truncated);
        }
        let fingerprints = (0..count).map(|i| read_u64(body, at + 8 * i)).collect::<Result<_, _>>()?;
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

/// Reads a DC's answer to a `req_pq_multi` probe from the decrypted bytes received so far:
/// `Ok(None)` while the first frame is incomplete, else the `resPQ` if the frame's size is in
/// [`PROBE_ANSWER_LEN`], it parses and it echoes `nonce`.
pub fn read_probe_answer(buf: &[u8], nonce: &[u8; 16]) -> Result<Option<ResPq>, MtprotoError> {
    // The length word alone tells whether the size is acceptable: no waiting for a huge frame.
    if let Ok(word) = read_u32(buf, 0) {
        let len = (word & !QUICK_ACK) as usize;
        if !PROBE_ANSWER_LEN.contains(&len) {
            return Err(MtprotoError::AnswerSize(len));
        }
    }
    let Some(frame) = split_frame(buf)? else {
        return Ok(None);
    };
    let answer = parse_res_pq_payload(frame.payload)?;
    if &answer.nonce != nonce {
        return Err(MtprotoError::NonceMismatch);
    }
    Ok(Some(answer))
}

/// Appends TL `bytes` (short or long length form, padded to 4).
///
/// # Panics
/// If `data` is 16 MiB or longer (TL's limit).
pub fn write_tl_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    match u8::try_from(data.len()) {
        Ok(short) if short < 254 => out.push(short),
        _ => {
            assert!(data.len() < 1 << 24, "TL bytes longer than 16 MiB");
            out.push(254);
            out.extend_from_slice(&length_word(data.len())[..3]);
        }
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

fn read_array<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], MtprotoError> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or(MtprotoError::Truncated)
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, MtprotoError> {
    read_array(buf, at).map(u32::from_le_bytes)
}

fn read_u64(buf: &[u8], at: usize) -> Result<u64, MtprotoError> {
    read_array(buf, at).map(u64::from_le_bytes)
}

fn read_int128(buf: &[u8], at: usize) -> Result<[u8; 16], MtprotoError> {
    read_array(buf, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::SmallRng {
        rand::rngs::SmallRng::seed_from_u64(7)
    }

    const NOW: Duration = Duration::from_millis(1_700_000_000_250);

    #[test]
    fn msg_ids_follow_the_clock_and_parity_rules() {
        assert_eq!(client_msg_id(NOW), (1_700_000_000u64 << 32) | 0x4000_0000);
        assert_eq!(server_msg_id(NOW), (1_700_000_000u64 << 32) | 0x4000_0001);
    }

    #[test]
    fn req_pq_round_trip() {
        let nonce = [7u8; 16];
        let packet = req_pq_multi_packet(&nonce, client_msg_id(NOW), 3, &mut rng());
        assert_eq!(packet.len(), 4 + 20 + 20 + 3);
        assert_eq!(&packet[..4], &[43, 0, 0, 0]);
        let frame = split_frame(&packet).unwrap().unwrap();
        assert_eq!(frame.consumed, packet.len());
        let msg = parse_unencrypted(frame.payload).unwrap();
        assert_eq!(msg.msg_id, client_msg_id(NOW));
        assert_eq!(parse_req_pq_multi(msg.body).unwrap(), nonce);
        assert_eq!(&packet[24..28], &[0xf1, 0x8e, 0x7e, 0xbe]);
    }

    #[test]
    fn res_pq_round_trip() {
        let res = ResPq::answer([9; 16], &mut rng());
        let body = res.encode();
        assert_eq!(body.len(), 64);
        assert_eq!(&body[..4], &[0x63, 0x24, 0x16, 0x05]);
        let packet = res_pq_packet(&res, server_msg_id(NOW), 2, &mut rng());
        let frame = split_frame(&packet).unwrap().unwrap();
        assert_eq!(parse_res_pq_payload(frame.payload).unwrap(), res);
    }

    #[test]
    fn long_tl_bytes() {
        let data = vec![5u8; 300];
        let mut out = Vec::new();
        write_tl_bytes(&mut out, &data);
        assert_eq!(&out[..4], &[254, 0x2c, 0x01, 0]);
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
        assert_eq!(split_frame(&[0, 0, 0, 0x7f]), Err(MtprotoError::FrameTooLong(0x7f00_0000)));
    }

    #[test]
    fn a_huge_fingerprint_count_is_truncated_not_allocated() {
        let mut body = ResPq::answer([1; 16], &mut rng()).encode();
        let count_at = body.len() - 12;
        body[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ResPq::parse(&body), Err(MtprotoError::Truncated));
    }

    #[test]
    fn probe_answer_checks_size_nonce_and_completeness() {
        let nonce = [3u8; 16];
        let good = res_pq_packet(&ResPq::answer(nonce, &mut rng()), server_msg_id(NOW), 3, &mut rng());
        assert_eq!(read_probe_answer(&good, &nonce).unwrap().unwrap().nonce, nonce);
        assert_eq!(read_probe_answer(&good[..good.len() - 1], &nonce), Ok(None));
        assert_eq!(read_probe_answer(&good[..3], &nonce), Ok(None));
        assert_eq!(read_probe_answer(&good, &[4; 16]), Err(MtprotoError::NonceMismatch));
        assert_eq!(read_probe_answer(&[8, 0, 0, 0], &nonce), Err(MtprotoError::AnswerSize(8)));
        assert_eq!(read_probe_answer(&[1, 1, 0, 0], &nonce), Err(MtprotoError::AnswerSize(257)));
        assert_eq!(read_probe_answer(&[0, 1, 0, 0], &nonce), Ok(None));
        let other = frame(&unencrypted(1, &req_pq_multi_body(&nonce)), 4, &mut rng());
        assert_eq!(read_probe_answer(&other, &nonce), Err(MtprotoError::Constructor(REQ_PQ_MULTI)));
    }

    #[test]
    fn parsers_are_total_on_every_prefix() {
        let packet = res_pq_packet(&ResPq::answer([5; 16], &mut rng()), 1, 0, &mut rng());
        for end in 0..packet.len() {
            let _ = split_frame(&packet[..end]);
            let _ = parse_res_pq_payload(&packet[4..end.max(4)]);
            let _ = parse_req_pq_multi(&packet[..end]);
            let _ = read_tl_bytes(&packet[..end], 40);
        }
    }
}
