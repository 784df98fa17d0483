//! The relay after the handshake: two independent halves that transform bytes in place in the
//! caller's buffer (decrypt with one leg's keystream, encrypt with the other's, add or strip the
//! TLS record framing) and count payload bytes. No allocation, no locks.
//!
//! In fast mode ([`crate::Established::into_fast_session`]) the DC encrypts its answers with
//! the client leg's own download keystream, so the DC→client half is [`FastDcToClient`]: no
//! cryptography, only the record headers (FakeTLS) around the DC's bytes as they are.

use core::fmt;
use core::ops::Range;

use crate::cipher::Keystream;
use crate::tls::record::{self, Deframer, HEADER_LEN, MAX_RECORD_PAYLOAD, RecordError};
use crate::users::UserId;

/// Which wrapper a client uses around obfuscated2, and so how the relay frames its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ee`: FakeTLS records around obfuscated2.
    FakeTls,
    /// `dd`: obfuscated2 straight on the socket.
    Secured,
}

/// A caller error in the relay API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The client sent a malformed record.
    Record(RecordError),
    /// The chunk is longer than [`DcToClient::MAX_CHUNK`] (one call of `process`) or
    /// [`DcToClient::MAX_READ`] (`process_records`), or the buffer lacks room for its headers.
    ChunkTooLarge,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(e) => write!(f, "client record: {e}"),
            Self::ChunkTooLarge => f.write_str(
                "relay chunk larger than one call takes, or buffer without room for its record headers",
            ),
        }
    }
}

impl std::error::Error for RelayError {}

impl From<RecordError> for RelayError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

/// An accepted client's relay, ready to split into its two halves. `D` is the DC→client half:
/// [`DcToClient`] (re-encrypting), or [`FastDcToClient`] in fast mode.
#[derive(Debug)]
pub struct Session<D = DcToClient> {
    /// The authenticated user.
    pub user: UserId,
    /// FakeTLS or secured.
    pub mode: Mode,
    /// Client→DC half.
    pub client_to_dc: ClientToDc,
    /// DC→client half.
    pub dc_to_client: D,
}

/// The client→DC half: strips TLS records (FakeTLS mode), decrypts the client leg and
/// encrypts the DC leg.
#[derive(Debug)]
pub struct ClientToDc {
    deframer: Option<Deframer>,
    from_client: Keystream,
    to_dc: Keystream,
    bytes: u64,
}

impl ClientToDc {
    pub(crate) fn new(deframer: Option<Deframer>, from_client: Keystream, to_dc: Keystream) -> Self {
        Self { deframer, from_client, to_dc, bytes: 0 }
    }

    /// Transforms `buf` (bytes as read from the client) in place and returns the range of it
    /// to write to the DC (possibly empty: a read may hold only record headers).
    pub fn process(&mut self, buf: &mut [u8]) -> Result<Range<usize>, RelayError> {
        let range = match &mut self.deframer {
            Some(deframer) => deframer.deframe_in_place(buf)?,
            None => 0..buf.len(),
        };
        Keystream::apply_pair(&mut self.from_client, &mut self.to_dc, &mut buf[range.clone()]);
        self.bytes += range.len() as u64;
        Ok(range)
    }

    /// MTProto payload bytes relayed so far (the `/stats` `bytes_in`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The DC→client half: decrypts the DC leg, encrypts the client leg and (FakeTLS mode) wraps
/// the bytes in ApplicationData records: one per [`DcToClient::process`] call, up to
/// [`DcToClient::MAX_RECORDS`] per [`DcToClient::process_records`] call.
#[derive(Debug)]
pub struct DcToClient {
    framed: bool,
    from_dc: Keystream,
    to_client: Keystream,
    bytes: u64,
}

impl DcToClient {
    /// Bytes the caller leaves free before the payload for the record header.
    pub const HEADROOM: usize = HEADER_LEN;
    /// Largest payload per call (one TLS record).
    pub const MAX_CHUNK: usize = MAX_RECORD_PAYLOAD;
    /// Size of a buffer that holds the headroom and the largest chunk.
    pub const BUFFER_LEN: usize = Self::HEADROOM + Self::MAX_CHUNK;
    /// Most records one [`DcToClient::process_records`] call frames.
    pub const MAX_RECORDS: usize = 4;
    /// Largest read [`DcToClient::process_records`] takes: [`Self::MAX_RECORDS`] full records.
    pub const MAX_READ: usize = Self::MAX_RECORDS * Self::MAX_CHUNK;
    /// Size of a buffer that holds [`Self::MAX_READ`] bytes framed as records (64 KiB).
    pub const RECORDS_BUFFER_LEN: usize = Self::MAX_RECORDS * (HEADER_LEN + Self::MAX_CHUNK);

