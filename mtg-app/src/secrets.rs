//! Making new secrets.

use mtg_proto::{Secret, SecretError};
use rand::RngCore;

/// A new FakeTLS secret with a random key for `hostname`.
pub fn generate(hostname: &str, rng: &mut impl RngCore) -> Result<Secret, SecretError> {
    loop {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        match Secret::fake_tls(key, hostname) {
            Err(SecretError::ZeroKey) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_round_trips() {
        let s = generate("example.com", &mut rand::rng()).unwrap();
        assert_eq!(s.host(), "example.com");
        assert_eq!(Secret::parse(&s.to_base64url()).unwrap(), s);
        assert_eq!(Secret::parse(&s.to_hex()).unwrap(), s);
        assert!(generate("bad host", &mut rand::rng()).is_err());
    }
}
