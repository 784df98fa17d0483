//! Proxy secrets: `ee` (FakeTLS) and `dd` (secured) in hex or base64url text form.
//!
//! Byte layout (reference §3.7): `0xEE | key[16] | hostname` for FakeTLS and
//! `0xDD | key[16]` for the secured (padded intermediate, no TLS) mode. The text form is hex
//! (tried first, either case) or base64 with the URL-safe alphabet and no padding.

use core::fmt;

use zeroize::Zeroize;

use crate::base64url;

/// Length of the secret key shared by a client and the proxy.
pub const KEY_LEN: usize = 16;

/// Longest hostname a FakeTLS secret may carry (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// Which transport a secret selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// `ee` secret: FakeTLS wrapper with a fronting hostname.
    FakeTls,
    /// `dd` secret: obfuscated2 straight on the socket (padded intermediate).
    Secured,
}

impl SecretKind {
    /// The first byte of the binary secret for this kind.
    pub const fn tag_byte(self) -> u8 {
        match self {
            Self::FakeTls => 0xee,
            Self::Secured => 0xdd,
        }
    }
}

/// A parsed proxy secret. The key is zeroized on drop and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    kind: SecretKind,
    key: [u8; KEY_LEN],
    host: String,
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("kind", &self.kind)
            .field("key", &"<redacted>")
            .field("host", &self.host)
            .finish()
    }
}

/// Why a secret text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The text is empty.
    Empty,
    /// The text is neither hex nor unpadded base64url.
    NotHexOrBase64,
    /// The decoded secret is shorter than two bytes.
    TooShort,
    /// The first byte is neither `ee` nor `dd`; the value is that byte.
    UnknownKind(u8),
    /// The key part is shorter than 16 bytes.
    KeyTooShort,
    /// The key is all zero bytes.
    ZeroKey,
    /// An `ee` secret carries no hostname after the key.
    MissingHost,
    /// The hostname is longer than 253 bytes.
    HostTooLong,
    /// The hostname has a byte that is not printable ASCII; the value is that byte.
    BadHostByte(u8),
    /// A `dd` secret has bytes after its 16-byte key.
    TrailingBytes,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("secret is empty"),
            Self::NotHexOrBase64 => f.write_str("secret is neither hex nor base64url without padding"),
            Self::TooShort => f.write_str("secret is shorter than 2 bytes"),
            Self::UnknownKind(b) => write!(
                f,
                "secret starts with byte {b:02x}; only ee (FakeTLS) and dd (secured) secrets are supported"
            ),
            Self::KeyTooShort => f.write_str("secret key is shorter than 16 bytes"),
            Self::ZeroKey => f.write_str("secret key is all zeros"),
            Self::MissingHost => f.write_str("ee secret has no hostname after the 16-byte key"),
            Self::HostTooLong => f.write_str("secret hostname is longer than 253 bytes"),
            Self::BadHostByte(b) => {
                write!(f, "secret hostname contains byte {b:#04x}; only printable ASCII is allowed")
            }
            Self::TrailingBytes => f.write_str("dd secret must be exactly 17 bytes (dd + 16-byte key)"),
        }
    }
}

impl std::error::Error for SecretError {}

impl Secret {
    /// Builds a FakeTLS (`ee`) secret from a key and a hostname.
    pub fn fake_tls(key: [u8; KEY_LEN], host: &str) -> Result<Self, SecretError> {
        validate_key(&key)?;
        validate_host(host.as_bytes())?;
        Ok(Self { kind: SecretKind::FakeTls, key, host: host.to_owned() })
    }

    /// Builds a secured (`dd`) secret from a key.
    pub fn secured(key: [u8; KEY_LEN]) -> Result<Self, SecretError> {
        validate_key(&key)?;
        Ok(Self { kind: SecretKind::Secured, key, host: String::new() })
    }