    pub(crate) fn new(framed: bool, from_dc: Keystream, to_client: Keystream) -> Self {
        Self { framed, from_dc, to_client, bytes: 0 }
    }

    /// Transforms the `len` bytes read from the DC into `buf[HEADROOM..HEADROOM + len]` in
    /// place and returns the range of `buf` to write to the client.
    pub fn process(&mut self, buf: &mut [u8], len: usize) -> Result<Range<usize>, RelayError> {
        let payload = chunk_at_headroom(buf, len)?;
        Keystream::apply_pair(&mut self.from_dc, &mut self.to_client, &mut buf[payload]);
        self.bytes += len as u64;
        Ok(seal(self.framed, buf, len))
    }

    /// Like [`DcToClient::process`] for a read of up to [`Self::MAX_READ`] bytes: in FakeTLS
    /// mode the bytes become `len.div_ceil(MAX_CHUNK)` records, full ones first (the records
    /// that many calls of `process` with [`Self::MAX_CHUNK`] bytes each would give), laid out
    /// back to back in `buf` for one write. `buf` needs [`HEADER_LEN`] bytes per record before
    /// the end of the payload ([`Self::RECORDS_BUFFER_LEN`] for the largest read).
    pub fn process_records(&mut self, buf: &mut [u8], len: usize) -> Result<Range<usize>, RelayError> {
        if len <= Self::MAX_CHUNK {
            return self.process(buf, len);
        }
        let records = len.div_ceil(Self::MAX_CHUNK);
        let room = if self.framed { records * HEADER_LEN } else { HEADER_LEN };
        if len > Self::MAX_READ || buf.len() < room + len {
            return Err(RelayError::ChunkTooLarge);
        }
        Keystream::apply_pair(&mut self.from_dc, &mut self.to_client, &mut buf[HEADER_LEN..HEADER_LEN + len]);
        self.bytes += len as u64;
        if !self.framed {
            return Ok(HEADER_LEN..HEADER_LEN + len);
        }
        // Record k's payload moves up by k headers; from the last down, so nothing is
        // overwritten before it has moved. Record 0 stays where it was read.
        for k in (0..records).rev() {
            let from = HEADER_LEN + k * Self::MAX_CHUNK;
            let n = (len - k * Self::MAX_CHUNK).min(Self::MAX_CHUNK);
            let at = k * (HEADER_LEN + Self::MAX_CHUNK);
            if from != at + HEADER_LEN {
                buf.copy_within(from..from + n, at + HEADER_LEN);
            }
            let mut header = [0u8; HEADER_LEN];
            record::write_app_data_header(&mut header, n);
            buf[at..at + HEADER_LEN].copy_from_slice(&header);
        }
        Ok(0..room + len)
    }

    /// MTProto payload bytes relayed so far (the `/stats` `bytes_out`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Fast mode's DC→client half: the DC already encrypted its bytes with the client leg's
/// download keystream, so they go to the client as they are, each chunk preceded by one
/// ApplicationData record header (FakeTLS) or by nothing (`dd`). Holds no key.
///
/// Two ways to drive it:
/// * zero-copy: for every `n` payload bytes taken from the DC as they are (`n` at most
///   [`Self::MAX_CHUNK`]), write the [`Self::header`] bytes, then those `n` bytes;
/// * copy: read into `buf[HEADROOM..]` and write the range [`Self::process`] returns, exactly
///   like [`DcToClient::process`].
#[derive(Debug)]
pub struct FastDcToClient {
    framed: bool,
    bytes: u64,
}

impl FastDcToClient {
    /// Bytes the copy path leaves free before the payload for the record header.
    pub const HEADROOM: usize = HEADER_LEN;
    /// Largest payload per header (one TLS record).
    pub const MAX_CHUNK: usize = MAX_RECORD_PAYLOAD;
    /// Size of a buffer that holds the headroom and the largest chunk.
    pub const BUFFER_LEN: usize = Self::HEADROOM + Self::MAX_CHUNK;

