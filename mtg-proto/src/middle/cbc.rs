//! AES-256-CBC without a padding scheme, one state per direction for a connection's life: the
//! chaining value carries across calls and is never reset.
//!
//! Written here over the `aes` block cipher (as [`crate`]'s CTR keystream is) rather than with
//! the RustCrypto `cbc` crate: the mode is a dozen lines, decryption batches blocks through
//! one `decrypt_blocks` call so the `aes` crate can use its parallel backends, and it avoids a
//! dependency whose release line must track `aes`/`cipher` pre-releases.
//!
//! Both sides work on whole 16-byte blocks only. [`crate::middle::RpcReader`] holds back a
//! partial block of ciphertext until the rest arrives; [`CbcDecryptor::decrypt_prefix`] is the
//! primitive for that.

use core::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser,
    KeyInit,
};
use aes::{Aes256Dec, Aes256Enc, Block};
use zeroize::Zeroize;

use crate::middle::kdf::KeyIv;

/// The AES block size.
pub const BLOCK: usize = 16;
/// Blocks decrypted per `decrypt_blocks` call.
const BATCH: usize = 64;

/// The length given to a whole-block operation was not a multiple of [`BLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBlocks {
    /// The offending length.
    pub len: usize,
}

impl fmt::Display for NotBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CBC input of {} bytes is not a multiple of {BLOCK}", self.len)
    }
}

impl std::error::Error for NotBlocks {}

/// The encrypting direction. The key schedule (the `aes` `zeroize` feature) and the chaining
/// value are wiped on drop.
pub struct CbcEncryptor {
    aes: Aes256Enc,
    prev: [u8; BLOCK],
}

impl Drop for CbcEncryptor {
    fn drop(&mut self) {
        self.prev.zeroize();
    }
}

impl fmt::Debug for CbcEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CbcEncryptor(<redacted>)")
    }
}

impl CbcEncryptor {
    /// An encryptor from a derived key and IV.
    pub fn new(key_iv: &KeyIv) -> Self {
        Self::from_raw(key_iv.key(), key_iv.iv())
    }

    /// An encryptor from a raw key and IV.
    pub fn from_raw(key: &[u8; 32], iv: &[u8; BLOCK]) -> Self {
        Self { aes: Aes256Enc::new(key.into()), prev: *iv }
    }

    /// Encrypts `data` in place; it must be whole blocks, else nothing changes.
    pub fn encrypt_in_place(&mut self, data: &mut [u8]) -> Result<(), NotBlocks> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(NotBlocks { len: data.len() });
        }
        // One backend dispatch for the whole slice (not one per block): CBC encryption is
        // serial, so the gain is the per-call CPU-feature check and indirection.
        self.aes.encrypt_with_backend(EncryptChain { prev: &mut self.prev, data });
        Ok(())
    }
}

/// The CBC chain over whole blocks, run with the `aes` backend chosen once.
struct EncryptChain<'a> {
    prev: &'a mut [u8; BLOCK],
    data: &'a mut [u8],
}

impl BlockSizeUser for EncryptChain<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for EncryptChain<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let mut block = Block::from(*self.prev);
        for chunk in self.data.chunks_exact_mut(BLOCK) {
            for (b, c) in block.iter_mut().zip(chunk.iter()) {
                *b ^= c;
            }
            backend.encrypt_block_inplace(&mut block);
            chunk.copy_from_slice(&block);
        }
        self.prev.copy_from_slice(&block);
        block.zeroize();
    }
}

/// The decrypting direction. The key schedule and the chaining value are wiped on drop.
pub struct CbcDecryptor {
    aes: Aes256Dec,
    prev: [u8; BLOCK],
}

impl Drop for CbcDecryptor {
    fn drop(&mut self) {
        self.prev.zeroize();
    }
}

impl fmt::Debug for CbcDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CbcDecryptor(<redacted>)")
    }
}

impl CbcDecryptor {
    /// A decryptor from a derived key and IV.
    pub fn new(key_iv: &KeyIv) -> Self {
        Self::from_raw(key_iv.key(), key_iv.iv())
    }

    /// A decryptor from a raw key and IV.
    pub fn from_raw(key: &[u8; 32], iv: &[u8; BLOCK]) -> Self {
        Self { aes: Aes256Dec::new(key.into()), prev: *iv }
    }

