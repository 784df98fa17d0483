//! RPC framing of a middle-proxy connection: `len | seq | payload | crc32`, all little-endian.
//!
//! `len` counts the whole frame (12 bytes of overhead plus the payload, which is whole 4-byte
//! words); `crc` is CRC-32/IEEE over `len | seq | payload`. A `len` of 4 is a padding word
//! (`04 00 00 00`), sent only to reach a 16-byte boundary before CBC encryption; receivers skip
//! any number of them between frames. `seq` counts frames per direction: -2 for the nonce,
//! -1 for the handshake, then 0, 1, 2, …; padding words do not count.

use core::fmt;

/// Bytes of a frame that are not payload: `len`, `seq` and `crc`.
pub const OVERHEAD: usize = 12;
/// Smallest frame length a receiver accepts (one payload word).
pub const MIN_FRAME_LEN: usize = 16;
/// Largest frame length a receiver accepts by default (2^24, as seriyps' middle proxy client).
pub const MAX_FRAME_LEN: usize = 1 << 24;
/// One padding word, as it appears on the wire.
pub const PADDING_WORD: [u8; 4] = [4, 0, 0, 0];
/// The CBC block size the padding aligns to.
pub const BLOCK: usize = 16;
/// `seq` of the plaintext nonce frames.
pub const SEQ_NONCE: i32 = -2;
/// `seq` of the handshake frames.
pub const SEQ_HANDSHAKE: i32 = -1;
/// `seq` of the first frame after the handshake.
pub const SEQ_FIRST: i32 = 0;