    pub(crate) fn new(framed: bool) -> Self {
        Self { framed, bytes: 0 }
    }

    /// Whether chunks get a record header (FakeTLS) or none (`dd`).
    pub fn framed(&self) -> bool {
        self.framed
    }

    /// The record header to write before `payload_len` bytes taken from the DC as they are,
    /// and its length: `(header, 5)` for FakeTLS, `(_, 0)` for `dd` (write nothing). Counts
    /// the payload bytes. `payload_len` must be at most [`Self::MAX_CHUNK`] (and non-zero:
    /// an empty record is legal TLS but pointless); a larger value is framed and counted as
    /// `MAX_CHUNK`, so never pass one.
    pub fn header(&mut self, payload_len: usize) -> ([u8; HEADER_LEN], usize) {
        let len = payload_len.min(Self::MAX_CHUNK);
        self.bytes += len as u64;
        let mut header = [0u8; HEADER_LEN];
        if !self.framed {
            return (header, 0);
        }
        record::write_app_data_header(&mut header, len);
        (header, HEADER_LEN)
    }

    /// The copy path: with the `len` bytes read from the DC in `buf[HEADROOM..HEADROOM + len]`,
    /// puts the record header (FakeTLS) before them and returns the range of `buf` to write to
    /// the client. Nothing is decrypted or encrypted.
    pub fn process(&mut self, buf: &mut [u8], len: usize) -> Result<Range<usize>, RelayError> {
        chunk_at_headroom(buf, len)?;
        self.bytes += len as u64;
        Ok(seal(self.framed, buf, len))
    }

    /// MTProto payload bytes relayed so far (the `/stats` `bytes_out`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Where the `len` payload bytes of a client-bound chunk sit (after the record header's
/// headroom), or an error when they do not fit one record or the buffer.
fn chunk_at_headroom(buf: &[u8], len: usize) -> Result<Range<usize>, RelayError> {
    if len > MAX_RECORD_PAYLOAD || buf.len() < HEADER_LEN + len {
        return Err(RelayError::ChunkTooLarge);
    }
    Ok(HEADER_LEN..HEADER_LEN + len)
}

/// The range of `buf` to write to the client for an encrypted chunk of `len` bytes at the
/// headroom: preceded by its ApplicationData record header when `framed` (FakeTLS).
fn seal(framed: bool, buf: &mut [u8], len: usize) -> Range<usize> {
    if framed {
        let mut header = [0u8; HEADER_LEN];
        record::write_app_data_header(&mut header, len);
        buf[..HEADER_LEN].copy_from_slice(&header);
        0..HEADER_LEN + len
    } else {
        HEADER_LEN..HEADER_LEN + len
    }
}

/// The client's incoming half of a middle-proxy session (no DC leg): strips TLS records
/// (FakeTLS mode) and decrypts the client's obfuscated2 stream in place.
#[derive(Debug)]
pub struct ClientIn {
    deframer: Option<Deframer>,
    from_client: Keystream,
    bytes: u64,
}

impl ClientIn {
    pub(crate) fn new(deframer: Option<Deframer>, from_client: Keystream) -> Self {
        Self { deframer, from_client, bytes: 0 }
    }

    /// Transforms `buf` (bytes as read from the client) in place and returns the range of it
    /// that holds plaintext (possibly empty: a read may hold only record headers).
    pub fn process(&mut self, buf: &mut [u8]) -> Result<Range<usize>, RelayError> {
        let range = match &mut self.deframer {
            Some(deframer) => deframer.deframe_in_place(buf)?,
            None => 0..buf.len(),
        };
        self.from_client.apply(&mut buf[range.clone()]);
        self.bytes += range.len() as u64;
        Ok(range)
    }