    /// Parses the binary form (`ee|key|host` or `dd|key`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let [first, rest @ ..] = bytes else {
            return Err(SecretError::Empty);
        };
        if rest.is_empty() {
            return Err(SecretError::TooShort);
        }
        let kind = match first {
            0xee => SecretKind::FakeTls,
            0xdd => SecretKind::Secured,
            other => return Err(SecretError::UnknownKind(*other)),
        };
        let (key, host) = rest.split_at_checked(KEY_LEN).ok_or(SecretError::KeyTooShort)?;
        let mut key_arr = [0u8; KEY_LEN];
        key_arr.copy_from_slice(key);
        match kind {
            SecretKind::FakeTls => {
                let host = core::str::from_utf8(host).map_err(|_| {
                    SecretError::BadHostByte(host.iter().copied().find(|b| !b.is_ascii()).unwrap_or(0))
                })?;
                Self::fake_tls(key_arr, host)
            }
            SecretKind::Secured => {
                if !host.is_empty() {
                    return Err(SecretError::TrailingBytes);
                }
                Self::secured(key_arr)
            }
        }
    }

    /// Parses the text form: hex first, then unpadded base64url.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let mut buf = [0u8; 1 + KEY_LEN + MAX_HOST_LEN + 1];
        let decoded = decode_hex(text, &mut buf)
            .or_else(|| base64url::decode(text.as_bytes(), &mut buf))
            .ok_or(SecretError::NotHexOrBase64)?;
        let result = Self::from_bytes(&buf[..decoded]);
        buf.zeroize();
        result
    }

    /// Which transport this secret selects.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The 16-byte key. Only the core and the client encoder need it.
    pub(crate) fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The fronting hostname (empty for `dd` secrets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + KEY_LEN + self.host.len());
        out.push(self.kind.tag_byte());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(self.host.as_bytes());
        out
    }

    /// Lowercase hex text form.
    pub fn to_hex(&self) -> String {
        let bytes = self.to_bytes();
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in &bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Unpadded base64url text form (what mtg prints by default).
    pub fn to_base64url(&self) -> String {
        base64url::encode(&self.to_bytes())
    }

    /// The bare 16-byte key as 32 hex characters (what @MTProxybot asks for).
    pub fn key_hex(&self) -> String {
        let mut out = String::with_capacity(KEY_LEN * 2);
        for b in &self.key {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn validate_key(key: &[u8; KEY_LEN]) -> Result<(), SecretError> {
    if key.iter().all(|&b| b == 0) {
        return Err(SecretError::ZeroKey);
    }
    Ok(())
}

fn validate_host(host: &[u8]) -> Result<(), SecretError> {
    if host.is_empty() {
        return Err(SecretError::MissingHost);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(SecretError::HostTooLong);
    }
    if let Some(&b) = host.iter().find(|&&b| !(0x21..=0x7e).contains(&b)) {
        return Err(SecretError::BadHostByte(b));
    }
    Ok(())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex into `out`; `None` if the text is not even-length hex or does not fit.
fn decode_hex(text: &str, out: &mut [u8]) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() / 2 > out.len() {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(bytes.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTG_SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";

    #[test]
    fn parses_reference_hex_secret() {
        let s = Secret::parse(MTG_SECRET).unwrap();
        assert_eq!(s.kind(), SecretKind::FakeTls);
        assert_eq!(s.host(), "storage.googleapis.com");
        assert_eq!(s.key_hex(), "367a189aee18fa31c190054efd4a8e95");
        assert_eq!(s.to_hex(), MTG_SECRET);
    }

    #[test]
    fn readme_examples_are_the_same_secret_in_both_forms() {
        let b64 = Secret::parse("7ibaERuTSGPH1RdztfYnN4tnb29nbGUuY29t").unwrap();
        assert_eq!(b64.host(), "google.com");
        let hex = Secret::parse("ee473ce5d4958eb5f968c87680a23854a0676f6f676c652e636f6d").unwrap();
        assert_eq!(hex.host(), "google.com");
        assert_eq!(b64.to_base64url(), "7ibaERuTSGPH1RdztfYnN4tnb29nbGUuY29t");
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("ee"), Err(SecretError::TooShort));
        assert_eq!(Secret::parse("0011"), Err(SecretError::UnknownKind(0)));
        assert_eq!(Secret::parse("ee0102"), Err(SecretError::KeyTooShort));
        assert_eq!(
            Secret::parse("ee00000000000000000000000000000000676f6f676c652e636f6d"),
            Err(SecretError::ZeroKey)
        );
        assert_eq!(Secret::parse("ee367a189aee18fa31c190054efd4a8e95"), Err(SecretError::MissingHost));
        assert_eq!(Secret::parse("dd367a189aee18fa31c190054efd4a8e9500"), Err(SecretError::TrailingBytes));
        assert_eq!(Secret::parse("not a secret!"), Err(SecretError::NotHexOrBase64));
        // Standard-alphabet base64 with padding is refused, as mtg does.
        assert_eq!(
            Secret::parse("7ibaERuTSGPH1RdztfYnN4tnb29nbGUuY29t+/=="),
            Err(SecretError::NotHexOrBase64)
        );
    }

    #[test]
    fn dd_secret_round_trips() {
        let s = Secret::parse("dd367a189aee18fa31c190054efd4a8e95").unwrap();
        assert_eq!(s.kind(), SecretKind::Secured);
        assert_eq!(s.host(), "");
        assert_eq!(Secret::parse(&s.to_base64url()).unwrap(), s);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = Secret::parse(MTG_SECRET).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("367a189a"), "{shown}");
    }
}
