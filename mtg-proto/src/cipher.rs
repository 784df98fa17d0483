//! AES-256-CTR keystreams used by obfuscated2 and the key schedules of both legs.
//!
//! CTR mode is done here over the `aes` block cipher rather than through the `ctr` crate: the
//! counter blocks are built in batches of [`BATCH_BLOCKS`] and encrypted with one
//! `encrypt_blocks` call, which lets the `aes` crate use its widest (VAES) backend. On the
//! reference machine that is ~3× faster than `ctr::Ctr128BE` (0.06 vs 0.17 ns/byte).

use aes::Aes256Enc;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::secret::KEY_LEN;

/// Counter blocks encrypted per `encrypt_blocks` call: a multiple of the 64-block batch of the
/// `aes` crate's VAES-512 backend (smaller batches fall back to 8-block AES-NI: 2× slower).
const BATCH_BLOCKS: usize = 128;
const BLOCK: usize = 16;
const BATCH_BYTES: usize = BATCH_BLOCKS * BLOCK;

/// One direction's AES-256-CTR keystream (128-bit big-endian counter).
///
/// The key schedule is zeroized on drop (the `aes` `zeroize` feature), the counter and the
/// unused keystream bytes by `Drop` here. The per-call keystream batches on the stack are not
/// wiped: they are cipher output, not key material, and wiping 4 KiB with volatile writes per
/// call would cost a third of the relay's time.
pub(crate) struct Keystream {
    aes: Aes256Enc,
    counter: u128,
    /// Keystream bytes of the last block not used yet: `spare[spare_at..]`.
    spare: [u8; BLOCK],
    spare_at: usize,
}

impl Drop for Keystream {
    fn drop(&mut self) {
        self.counter.zeroize();
        self.spare.zeroize();
    }
}

impl core::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Keystream(<redacted>)")
    }
}

impl Keystream {
    /// A keystream from a raw key and IV (the IV is the initial big-endian counter).
    pub(crate) fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        Self {
            aes: Aes256Enc::new(key.into()),
            counter: u128::from_be_bytes(*iv),
            spare: [0; BLOCK],
            spare_at: BLOCK,
        }
    }

    /// XORs the keystream into `data`, advancing the position.
    #[inline]
    pub(crate) fn apply(&mut self, data: &mut [u8]) {
        let data = self.use_spare(data);
        if data.is_empty() {
            return;
        }
        let mut chunks = data.chunks_exact_mut(BATCH_BYTES);
        let mut ctr = Counters::new(self.counter);
        let mut ks = [aes::Block::default(); BATCH_BLOCKS];
        for chunk in &mut chunks {
            self.fill(&mut ctr, &mut ks);
            xor_blocks(chunk, &ks);
        }
        self.apply_tail(chunks.into_remainder(), &mut ctr, &mut ks);
    }

    /// XORs two keystreams into `data` in one pass (decrypt with `a`, encrypt with `b`).
    #[inline]
    pub(crate) fn apply_pair(a: &mut Self, b: &mut Self, data: &mut [u8]) {
        // Both streams must sit on a block boundary to share batches; otherwise align first.
        let lead = a.spare_len().max(b.spare_len()).min(data.len());
        let lead = if a.spare_len() == b.spare_len() { lead } else { data.len() };
        let (head, rest) = data.split_at_mut(lead);
        a.apply(head);
        b.apply(head);
        if a.spare_len() != 0 || b.spare_len() != 0 {
            a.apply(rest);
            b.apply(rest);
            return;
        }
        if rest.is_empty() {
            return;
        }
        let mut chunks = rest.chunks_exact_mut(BATCH_BYTES);
        let (mut ca, mut cb) = (Counters::new(a.counter), Counters::new(b.counter));
        let mut ka = [aes::Block::default(); BATCH_BLOCKS];
        let mut kb = [aes::Block::default(); BATCH_BLOCKS];
        for chunk in &mut chunks {
            a.fill(&mut ca, &mut ka);
            b.fill(&mut cb, &mut kb);
            for ((word, ka), kb) in chunk.chunks_exact_mut(BLOCK).zip(&ka).zip(&kb) {
                let x = load(word) ^ load(ka) ^ load(kb);
                word.copy_from_slice(&x.to_ne_bytes());
            }
        }
        let tail = chunks.into_remainder();
        a.apply_tail(tail, &mut ca, &mut ka);
        b.apply_tail(tail, &mut cb, &mut kb);
    }

    fn spare_len(&self) -> usize {
        BLOCK - self.spare_at
    }

    /// Uses leftover keystream bytes; returns the part of `data` still to process.
    fn use_spare<'d>(&mut self, data: &'d mut [u8]) -> &'d mut [u8] {
        let n = self.spare_len().min(data.len());
        let (head, rest) = data.split_at_mut(n);
        for (d, k) in head.iter_mut().zip(&self.spare[self.spare_at..]) {
            *d ^= k;
        }
        self.spare_at += n;
        rest
    }

    /// Encrypts the next `out.len()` counter values into `out`, building them in `ctr`.
    fn fill(&mut self, ctr: &mut Counters, out: &mut [aes::Block]) {
        let blocks = ctr.next(self.counter, out.len());
        self.counter = self.counter.wrapping_add(blocks.len() as u128);
        // Both slices hold `out.len()` blocks by construction, so this cannot fail.
        let _ = self.aes.encrypt_blocks_b2b(blocks, out);
    }

    /// Handles fewer than a batch of bytes at a block boundary, keeping unused keystream.
    fn apply_tail(&mut self, tail: &mut [u8], ctr: &mut Counters, ks: &mut [aes::Block; BATCH_BLOCKS]) {
        if tail.is_empty() {
            return;
        }
        let blocks = tail.len().div_ceil(BLOCK);
        self.fill(ctr, &mut ks[..blocks]);
        xor_blocks(tail, &ks[..blocks]);
        let used = tail.len() % BLOCK;
        if used != 0 {
            self.spare.copy_from_slice(&ks[blocks - 1]);
            self.spare_at = used;
        }
    }
}

