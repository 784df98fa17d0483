//! A real TLS server's first flight as a passive observer sees it: the ServerHello's cipher
//! suite, extension order and key share, whether a ChangeCipherSpec follows, and the sizes of
//! the encrypted records (TLS 1.3: EncryptedExtensions, Certificate, CertificateVerify,
//! Finished, however the server packs them). Learning reads the fronting site's flight with
//! [`ObservedFlight::parse`] and the fake flight is shaped after it (`doppel::flight_shape`).
//!
//! ```text
//! 16 03 03 LL LL | 02 LLLLLL 0303 random(32) sid_len sid suite(2) comp(1) ext_len(2) ext…
//! 14 03 03 00 01 01                                   (optional)
//! 17 03 03 LL LL | ciphertext                         (one or more)
//! ```
//!
//! The parser is total: any bytes give a flight or an [`ObserveError`].

use core::fmt;

use super::record::{HEADER_LEN, TYPE_APPLICATION_DATA, TYPE_CHANGE_CIPHER_SPEC, TYPE_HANDSHAKE};

/// Extension type of `supported_versions`.
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
/// Extension type of `key_share`.
pub const EXT_KEY_SHARE: u16 = 0x0033;
/// Most ServerHello extensions remembered (a TLS 1.3 ServerHello has two or three).
pub const MAX_EXTENSIONS: usize = 6;
/// Most encrypted records of a flight remembered one by one; later ones are added to the last.
pub const MAX_RECORDS: usize = 8;

/// The server random of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256 of "HelloRetryRequest".
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2,
    0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The key share a ServerHello carries: the group and the length of its key exchange bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyShare {
    /// Named group (`0x001d` X25519, `0x11ec` X25519MLKEM768, …).
    pub group: u16,
    /// Length of the server's key exchange value (32 for X25519, 1120 for X25519MLKEM768).
    pub len: u16,
}

/// ServerHello extension types in the order the server sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExtensionOrder {
    types: [u16; MAX_EXTENSIONS],
    count: u8,
}

impl ExtensionOrder {
    /// The order this proxy used before learning: supported_versions, then key_share.
    pub const DEFAULT: Self = Self { types: [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE, 0, 0, 0, 0], count: 2 };

    /// The extension types, in order.
    pub fn as_slice(&self) -> &[u16] {
        &self.types[..usize::from(self.count)]
    }

    /// Appends a type; `false` (and nothing kept) once [`MAX_EXTENSIONS`] are there.
    pub fn push(&mut self, kind: u16) -> bool {
        let Some(slot) = self.types.get_mut(usize::from(self.count)) else {
            return false;
        };
        *slot = kind;
        self.count += 1;
        true
    }
}

/// Encrypted-record payload lengths of a flight, in order; a flight of more than
/// [`MAX_RECORDS`] records has the rest (with their headers) added to the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RecordSizes {
    sizes: [u32; MAX_RECORDS],
    count: u8,
}

impl RecordSizes {
    /// The sizes, in order.
    pub fn as_slice(&self) -> &[u32] {
        &self.sizes[..usize::from(self.count)]
    }

    /// Appends a record's payload length.
    pub fn push(&mut self, len: u32) {
        match self.sizes.get_mut(usize::from(self.count)) {
            Some(slot) => {
                *slot = len;
                self.count += 1;
            }
            None => {
                let last = &mut self.sizes[MAX_RECORDS - 1];
                *last = last.saturating_add(HEADER_LEN as u32 + len);
            }
        }
    }

    /// Bytes these records take on the wire, headers included.
    pub fn wire_len(&self) -> u32 {
        self.as_slice().iter().map(|&n| n.saturating_add(HEADER_LEN as u32)).fold(0, u32::saturating_add)
    }
}

/// What a passive observer learns from a TLS 1.3 server's first flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedFlight {
    /// The chosen cipher suite.
    pub cipher_suite: u16,
    /// ServerHello extensions in order.
    pub extensions: ExtensionOrder,
    /// The server's key share, if the ServerHello had one.
    pub key_share: Option<KeyShare>,
    /// Length of the ServerHello handshake record's payload.
    pub server_hello_len: u16,
    /// Whether a ChangeCipherSpec record followed the ServerHello.
    pub change_cipher_spec: bool,
    /// The encrypted (ApplicationData) records after it.
    pub encrypted: RecordSizes,
}

impl ObservedFlight {
    /// Reads the flight at the start of `input`: the ServerHello record, an optional
    /// ChangeCipherSpec and the ApplicationData records that follow, up to the end of `input`
    /// or the first record of another type. A record cut short at the end is not counted.
    pub fn parse(input: &[u8]) -> Result<Self, ObserveError> {
        let (kind, hello, mut pos) = record_at(input, 0).ok_or(ObserveError::Incomplete)?;
        if kind != TYPE_HANDSHAKE {
            return Err(if kind == 0x15 { ObserveError::Alert } else { ObserveError::NotHandshake });
        }
        let mut flight = parse_server_hello(hello)?;
        flight.server_hello_len = hello.len() as u16;
        while let Some((kind, payload, next)) = record_at(input, pos) {
            match kind {
                TYPE_CHANGE_CIPHER_SPEC if !flight.change_cipher_spec && flight.encrypted.count == 0 => {
                    flight.change_cipher_spec = true;
                }
                TYPE_APPLICATION_DATA => flight.encrypted.push(payload.len() as u32),
                _ => break,
            }
            pos = next;
        }
        if flight.encrypted.count == 0 {
            return Err(ObserveError::NoEncryptedRecords);
        }
        Ok(flight)
    }

