//! The client's MTProto transport inside its decrypted obfuscated2 stream, which middle-proxy
//! mode must split into packets: abridged (`ef`), intermediate (`ee`), padded intermediate
//! (`dd`); and the framing of answers and quick acks back to the client.

use core::fmt;

use rand_core::RngCore;

use crate::middle::frame::EncodeError;
use crate::middle::rpc::MAX_POST_SIZE;

/// A client transport, named by the tag at bytes 56..60 of the obfuscated2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `ef ef ef ef`: a length byte in words (or `7f` and 3 bytes).
    Abridged,
    /// `ee ee ee ee`: a u32 length, whole words.
    Intermediate,
    /// `dd dd dd dd`: a u32 length including 0..3 random padding bytes.
    PaddedIntermediate,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Self; 3] = [Self::Abridged, Self::Intermediate, Self::PaddedIntermediate];

    /// The transport named by an obfuscated2 tag, if any.
    pub fn from_tag(tag: [u8; 4]) -> Option<Self> {
        match tag {
            [0xef, 0xef, 0xef, 0xef] => Some(Self::Abridged),
            [0xee, 0xee, 0xee, 0xee] => Some(Self::Intermediate),
            [0xdd, 0xdd, 0xdd, 0xdd] => Some(Self::PaddedIntermediate),
            _ => None,
        }
    }

    /// The obfuscated2 tag of this transport.
    pub fn tag(self) -> [u8; 4] {
        match self {
            Self::Abridged => [0xef; 4],
            Self::Intermediate => [0xee; 4],
            Self::PaddedIntermediate => [0xdd; 4],
        }
    }
}

/// A malformed client packet header; the client must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// A packet length of 0.
    ZeroLength,
    /// An intermediate length with bit 30 set.
    Bit30(u32),
    /// An intermediate (`ee`) length that is not a multiple of 4.
    NotWords(u32),
    /// A packet over [`MAX_POST_SIZE`] bytes.
    TooLong(usize),
    /// An abridged 3-byte length under `0x7f` words (it should have used the 1-byte form).
    ShortExtended(u32),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLength => f.write_str("client packet of length 0"),
            Self::Bit30(v) => write!(f, "client packet length {v:08x} has bit 30 set"),
            Self::NotWords(len) => {
                write!(f, "intermediate client packet length {len} is not a multiple of 4")
            }
            Self::TooLong(len) => write!(f, "client packet of {len} bytes is over {MAX_POST_SIZE}"),
            Self::ShortExtended(words) => {
                write!(f, "abridged 3-byte length of {words} words, under the 0x7f minimum")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// One client packet, transport header (and `dd` padding) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The MTProto packet.
    pub data: &'a [u8],
    /// Whether the client asked for a quick ack.
    pub quick_ack: bool,
}

/// Streaming deframer of one client's packets. Takes from its input only what the current
/// packet needs, so it buffers at most one packet (at most [`MAX_POST_SIZE`] bytes). After an
/// error every later call returns the same error.
#[derive(Debug, Clone)]
pub struct TransportDeframer {
    transport: Transport,
    header: [u8; 4],
    header_len: usize,
    /// The packet's length on the wire (with `dd` padding), once the header is read.
    body_len: Option<usize>,
    quick_ack: bool,
    buf: Vec<u8>,
    emitted: bool,
    failed: Option<TransportError>,
}

