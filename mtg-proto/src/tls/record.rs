//! TLS record framing after the handshake.
//!
//! Client→proxy: records with version `03 03` are parsed; ApplicationData payloads form one
//! stream and every other record type (the client's ChangeCipherSpec, alerts) is dropped.
//! Proxy→client: ApplicationData records of at most [`MAX_RECORD_PAYLOAD`] bytes.

use core::fmt;
use core::ops::Range;

/// Size of a TLS record header.
pub const HEADER_LEN: usize = 5;
/// Record type of a handshake record.
pub const TYPE_HANDSHAKE: u8 = 0x16;
/// Record type of a ChangeCipherSpec record.
pub const TYPE_CHANGE_CIPHER_SPEC: u8 = 0x14;
/// Record type of an ApplicationData record.
pub const TYPE_APPLICATION_DATA: u8 = 0x17;
/// Record version of the ClientHello records (TLS 1.0 on the wire).
pub const VERSION_TLS10: [u8; 2] = [0x03, 0x01];
/// Record version of every record after the ClientHello (TLS 1.2 on the wire).
pub const VERSION_TLS12: [u8; 2] = [0x03, 0x03];
/// Largest payload of a record the proxy writes (16384 minus the header, as mtg).
pub const MAX_RECORD_PAYLOAD: usize = 16379;

/// A malformed record from the client after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The record version was not `03 03`; the value is what was sent.
    BadVersion([u8; 2]),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadVersion(v) => write!(f, "TLS record version {:02x}{:02x}, expected 0303", v[0], v[1]),
        }
    }
}

impl std::error::Error for RecordError {}

/// Writes an ApplicationData record header for `payload_len` bytes.
///
/// `payload_len` above `u16::MAX` is clamped; callers keep it at most [`MAX_RECORD_PAYLOAD`].
pub fn write_app_data_header(out: &mut [u8; HEADER_LEN], payload_len: usize) {
    let len = u16::try_from(payload_len).unwrap_or(u16::MAX).to_be_bytes();
    *out = [TYPE_APPLICATION_DATA, VERSION_TLS12[0], VERSION_TLS12[1], len[0], len[1]];
}

/// One step of the deframer over an input slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes this step used.
    pub consumed: usize,
    /// ApplicationData payload found in those bytes, as a range of the input.
    pub payload: Option<Range<usize>>,
}

/// Incremental client→proxy record parser; carries partial headers across chunks and never
/// allocates.
#[derive(Debug, Clone, Default)]
pub struct Deframer {
    header: [u8; HEADER_LEN],
    header_len: u8,
    remaining: u16,
    keep: bool,
}

impl Deframer {
    /// A deframer positioned at a record boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the deframer sits exactly between two records.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }

    /// Processes the start of `input`: part of a header, or a run of payload bytes (at most
    /// `max_payload`). Call repeatedly until all input is consumed.
    pub fn step(&mut self, input: &[u8], max_payload: usize) -> Result<Step, RecordError> {
        if self.remaining > 0 {
            let n = input.len().min(usize::from(self.remaining)).min(max_payload);
            // `n` fits: it is at most `remaining`, a u16.
            self.remaining -= n as u16;
            let payload = (self.keep && n > 0).then_some(0..n);
            return Ok(Step { consumed: n, payload });
        }
        let have = usize::from(self.header_len);
        let take = input.len().min(HEADER_LEN - have);
        self.header[have..have + take].copy_from_slice(&input[..take]);
        self.header_len += take as u8;
        if usize::from(self.header_len) == HEADER_LEN {
            self.header_len = 0;
            let [kind, v0, v1, l0, l1] = self.header;
            if [v0, v1] != VERSION_TLS12 {
                return Err(RecordError::BadVersion([v0, v1]));
            }
            // As mtg: every record type but ApplicationData is dropped unread.
            self.keep = kind == TYPE_APPLICATION_DATA;
            self.remaining = u16::from_be_bytes([l0, l1]);
        }
        Ok(Step { consumed: take, payload: None })
    }

    /// Removes record headers and non-ApplicationData records from `buf` in place and returns
    /// where the joined payload now lies. The first payload run stays where it is (so a read
    /// holding one record moves no bytes); later runs are moved down to join it.
    pub fn deframe_in_place(&mut self, buf: &mut [u8]) -> Result<Range<usize>, RecordError> {
        let mut read = 0;
        let mut out: Option<Range<usize>> = None;
        while read < buf.len() {
            let step = self.step(&buf[read..], usize::MAX)?;
            if let Some(range) = step.payload {
                let len = range.len();
                out = Some(match out {
                    None => read..read + len,
                    Some(joined) => {
                        buf.copy_within(read..read + len, joined.end);
                        joined.start..joined.end + len
                    }
                });
            }
            read += step.consumed;
        }
        Ok(out.unwrap_or(0..0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_ccs_and_joins_payloads() {
        let mut d = Deframer::new();
        let mut wire =
            vec![0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0, 3, b'a', b'b', b'c', 0x17, 3, 3, 0, 2, b'd', b'e'];
        let r = d.deframe_in_place(&mut wire).unwrap();
        assert_eq!(&wire[r], b"abcde");
        assert!(d.at_boundary());
    }

    #[test]
    fn header_split_across_chunks() {
        let mut d = Deframer::new();
        let mut a = vec![0x17, 3];
        let mut b = vec![3, 0, 2, b'x'];
        let mut c = vec![b'y'];
        assert_eq!(d.deframe_in_place(&mut a).unwrap(), 0..0);
        assert_eq!(d.deframe_in_place(&mut b).unwrap(), 3..4);
        assert_eq!(b[3], b'x');
        assert_eq!(d.deframe_in_place(&mut c).unwrap(), 0..1);
        assert!(d.at_boundary());
    }

    #[test]
    fn rejects_wrong_version() {
        let mut d = Deframer::new();
        assert_eq!(d.deframe_in_place(&mut [0x17, 3, 1, 0, 0]), Err(RecordError::BadVersion([3, 1])));
    }

    #[test]
    fn drops_unknown_record_types() {
        let mut d = Deframer::new();
        let mut wire = [0x42, 3, 3, 0, 1, 9, 0x17, 3, 3, 0, 1, 7];
        assert_eq!(d.deframe_in_place(&mut wire), Ok(11..12));
        assert_eq!(wire[11], 7);
    }
}