    /// Decrypts `data` in place; it must be whole blocks, else nothing changes.
    pub fn decrypt_in_place(&mut self, data: &mut [u8]) -> Result<(), NotBlocks> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(NotBlocks { len: data.len() });
        }
        self.decrypt_prefix(data);
        Ok(())
    }

    /// Decrypts the longest whole-block prefix of `data` in place and returns its length; the
    /// ragged tail (under 16 bytes) is left untouched for the caller to complete later.
    pub fn decrypt_prefix(&mut self, data: &mut [u8]) -> usize {
        let whole = data.len() / BLOCK * BLOCK;
        let mut blocks = [Block::default(); BATCH];
        for chunk in data[..whole].chunks_mut(BATCH * BLOCK) {
            let n = chunk.len() / BLOCK;
            let batch = &mut blocks[..n];
            for (block, c) in batch.iter_mut().zip(chunk.chunks_exact(BLOCK)) {
                block.copy_from_slice(c);
            }
            self.aes.decrypt_blocks(batch);
            // Plaintext i = D(c_i) ^ c_{i-1}: walk backwards so c_{i-1} is still in `chunk`.
            let mut last = [0u8; BLOCK];
            last.copy_from_slice(&chunk[(n - 1) * BLOCK..]);
            for i in (0..n).rev() {
                let (before, this) = chunk.split_at_mut(i * BLOCK);
                let prev = before.get(before.len().saturating_sub(BLOCK)..).filter(|p| p.len() == BLOCK);
                let prev = prev.unwrap_or(&self.prev[..]);
                for ((out, d), p) in this[..BLOCK].iter_mut().zip(batch[i].iter()).zip(prev) {
                    *out = d ^ p;
                }
            }
            self.prev = last;
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // NIST SP 800-38A, F.2.5 (CBC-AES256.Encrypt) and F.2.6 (CBC-AES256.Decrypt).
    const KEY: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    const IV: &str = "000102030405060708090a0b0c0d0e0f";
    const PLAIN: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                         30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
    const CIPHER: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
                          39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b";

    fn key_iv() -> ([u8; 32], [u8; 16]) {
        (hex(KEY).try_into().unwrap(), hex(IV).try_into().unwrap())
    }

    #[test]
    fn nist_f_2_5_encrypt_across_calls() {
        let (key, iv) = key_iv();
        let mut enc = CbcEncryptor::from_raw(&key, &iv);
        let mut data = hex(PLAIN);
        let (a, b) = data.split_at_mut(16);
        enc.encrypt_in_place(a).unwrap();
        enc.encrypt_in_place(b).unwrap();
        assert_eq!(data, hex(CIPHER));
    }

    #[test]
    fn nist_f_2_6_decrypt_across_calls() {
        let (key, iv) = key_iv();
        let mut dec = CbcDecryptor::from_raw(&key, &iv);
        let mut data = hex(CIPHER);
        let (a, b) = data.split_at_mut(48);
        dec.decrypt_in_place(a).unwrap();
        dec.decrypt_in_place(b).unwrap();
        assert_eq!(data, hex(PLAIN));
    }

    #[test]
    fn ragged_lengths() {
        let (key, iv) = key_iv();
        let mut data = [7u8; 20];
        assert_eq!(CbcEncryptor::from_raw(&key, &iv).encrypt_in_place(&mut data), Err(NotBlocks { len: 20 }));
        assert_eq!(data, [7; 20]);
        let mut dec = CbcDecryptor::from_raw(&key, &iv);
        assert_eq!(dec.decrypt_prefix(&mut data), 16);
        assert_eq!(data[16..], [7; 4]);
        assert_eq!(dec.decrypt_prefix(&mut []), 0);
    }

    #[test]
    fn long_runs_cross_batches() {
        let (key, iv) = key_iv();
        let plain: Vec<u8> = (0..BLOCK * (BATCH * 2 + 3)).map(|i| (i * 7) as u8).collect();
        let mut data = plain.clone();
        CbcEncryptor::from_raw(&key, &iv).encrypt_in_place(&mut data).unwrap();
        let mut one_by_one = data.clone();
        CbcDecryptor::from_raw(&key, &iv).decrypt_in_place(&mut data).unwrap();
        assert_eq!(data, plain);
        let mut dec = CbcDecryptor::from_raw(&key, &iv);
        for block in one_by_one.chunks_mut(BLOCK) {
            dec.decrypt_in_place(block).unwrap();
        }
        assert_eq!(one_by_one, plain);
    }
}