    /// Plaintext bytes read from the client so far (the `/stats` `bytes_in`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The client's outgoing half of a middle-proxy session: encrypts with the client's keystream
/// and (FakeTLS mode) wraps each chunk in one ApplicationData record, exactly like
/// [`DcToClient`] minus the DC decryption.
#[derive(Debug)]
pub struct ClientOut {
    framed: bool,
    to_client: Keystream,
    bytes: u64,
}

impl ClientOut {
    /// Bytes the caller leaves free before the payload for the record header.
    pub const HEADROOM: usize = HEADER_LEN;
    /// Largest payload per call (one TLS record).
    pub const MAX_CHUNK: usize = MAX_RECORD_PAYLOAD;
    /// Size of a buffer that holds the headroom and the largest chunk.
    pub const BUFFER_LEN: usize = Self::HEADROOM + Self::MAX_CHUNK;

    pub(crate) fn new(framed: bool, to_client: Keystream) -> Self {
        Self { framed, to_client, bytes: 0 }
    }

    /// Encrypts the `len` plaintext bytes in `buf[HEADROOM..HEADROOM + len]` in place and
    /// returns the range of `buf` to write to the client.
    pub fn process(&mut self, buf: &mut [u8], len: usize) -> Result<Range<usize>, RelayError> {
        let payload = chunk_at_headroom(buf, len)?;
        self.to_client.apply(&mut buf[payload]);
        self.bytes += len as u64;
        Ok(seal(self.framed, buf, len))
    }

    /// Plaintext bytes sent to the client so far (the `/stats` `bytes_out`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// An accepted client's own leg, for middle-proxy mode: the bytes are split into transport
/// packets by the app instead of being re-encrypted for a DC.
#[derive(Debug)]
pub struct ClientLeg {
    /// The authenticated user.
    pub user: UserId,
    /// FakeTLS or secured.
    pub mode: Mode,
    /// The client's transport, from its frame's tag.
    pub transport: crate::middle::Transport,
    /// The DC id the client asked for, signed (negative: media).
    pub dc: i16,
    /// Client → us: records stripped, decrypted.
    pub client_in: ClientIn,
    /// Us → client: encrypted, in records for FakeTLS.
    pub client_out: ClientOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_headers_frame_faketls_chunks_and_are_empty_for_dd() {
        let mut tls = FastDcToClient::new(true);
        assert_eq!(tls.header(1), ([0x17, 0x03, 0x03, 0x00, 0x01], 5));
        assert_eq!(tls.header(16379), ([0x17, 0x03, 0x03, 0x3f, 0xfb], 5));
        assert_eq!(tls.bytes(), 16380);
        // Too long: framed and counted as one full record (the caller must not do this).
        assert_eq!(tls.header(70_000), ([0x17, 0x03, 0x03, 0x3f, 0xfb], 5));
        assert_eq!(tls.bytes(), 16380 + 16379);

        let mut dd = FastDcToClient::new(false);
        assert_eq!(dd.header(1000).1, 0);
        assert_eq!(dd.header(24).1, 0);
        assert_eq!(dd.bytes(), 1024);
    }

    #[test]
    fn the_fast_copy_path_frames_bytes_as_they_are() {
        let mut buf = vec![0u8; FastDcToClient::BUFFER_LEN];
        buf[5..8].copy_from_slice(b"abc");
        let mut tls = FastDcToClient::new(true);
        let range = tls.process(&mut buf, 3).unwrap();
        assert_eq!(&buf[range], &[0x17, 0x03, 0x03, 0x00, 0x03, b'a', b'b', b'c']);
        let mut dd = FastDcToClient::new(false);
        let range = dd.process(&mut buf, 3).unwrap();
        assert_eq!(&buf[range], b"abc");
        assert_eq!((tls.bytes(), dd.bytes()), (3, 3));
        assert_eq!(tls.process(&mut buf, FastDcToClient::MAX_CHUNK + 1), Err(RelayError::ChunkTooLarge));
        assert_eq!(tls.process(&mut buf[..7], 3), Err(RelayError::ChunkTooLarge));
        assert_eq!(tls.bytes(), 3, "refused chunks are not counted");
    }
}
