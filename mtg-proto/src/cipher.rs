//! AES-256-CTR keystreams used by obfuscated2 and the key schedules of both legs.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::secret::KEY_LEN;

/// One direction's AES-256-CTR keystream (128-bit big-endian counter).
///
/// The key schedule lives inside and is zeroized on drop (the `aes`/`ctr` `zeroize` features).
pub(crate) struct Keystream(ctr::Ctr128BE<Aes256>);

impl core::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Keystream(<redacted>)")
    }
}

impl Keystream {
    /// A keystream from a raw key and IV.
    pub(crate) fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        Self(ctr::Ctr128BE::<Aes256>::new(key.into(), iv.into()))
    }

    /// XORs the keystream into `data`, advancing the position.
    #[inline]
    pub(crate) fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

/// Both keystreams of one obfuscated2 leg, derived from the 48 key+IV bytes of a frame.
#[derive(Debug)]
pub(crate) struct LegKeys {
    /// Keystream of the frame's sender (key = frame[8..40], IV = frame[40..56]).
    pub(crate) initiator_to_responder: Keystream,
    /// Keystream of the answer (from the same 48 bytes reversed).
    pub(crate) responder_to_initiator: Keystream,
}

impl LegKeys {
    /// Derives both keystreams from `frame[8..56]`, mixing in `secret` with SHA-256 when given.
    pub(crate) fn derive(frame: &[u8; 64], secret: Option<&[u8; KEY_LEN]>) -> Self {
        let mut material = [0u8; 48];
        material.copy_from_slice(&frame[8..56]);
        let forward = derive_one(&material, secret);
        material.reverse();
        let backward = derive_one(&material, secret);
        material.zeroize();
        Self { initiator_to_responder: forward, responder_to_initiator: backward }
    }
}

fn derive_one(material: &[u8; 48], secret: Option<&[u8; KEY_LEN]>) -> Keystream {
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    match secret {
        Some(secret) => {
            let mut h = Sha256::new();
            h.update(&material[..32]);
            h.update(secret);
            key.copy_from_slice(&h.finalize());
        }
        None => key.copy_from_slice(&material[..32]),
    }
    iv.copy_from_slice(&material[32..48]);
    let stream = Keystream::new(&key, &iv);
    key.zeroize();
    iv.zeroize();
    stream
}