/// One call's batch of counter blocks (on the stack, kept across the batches of the call).
///
/// The blocks are encrypted into a separate keystream buffer, so they survive encryption:
/// they are written whole once per call (no zeroing first), and each later batch rewrites
/// only their low 64-bit halves (the high half changes once in 2^64 blocks).
struct Counters {
    /// The counters `first`, `first + 1`, … as big-endian blocks.
    blocks: [aes::Block; BATCH_BLOCKS],
    first: u128,
}

impl Counters {
    /// The batch from `counter` on.
    fn new(counter: u128) -> Self {
        let blocks = core::array::from_fn(|i| counter.wrapping_add(i as u128).to_be_bytes().into());
        Self { blocks, first: counter }
    }

    /// Whether the batch from `counter` on has one high half: its low half does not wrap.
    fn one_high_half(counter: u128) -> bool {
        (counter as u64).checked_add(BATCH_BLOCKS as u64).is_some()
    }

    /// The first `n` (at most [`BATCH_BLOCKS`]) big-endian counter blocks from `counter` on.
    fn next(&mut self, counter: u128, n: usize) -> &[aes::Block] {
        if counter != self.first {
            if (counter >> 64) == (self.first >> 64)
                && Self::one_high_half(counter)
                && Self::one_high_half(self.first)
            {
                for (block, low) in self.blocks.iter_mut().zip(counter as u64..) {
                    block[8..].copy_from_slice(&low.to_be_bytes());
                }
                self.first = counter;
            } else {
                *self = Self::new(counter);
            }
        }
        &self.blocks[..n]
    }
}

fn xor_blocks(data: &mut [u8], ks: &[aes::Block]) {
    let full = data.len() / BLOCK;
    let mut words = data.chunks_exact_mut(BLOCK);
    for (word, k) in (&mut words).zip(ks) {
        let x = load(word) ^ load(k);
        word.copy_from_slice(&x.to_ne_bytes());
    }
    if let Some(k) = ks.get(full) {
        for (d, k) in words.into_remainder().iter_mut().zip(k.iter()) {
            *d ^= k;
        }
    }
}

/// Reads 16 bytes as one word (`bytes` is exactly one block long by construction).
#[inline(always)]
fn load(bytes: &[u8]) -> u128 {
    let mut w = [0u8; BLOCK];
    w.copy_from_slice(bytes);
    u128::from_ne_bytes(w)
}

/// The raw key and IV of one keystream, kept only where fast mode needs to hand a leg's
/// download key to the DC (`obfs2::initiate_fast`); zeroized on drop.
pub(crate) struct StreamKey {
    key: [u8; 32],
    iv: [u8; 16],
}

impl Drop for StreamKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl core::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

impl StreamKey {
    /// The keystream this key and IV start (at position 0).
    pub(crate) fn keystream(&self) -> Keystream {
        Keystream::new(&self.key, &self.iv)
    }

    /// Writes the 48 frame bytes (`frame[8..56]`) whose *answer* keystream, derived without a
    /// secret, is this one: `key ‖ iv` reversed (see [`LegKeys::derive`]).
    pub(crate) fn write_as_answer_material(&self, material: &mut [u8]) {
        material[..32].copy_from_slice(&self.key);
        material[32..48].copy_from_slice(&self.iv);
        material[..48].reverse();
    }
}