impl TransportDeframer {
    /// A deframer for `transport` at a packet boundary.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            header: [0; 4],
            header_len: 0,
            body_len: None,
            quick_ack: false,
            buf: Vec::new(),
            emitted: false,
            failed: None,
        }
    }

    /// The transport this deframer parses.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether no partial packet is buffered.
    pub fn at_boundary(&self) -> bool {
        self.emitted || (self.header_len == 0 && self.body_len.is_none())
    }

    /// Takes bytes from the front of `input` until one packet is complete and returns it
    /// (`input` then starts right after it), or consumes all of `input` and returns `None`.
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<Packet<'_>>, TransportError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.emitted {
            self.buf.clear();
            self.header_len = 0;
            self.body_len = None;
            self.emitted = false;
        }
        let len = match self.body_len {
            Some(len) => len,
            None => match self.read_header(input) {
                Ok(Some(len)) => *self.body_len.insert(len),
                Ok(None) => return Ok(None),
                Err(e) => return Err(*self.failed.insert(e)),
            },
        };
        let take = (len - self.buf.len()).min(input.len());
        let (head, rest) = input.split_at(take);
        self.buf.extend_from_slice(head);
        *input = rest;
        if self.buf.len() < len {
            return Ok(None);
        }
        self.emitted = true;
        // `dd`: the last `len % 4` bytes are padding (as C: truncate to `len & !3`).
        let data_len = match self.transport {
            Transport::PaddedIntermediate => len & !3,
            _ => len,
        };
        Ok(Some(Packet { data: &self.buf[..data_len], quick_ack: self.quick_ack }))
    }

    /// Reads header bytes; returns the packet length once the header is complete.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<Option<usize>, TransportError> {
        loop {
            let want = match self.transport {
                Transport::Abridged if self.header_len >= 1 && self.header[0] & 0x7f == 0x7f => 4,
                Transport::Abridged => 1,
                _ => 4,
            };
            if self.header_len == want {
                return self.parse_header().map(Some);
            }
            let Some((&b, rest)) = input.split_first() else { return Ok(None) };
            self.header[self.header_len] = b;
            self.header_len += 1;
            *input = rest;
        }
    }

    fn parse_header(&mut self) -> Result<usize, TransportError> {
        let h = self.header;
        let len = match self.transport {
            Transport::Abridged => {
                self.quick_ack = h[0] & 0x80 != 0;
                let words = u32::from(h[0] & 0x7f);
                let words = if words < 0x7f {
                    words
                } else {
                    let w = u32::from_le_bytes([h[1], h[2], h[3], 0]);
                    if w < 0x7f {
                        return Err(TransportError::ShortExtended(w));
                    }
                    w
                };
                words as usize * 4
            }
            Transport::Intermediate | Transport::PaddedIntermediate => {
                let v = u32::from_le_bytes(h);
                self.quick_ack = v & 0x8000_0000 != 0;
                let len = v & 0x7fff_ffff;
                if len & 0x4000_0000 != 0 {
                    return Err(TransportError::Bit30(v));
                }
                len as usize
            }
        };
        if len == 0 {
            return Err(TransportError::ZeroLength);
        }
        if len > MAX_POST_SIZE {
            return Err(TransportError::TooLong(len));
        }
        if self.transport == Transport::Intermediate && len % 4 != 0 {
            return Err(TransportError::NotWords(len as u32));
        }
        Ok(len)
    }
}

/// Largest answer the abridged 3-byte length can carry.
const ABRIDGED_MAX: usize = 0xff_ffff * 4;
/// Largest answer an intermediate length can carry (bits 30 and 31 are flags).
const INTERMEDIATE_MAX: usize = 0x3fff_fffc;

