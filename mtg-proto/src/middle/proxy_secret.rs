//! The proxy secret from `getProxySecret`: the shared key material of every middle proxy.

use core::fmt;

use zeroize::Zeroize;

/// Shortest proxy secret accepted (C `MIN_PWD_LEN`).
pub const MIN_LEN: usize = 32;
/// Longest proxy secret accepted (C `MAX_PWD_LEN`).
pub const MAX_LEN: usize = 256;

/// A proxy secret of the wrong size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySecretError {
    /// The size received.
    pub len: usize,
}

impl fmt::Display for ProxySecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proxy secret of {} bytes, expected {MIN_LEN}..={MAX_LEN}", self.len)
    }
}

impl std::error::Error for ProxySecretError {}

/// A validated proxy secret (32..=256 bytes). Zeroized on drop; `Debug` shows only its length
/// and `key_select` (which travels in plaintext anyway).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySecret {
    bytes: Vec<u8>,
}

impl Drop for ProxySecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for ProxySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxySecret({} bytes, key_select {:08x})", self.bytes.len(), self.key_select())
    }
}

impl ProxySecret {
    /// Validates the raw body of `getProxySecret`.
    pub fn new(bytes: &[u8]) -> Result<Self, ProxySecretError> {
        if !(MIN_LEN..=MAX_LEN).contains(&bytes.len()) {
            return Err(ProxySecretError { len: bytes.len() });
        }
        Ok(Self { bytes: bytes.to_vec() })
    }

    /// The secret's bytes (for the key derivation and for caching to disk).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first 4 bytes as sent in the nonce frame.
    pub fn key_select_bytes(&self) -> [u8; 4] {
        // The length is at least MIN_LEN: the first 4 bytes exist.
        let mut out = [0; 4];
        out.copy_from_slice(&self.bytes[..4]);
        out
    }

    /// `key_select`: the first 4 bytes as a little-endian u32 (`0xcafaf9c4` for today's secret).
    pub fn key_select(&self) -> u32 {
        u32::from_le_bytes(self.key_select_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_key_select() {
        assert_eq!(ProxySecret::new(&[0; 31]), Err(ProxySecretError { len: 31 }));
        assert_eq!(ProxySecret::new(&[0; 257]), Err(ProxySecretError { len: 257 }));
        let mut bytes = vec![0x11; 128];
        bytes[..4].copy_from_slice(&[0xc4, 0xf9, 0xfa, 0xca]);
        let s = ProxySecret::new(&bytes).unwrap();
        assert_eq!(s.key_select(), 0xcafa_f9c4);
        assert_eq!(s.key_select_bytes(), [0xc4, 0xf9, 0xfa, 0xca]);
        assert_eq!(format!("{s:?}"), "ProxySecret(128 bytes, key_select cafaf9c4)");
        assert!(ProxySecret::new(&[1; 32]).is_ok() && ProxySecret::new(&[1; 256]).is_ok());
    }
}