    /// Record types in order, as on the wire (`0x16`, `0x14` if present, then `0x17`s).
    pub fn record_types(&self) -> impl Iterator<Item = u8> + '_ {
        let ccs = self.change_cipher_spec.then_some(TYPE_CHANGE_CIPHER_SPEC);
        core::iter::once(TYPE_HANDSHAKE)
            .chain(ccs)
            .chain(self.encrypted.as_slice().iter().map(|_| TYPE_APPLICATION_DATA))
    }

    /// Bytes of the whole flight on the wire, headers included.
    pub fn wire_len(&self) -> u32 {
        let ccs = if self.change_cipher_spec { 6 } else { 0 };
        (HEADER_LEN as u32 + u32::from(self.server_hello_len)) + ccs + self.encrypted.wire_len()
    }
}

/// One whole record at `pos`: its type, payload and the position after it.
fn record_at(input: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let header = input.get(pos..pos.checked_add(HEADER_LEN)?)?;
    if header[1] != 0x03 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let start = pos + HEADER_LEN;
    let payload = input.get(start..start + len)?;
    Some((header[0], payload, start + len))
}

/// Parses a handshake record's payload that must start with a TLS 1.3 ServerHello.
fn parse_server_hello(record: &[u8]) -> Result<ObservedFlight, ObserveError> {
    let mut r = Reader { bytes: record, pos: 0 };
    if r.u8()? != 0x02 {
        return Err(ObserveError::NotServerHello);
    }
    let body_len = r.u24()?;
    let body = r.take(body_len)?;
    let mut r = Reader { bytes: body, pos: 0 };
    let _legacy_version = r.u16()?;
    let random = r.take(32)?;
    if random == HELLO_RETRY_RANDOM {
        return Err(ObserveError::HelloRetryRequest);
    }
    let sid_len = usize::from(r.u8()?);
    r.take(sid_len)?;
    let cipher_suite = r.u16()?;
    let _compression = r.u8()?;
    let mut flight = ObservedFlight {
        cipher_suite,
        extensions: ExtensionOrder::default(),
        key_share: None,
        server_hello_len: 0,
        change_cipher_spec: false,
        encrypted: RecordSizes::default(),
    };
    let mut tls13 = false;
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader { bytes: r.take(ext_len)?, pos: 0 };
    while exts.pos < exts.bytes.len() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        flight.extensions.push(kind);
        match kind {
            EXT_SUPPORTED_VERSIONS => tls13 |= data == [0x03, 0x04],
            EXT_KEY_SHARE => {
                let mut d = Reader { bytes: data, pos: 0 };
                let group = d.u16()?;
                let len = d.u16()?;
                d.take(usize::from(len))?;
                flight.key_share = Some(KeyShare { group, len });
            }
            _ => {}
        }
    }
    if !tls13 {
        return Err(ObserveError::NotTls13);
    }
    Ok(flight)
}

/// Bounds-checked big-endian reads over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ObserveError> {
        let end = self.pos.checked_add(n).ok_or(ObserveError::Malformed)?;
        let out = self.bytes.get(self.pos..end).ok_or(ObserveError::Malformed)?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ObserveError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ObserveError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, ObserveError> {
        let b = self.take(3)?;
        Ok((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// Why bytes are not a TLS 1.3 server flight this proxy can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserveError {
    /// Not even one whole record arrived.
    Incomplete,
    /// The server answered with an alert.
    Alert,
    /// The first record is not a handshake record.
    NotHandshake,
    /// The handshake record does not start with a ServerHello.
    NotServerHello,
    /// The server asked for another key share (HelloRetryRequest).
    HelloRetryRequest,
    /// The server chose TLS 1.2 or older (no `supported_versions` = 0x0304).
    NotTls13,
    /// A length field points past its container.
    Malformed,
    /// No encrypted record followed the ServerHello.
    NoEncryptedRecords,
}

impl fmt::Display for ObserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Incomplete => "the server sent no complete TLS record",
            Self::Alert => "the server answered with a TLS alert",
            Self::NotHandshake => "the server's first record is not a TLS handshake record",
            Self::NotServerHello => "the server's first handshake message is not a ServerHello",
            Self::HelloRetryRequest => "the server asked for another key share (HelloRetryRequest)",
            Self::NotTls13 => "the server chose TLS 1.2 or older, not TLS 1.3",
            Self::Malformed => "the ServerHello is malformed",
            Self::NoEncryptedRecords => "no encrypted record followed the ServerHello",
        })
    }
}

impl std::error::Error for ObserveError {}