/// Appends `data` framed for a client of `transport` (C `tcp_rpc_write_packet_compact`):
/// abridged one byte `len/4` up to `0x7e` words, else `7f` and 3 bytes; intermediate a u32
/// length; padded intermediate a u32 length including 0..=3 random bytes from `rng` appended
/// after the data. `data` must be whole words (else nothing is written).
pub fn encode_packet(
    transport: Transport,
    data: &[u8],
    rng: &mut (impl RngCore + ?Sized),
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let len = data.len();
    if !len.is_multiple_of(4) {
        return Err(EncodeError::NotWords { len });
    }
    match transport {
        Transport::Abridged => {
            if len > ABRIDGED_MAX {
                return Err(EncodeError::TooLong { len, max: ABRIDGED_MAX });
            }
            let words = len / 4;
            if words <= 0x7e {
                out.push(words as u8);
            } else {
                let w = (words as u32).to_le_bytes();
                out.extend_from_slice(&[0x7f, w[0], w[1], w[2]]);
            }
            out.extend_from_slice(data);
        }
        Transport::Intermediate => {
            if len > INTERMEDIATE_MAX {
                return Err(EncodeError::TooLong { len, max: INTERMEDIATE_MAX });
            }
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        Transport::PaddedIntermediate => {
            if len > INTERMEDIATE_MAX {
                return Err(EncodeError::TooLong { len, max: INTERMEDIATE_MAX });
            }
            let pad = (rng.next_u32() & 3) as usize;
            out.extend_from_slice(&((len + pad) as u32).to_le_bytes());
            out.extend_from_slice(data);
            let mut noise = [0u8; 3];
            rng.fill_bytes(&mut noise[..pad]);
            out.extend_from_slice(&noise[..pad]);
        }
    }
    Ok(())
}

/// The 4 raw bytes (no length) that carry a quick ack to a client: abridged gets `confirm`
/// byte-swapped (big-endian), intermediate and padded intermediate get it as received.
pub fn simple_ack_bytes(transport: Transport, confirm: [u8; 4]) -> [u8; 4] {
    match transport {
        Transport::Abridged => {
            let [a, b, c, d] = confirm;
            [d, c, b, a]
        }
        Transport::Intermediate | Transport::PaddedIntermediate => confirm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(3)
    }

    fn all(transport: Transport, wire: &[u8]) -> Result<Vec<(Vec<u8>, bool)>, TransportError> {
        let mut d = TransportDeframer::new(transport);
        let mut out = Vec::new();
        for b in wire {
            let mut input: &[u8] = core::slice::from_ref(b);
            while let Some(p) = d.next(&mut input)? {
                out.push((p.data.to_vec(), p.quick_ack));
            }
        }
        Ok(out)
    }

    #[test]
    fn abridged_forms() {
        let mut wire = vec![0x81, 1, 2, 3, 4, 0x7f, 0x7f, 0, 0];
        wire.extend_from_slice(&[9; 0x7f * 4]);
        let got = all(Transport::Abridged, &wire).unwrap();
        assert_eq!(got, vec![(vec![1, 2, 3, 4], true), (vec![9; 0x7f * 4], false)]);
        assert_eq!(all(Transport::Abridged, &[0x80]), Err(TransportError::ZeroLength));
        assert_eq!(all(Transport::Abridged, &[0x7f, 0x7e, 0, 0]), Err(TransportError::ShortExtended(0x7e)));
        assert_eq!(
            all(Transport::Abridged, &[0xff, 0xff, 0xff, 0xff]),
            Err(TransportError::TooLong(0xff_ffff * 4))
        );
        let mut out = Vec::new();
        encode_packet(Transport::Abridged, &[1; 0x7e * 4], &mut rng(), &mut out).unwrap();
        assert_eq!(out[0], 0x7e);
        out.clear();
        encode_packet(Transport::Abridged, &[1; 0x7f * 4], &mut rng(), &mut out).unwrap();
        assert_eq!(out[..4], [0x7f, 0x7f, 0, 0]);
    }

    #[test]
    fn intermediate_forms() {
        let mut wire = 0x8000_0008u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&[5; 8]);
        assert_eq!(all(Transport::Intermediate, &wire).unwrap(), vec![(vec![5; 8], true)]);
        assert_eq!(all(Transport::Intermediate, &6u32.to_le_bytes()), Err(TransportError::NotWords(6)));
        assert_eq!(all(Transport::Intermediate, &0u32.to_le_bytes()), Err(TransportError::ZeroLength));
        assert_eq!(
            all(Transport::Intermediate, &0x8000_0000u32.to_le_bytes()),
            Err(TransportError::ZeroLength)
        );
        assert_eq!(
            all(Transport::Intermediate, &0x4000_0004u32.to_le_bytes()),
            Err(TransportError::Bit30(0x4000_0004))
        );
        let over = (MAX_POST_SIZE + 4) as u32;
        assert_eq!(
            all(Transport::Intermediate, &over.to_le_bytes()),
            Err(TransportError::TooLong(MAX_POST_SIZE + 4))
        );
        let mut wire = (MAX_POST_SIZE as u32).to_le_bytes().to_vec();
        wire.resize(4 + MAX_POST_SIZE, 1);
        assert_eq!(all(Transport::Intermediate, &wire).unwrap().len(), 1);
    }

    #[test]
    fn padded_strips_len_mod_4() {
        let mut wire = 11u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0xaa, 0xbb, 0xcc]);
        wire.extend_from_slice(&3u32.to_le_bytes());
        wire.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            all(Transport::PaddedIntermediate, &wire).unwrap(),
            vec![(vec![1, 2, 3, 4, 5, 6, 7, 8], false), (vec![], false)]
        );
    }

    #[test]
    fn encode_round_trips_and_acks() {
        for t in Transport::ALL {
            let mut r = rng();
            let mut out = Vec::new();
            for n in [1usize, 3, 0x7e, 0x7f, 1000] {
                encode_packet(t, &vec![n as u8; n * 4], &mut r, &mut out).unwrap();
            }
            let got = all(t, &out).unwrap();
            let want: Vec<_> =
                [1usize, 3, 0x7e, 0x7f, 1000].iter().map(|&n| (vec![n as u8; n * 4], false)).collect();
            assert_eq!(got, want, "{t:?}");
            assert_eq!(encode_packet(t, &[1; 5], &mut r, &mut out), Err(EncodeError::NotWords { len: 5 }));
            assert_eq!(Transport::from_tag(t.tag()), Some(t));
        }
        assert_eq!(simple_ack_bytes(Transport::Abridged, [1, 2, 3, 4]), [4, 3, 2, 1]);
        assert_eq!(simple_ack_bytes(Transport::PaddedIntermediate, [1, 2, 3, 4]), [1, 2, 3, 4]);
        assert_eq!(Transport::from_tag([0; 4]), None);
    }
}