/// A frame that could not be encoded (a caller's mistake, not network input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload (or packet) length is not a multiple of 4.
    NotWords {
        /// The offending length.
        len: usize,
    },
    /// The payload (or packet) is longer than the protocol allows.
    TooLong {
        /// The offending length.
        len: usize,
        /// The largest accepted length.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWords { len } => write!(f, "length {len} is not a multiple of 4 bytes"),
            Self::TooLong { len, max } => write!(f, "length {len} is over the limit of {max} bytes"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A malformed frame from the peer; the connection must be closed (after CBC, a bad CRC or
/// seq means the two sides are out of step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// `len` is not a multiple of 4.
    LengthNotWords(u32),
    /// `len` is below [`MIN_FRAME_LEN`] (and not a padding word).
    LengthTooShort(u32),
    /// `len` is over the deframer's limit.
    LengthTooLong {
        /// The frame's `len`.
        len: u32,
        /// The deframer's limit.
        max: usize,
    },
    /// The CRC does not match the frame.
    BadCrc {
        /// CRC carried by the frame.
        got: u32,
        /// CRC computed over the frame.
        want: u32,
    },
    /// The frame's `seq` is not the next one expected.
    BadSeq {
        /// `seq` carried by the frame.
        got: i32,
        /// The expected `seq`.
        want: i32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthNotWords(len) => write!(f, "RPC frame length {len} is not a multiple of 4"),
            Self::LengthTooShort(len) => write!(f, "RPC frame length {len} is below {MIN_FRAME_LEN}"),
            Self::LengthTooLong { len, max } => {
                write!(f, "RPC frame length {len} is over the limit of {max}")
            }
            Self::BadCrc { got, want } => {
                write!(f, "RPC frame CRC {got:08x} does not match {want:08x} (stream out of step)")
            }
            Self::BadSeq { got, want } => write!(f, "RPC frame seq {got}, expected {want}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one frame (`len | seq | payload | crc`) to `out`.
///
/// The payload must be whole 4-byte words and at most `MAX_FRAME_LEN - 12` bytes; otherwise
/// nothing is written.
pub fn encode_frame(seq: i32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = begin_frame(out);
    out.extend_from_slice(payload);
    finish_frame(out, start, seq)
}

/// Starts a frame whose payload the caller appends to `out` next (no copy); returns the
/// frame's start for [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    start
}

/// Completes the frame begun at `start` by [`begin_frame`]: writes `len` and `seq`, appends the
/// CRC. If the payload is not whole words or too long, or `start` is not a frame begun in `out`,
/// the frame is removed (`out` is truncated to `start`) and the error returned.
pub fn finish_frame(out: &mut Vec<u8>, start: usize, seq: i32) -> Result<(), EncodeError> {
    let Some(payload_len) = out.len().checked_sub(start).and_then(|n| n.checked_sub(8)) else {
        out.truncate(start);
        return Err(EncodeError::NotWords { len: 0 });
    };
    let max = MAX_FRAME_LEN - OVERHEAD;
    let error = if payload_len % 4 != 0 {
        Some(EncodeError::NotWords { len: payload_len })
    } else if payload_len > max {
        Some(EncodeError::TooLong { len: payload_len, max })
    } else {
        None
    };
    if let Some(e) = error {
        out.truncate(start);
        return Err(e);
    }
    // At most 2^24: fits a u32.
    let len = (payload_len + OVERHEAD) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends padding words until `out[start..]` is a multiple of [`BLOCK`] bytes.
///
/// `out[start..]` must already be whole words (frames always are); a ragged tail is rounded up
/// to the next word boundary by the padding, so the result is then not block-aligned.
pub fn pad_to_block(out: &mut Vec<u8>, start: usize) {
    let len = out.len().saturating_sub(start);
    let missing = (BLOCK - len % BLOCK) % BLOCK;
    for _ in 0..missing.div_ceil(4) {
        out.extend_from_slice(&PADDING_WORD);
    }
}

/// How many bytes the unit at the start of `buf` needs in total, once its `len` is readable:
/// 4 for a padding word, the frame length otherwise (validated against `max_len`).
pub(crate) fn unit_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_le_bytes([a, b, c, d]);
    if len == 4 {
        return Ok(Some(4));
    }
    if len % 4 != 0 {
        return Err(FrameError::LengthNotWords(len));
    }
    if (len as usize) < MIN_FRAME_LEN {
        return Err(FrameError::LengthTooShort(len));
    }
    if len as usize > max_len {
        return Err(FrameError::LengthTooLong { len, max: max_len });
    }
    Ok(Some(len as usize))
}

/// Checks the CRC and `seq` of a complete frame (`frame.len()` is its validated `len`) and
/// returns its payload.
pub(crate) fn check_frame(frame: &[u8], want_seq: i32) -> Result<&[u8], FrameError> {
    let Some((body, crc)) = frame.split_last_chunk::<4>() else {
        return Err(FrameError::LengthTooShort(frame.len() as u32));
    };
    let got = u32::from_le_bytes(*crc);
    let want = crc32fast::hash(body);
    if got != want {
        return Err(FrameError::BadCrc { got, want });
    }
    let Some((header, payload)) = body.split_first_chunk::<8>() else {
        return Err(FrameError::LengthTooShort(frame.len() as u32));
    };
    let seq = i32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if seq != want_seq {
        return Err(FrameError::BadSeq { got: seq, want: want_seq });
    }
    Ok(payload)
}

/// Streaming deframer over plaintext bytes (the nonce stage; [`crate::middle::RpcReader`]
/// wraps the same checks with CBC decryption).
///
/// Feed it bytes in any chunking with [`RpcDeframer::next`]: it takes from the input only what
/// the current frame needs, so it buffers at most one frame. Padding words between frames are
/// skipped. After an error the deframer is spent: every later call returns the same error.
#[derive(Debug, Clone)]
pub struct RpcDeframer {
    buf: Vec<u8>,
    next_seq: i32,
    max_len: usize,
    /// `buf` holds the frame returned by the last call; clear it before reading on.
    emitted: bool,
    failed: Option<FrameError>,
}

impl RpcDeframer {
    /// A deframer expecting `first_seq` next ([`SEQ_NONCE`], [`SEQ_HANDSHAKE`] or
    /// [`SEQ_FIRST`]), accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new(first_seq: i32) -> Self {
        Self::with_max_len(first_seq, MAX_FRAME_LEN)
    }

    /// As [`RpcDeframer::new`] with a lower frame length limit (clamped to
    /// `MIN_FRAME_LEN..=MAX_FRAME_LEN`).
    pub fn with_max_len(first_seq: i32, max_len: usize) -> Self {
        let max_len = max_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN);
        Self { buf: Vec::new(), next_seq: first_seq, max_len, emitted: false, failed: None }
    }

    /// The `seq` the next frame must carry.
    pub fn next_seq(&self) -> i32 {
        self.next_seq
    }

    /// Whether no partial frame or padding word is buffered.
    pub fn at_boundary(&self) -> bool {
        self.emitted || self.buf.is_empty()
    }

    /// Takes bytes from the front of `input` until one frame is complete and returns its
    /// payload (`input` then starts right after that frame), or consumes all of `input` and
    /// returns `None` when no frame completed.
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.emitted {
            self.buf.clear();
            self.emitted = false;
        }
        loop {
            let want = match unit_len(&self.buf, self.max_len) {
                Ok(Some(len)) => len,
                Ok(None) => 4,
                Err(e) => return Err(*self.failed.insert(e)),
            };
            if self.buf.len() >= want {
                if want == 4 {
                    self.buf.clear();
                    continue;
                }
                if let Err(e) = check_frame(&self.buf, self.next_seq) {
                    return Err(*self.failed.insert(e));
                }
                self.next_seq = self.next_seq.wrapping_add(1);
                self.emitted = true;
                return Ok(self.buf.get(8..self.buf.len() - 4));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (want - self.buf.len()).min(input.len());
            let (head, rest) = input.split_at(take);
            self.buf.extend_from_slice(head);
            *input = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn spec_vector_one_word() {
        let mut out = Vec::new();
        encode_frame(0, &hex("01010101"), &mut out).unwrap();
        assert_eq!(out, hex("10000000 00000000 01010101 1627afa0"));
        pad_to_block(&mut out, 0);
        assert_eq!(out.len(), 16, "already a block: no padding");
    }

    #[test]
    fn spec_vector_two_words_padded() {
        let mut out = Vec::new();
        encode_frame(0, &[1; 8], &mut out).unwrap();
        pad_to_block(&mut out, 0);
        assert_eq!(out, hex("14000000 00000000 0101010101010101 f6c42e95 04000000 04000000 04000000"));
    }

    #[test]
    fn deframes_the_vectors_one_byte_at_a_time() {
        let wire = hex("14000000 00000000 0101010101010101 f6c42e95 04000000 04000000 04000000
                        10000000 01000000 01010101 00000000");
        // Fix the second frame's CRC.
        let mut wire = wire;
        let crc = crc32fast::hash(&wire[32..44]);
        wire[44..48].copy_from_slice(&crc.to_le_bytes());
        let mut d = RpcDeframer::new(0);
        let mut got = Vec::new();
        for b in &wire {
            let mut input: &[u8] = core::slice::from_ref(b);
            while let Some(p) = d.next(&mut input).unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, vec![vec![1; 8], vec![1; 4]]);
        assert_eq!(d.next_seq(), 2);
        assert!(d.at_boundary());
    }

    #[test]
    fn rejects_bad_frames() {
        let mut frame = Vec::new();
        encode_frame(5, &[0; 4], &mut frame).unwrap();
        let mut d = RpcDeframer::new(4);
        assert_eq!(d.next(&mut &frame[..]), Err(FrameError::BadSeq { got: 5, want: 4 }));
        assert_eq!(d.next(&mut &[][..]), Err(FrameError::BadSeq { got: 5, want: 4 }), "sticky");

        let mut bad = frame.clone();
        bad[8] ^= 1;
        assert!(matches!(RpcDeframer::new(5).next(&mut &bad[..]), Err(FrameError::BadCrc { .. })));
        for (len, e) in [
            (6u32, FrameError::LengthNotWords(6)),
            (12, FrameError::LengthTooShort(12)),
            (0, FrameError::LengthTooShort(0)),
            ((1 << 24) + 4, FrameError::LengthTooLong { len: (1 << 24) + 4, max: MAX_FRAME_LEN }),
        ] {
            assert_eq!(RpcDeframer::new(0).next(&mut &len.to_le_bytes()[..]), Err(e));
        }
        assert_eq!(
            RpcDeframer::with_max_len(0, 64).next(&mut &68u32.to_le_bytes()[..]),
            Err(FrameError::LengthTooLong { len: 68, max: 64 })
        );
    }

    #[test]
    fn input_after_a_frame_is_left_alone() {
        let mut wire = Vec::new();
        encode_frame(-2, &[7; 32], &mut wire).unwrap();
        wire.extend_from_slice(b"ciphertext");
        let mut d = RpcDeframer::new(-2);
        let mut input = &wire[..];
        assert_eq!(d.next(&mut input).unwrap(), Some(&[7; 32][..]));
        assert_eq!(input, b"ciphertext");
    }

    #[test]
    fn encode_refuses_ragged_or_huge_payloads() {
        let mut out = vec![9];
        assert_eq!(encode_frame(0, &[1, 2, 3], &mut out), Err(EncodeError::NotWords { len: 3 }));
        assert_eq!(out, vec![9], "nothing written");
        let big = vec![0; MAX_FRAME_LEN];
        assert!(matches!(encode_frame(0, &big, &mut out), Err(EncodeError::TooLong { .. })));
        assert_eq!(out, vec![9]);
        let mut out = Vec::new();
        encode_frame(0, &vec![0; MAX_FRAME_LEN - OVERHEAD], &mut out).unwrap();
        assert_eq!(out.len(), MAX_FRAME_LEN);
    }
}