/// Both keystreams of one obfuscated2 leg, derived from the 48 key+IV bytes of a frame.
#[derive(Debug)]
pub(crate) struct LegKeys {
    /// Keystream of the frame's sender (key = frame[8..40], IV = frame[40..56]).
    pub(crate) initiator_to_responder: Keystream,
    /// Keystream of the answer (from the same 48 bytes reversed).
    pub(crate) responder_to_initiator: Keystream,
    /// Key and IV of [`Self::responder_to_initiator`].
    pub(crate) answer_key: StreamKey,
}

impl LegKeys {
    /// Derives both keystreams from `frame[8..56]`, mixing in `secret` with SHA-256 when given.
    pub(crate) fn derive(frame: &[u8; 64], secret: Option<&[u8; KEY_LEN]>) -> Self {
        let mut material = [0u8; 48];
        material.copy_from_slice(&frame[8..56]);
        let forward = derive_one(&material, secret);
        material.reverse();
        let answer_key = derive_one(&material, secret);
        material.zeroize();
        Self {
            initiator_to_responder: forward.keystream(),
            responder_to_initiator: answer_key.keystream(),
            answer_key,
        }
    }
}

fn derive_one(material: &[u8; 48], secret: Option<&[u8; KEY_LEN]>) -> StreamKey {
    let mut key = StreamKey { key: [0u8; 32], iv: [0u8; 16] };
    match secret {
        Some(secret) => {
            let mut h = Sha256::new();
            h.update(&material[..32]);
            h.update(secret);
            key.key.copy_from_slice(&h.finalize());
        }
        None => key.key.copy_from_slice(&material[..32]),
    }
    key.iv.copy_from_slice(&material[32..48]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctr::cipher::{KeyIvInit, StreamCipher};
    use proptest::prelude::*;

    fn reference(key: &[u8; 32], iv: &[u8; 16]) -> ctr::Ctr128BE<aes::Aes256> {
        ctr::Ctr128BE::<aes::Aes256>::new(key.into(), iv.into())
    }

    proptest! {
        #[test]
        fn matches_the_ctr_crate_for_any_split(
            key in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
            data in prop::collection::vec(any::<u8>(), 0..12_000),
            splits in prop::collection::vec(0usize..5000, 0..8),
        ) {
            // Calls of several batches (the counter blocks kept across them) and odd offsets.
            let mut ours = Keystream::new(&key, &iv);
            let mut theirs = reference(&key, &iv);
            let mut a = data.clone();
            let mut b = data;
            theirs.apply_keystream(&mut b);
            let mut pos = 0;
            for s in splits {
                let end = (pos + s).min(a.len());
                ours.apply(&mut a[pos..end]);
                pos = end;
            }
            ours.apply(&mut a[pos..]);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn pair_equals_two_single_passes(
            k1 in any::<[u8; 32]>(), k2 in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
            data in prop::collection::vec(any::<u8>(), 0..3000),
            splits in prop::collection::vec(0usize..700, 0..8),
            offset_b in 0usize..20,
        ) {
            let (mut a1, mut b1) = (Keystream::new(&k1, &iv), Keystream::new(&k2, &iv));
            let (mut a2, mut b2) = (reference(&k1, &iv), reference(&k2, &iv));
            // Put the two streams at different positions inside a block.
            let mut skip = vec![0u8; offset_b];
            b1.apply(&mut skip);
            b2.apply_keystream(&mut skip);
            let mut ours = data.clone();
            let mut theirs = data;
            a2.apply_keystream(&mut theirs);
            b2.apply_keystream(&mut theirs);
            let mut pos = 0;
            for s in splits {
                let end = (pos + s).min(ours.len());
                Keystream::apply_pair(&mut a1, &mut b1, &mut ours[pos..end]);
                pos = end;
            }
            Keystream::apply_pair(&mut a1, &mut b1, &mut ours[pos..]);
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn counter_wraps_like_the_ctr_crate(
            key in any::<[u8; 32]>(),
            data in prop::collection::vec(any::<u8>(), 0..5000),
            high in any::<[u8; 8]>(),
            below_wrap in 0u64..300,
        ) {
            // Whole 128-bit wrap (high half all ones) and a low-half carry inside a batch.
            let mut iv = [0xff; 16];
            if high != [0xff; 8] {
                iv[..8].copy_from_slice(&high);
            }
            iv[8..].copy_from_slice(&(u64::MAX - below_wrap).to_be_bytes());
            let mut a = data.clone();
            let mut b = data;
            Keystream::new(&key, &iv).apply(&mut a);
            reference(&key, &iv).apply_keystream(&mut b);
            prop_assert_eq!(a, b);
        }
    }
}
