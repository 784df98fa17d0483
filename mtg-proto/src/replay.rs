//! Anti-replay: remembers ClientHello session ids (and `dd` frames) and reports repeats
//! (reference §4.d).

use rand_core::RngCore;
use sha2::{Digest, Sha256};

/// A set of recently seen handshake keys. The app owns one instance and shares it.
pub trait ReplayCache {
    /// Records `key` and reports whether it was (probably) seen before.
    fn check_and_insert(&mut self, key: &[u8]) -> bool;
}

impl<T: ReplayCache + ?Sized> ReplayCache for &mut T {
    fn check_and_insert(&mut self, key: &[u8]) -> bool {
        (**self).check_and_insert(key)
    }
}

/// Anti-replay switched off: nothing is ever a replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplayCheck;

impl ReplayCache for NoReplayCheck {
    fn check_and_insert(&mut self, _key: &[u8]) -> bool {
        false
    }
}

/// A stable Bloom filter (Deng & Rafiei) with 1-bit cells, as mtg's anti-replay cache: before
/// each insert `p` adjacent cells from a pseudo-random start are cleared, so old entries fade
/// and the false-positive rate stays bounded however many keys arrive.
///
/// Keys are hashed with SHA-256 under a random salt drawn at construction, so nobody outside can
/// aim keys at chosen cells.
#[derive(Clone)]
pub struct StableBloomFilter {
    bits: Vec<u64>,
    cells: u64,
    hashes: u32,
    decrements: u64,
    salt: [u8; 16],
}

impl core::fmt::Debug for StableBloomFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StableBloomFilter")
            .field("cells", &self.cells)
            .field("hashes", &self.hashes)
            .field("decrements", &self.decrements)
            .finish_non_exhaustive()
    }
}

impl StableBloomFilter {
    /// A filter of `max_size_bytes` bytes (cells = bytes × 8, at least 64) for the target
    /// false-positive `error_rate` (0 < rate < 1; values outside are clamped).
    pub fn new(max_size_bytes: usize, error_rate: f64, rng: &mut (impl RngCore + ?Sized)) -> Self {
        let cells = (max_size_bytes.saturating_mul(8)).max(64) as u64;
        let rate = if error_rate.is_finite() { error_rate.clamp(1e-12, 0.5) } else { 0.001 };
        let hashes = ((1.0 / rate).log2().ceil() as u32 / 2).max(1);
        let decrements = optimal_stable_p(cells, hashes, rate);
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        Self { bits: vec![0; cells.div_ceil(64) as usize], cells, hashes, decrements, salt }
    }

    /// Number of cells (bits).
    pub fn cells(&self) -> u64 {
        self.cells
    }

    /// Number of hash functions `k`.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// Cells cleared per insert `p`.
    pub fn decrements(&self) -> u64 {
        self.decrements
    }

    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64, on: bool) {
        let word = &mut self.bits[(i / 64) as usize];
        if on {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
    }
}

/// BoomFilters' `OptimalStableP` for 1-bit cells.
fn optimal_stable_p(cells: u64, hashes: u32, rate: f64) -> u64 {
    let k = f64::from(hashes);
    let sub = 1.0 - rate.powf(1.0 / k);
    let denom = (1.0 / sub - 1.0) * (1.0 / k - 1.0 / cells as f64);
    let p = 1.0 / denom;
    if p.is_finite() && p >= 1.0 { (p as u64).min(cells) } else { 1 }
}

impl ReplayCache for StableBloomFilter {
    fn check_and_insert(&mut self, key: &[u8]) -> bool {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(key);
        let d = h.finalize();
        let lo = u64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
        let hi = u64::from(u32::from_le_bytes([d[4], d[5], d[6], d[7]]));
        let start = u64::from_le_bytes([d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]]) % self.cells;
        let cells = self.cells;
        let index = |i: u32| (lo + hi * u64::from(i)) % cells;

        let seen = (0..self.hashes).all(|i| self.get(index(i)));
        for j in 0..self.decrements {
            self.set((start + j) % cells, false);
        }
        for i in 0..self.hashes {
            self.set(index(i), true);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mtg_default_parameters() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let f = StableBloomFilter::new(1024 * 1024, 0.001, &mut rng);
        assert_eq!(f.cells(), 8 * 1024 * 1024);
        assert_eq!(f.hashes(), 5);
        assert_eq!(f.decrements(), 14);
    }

    #[test]
    fn second_insert_is_a_replay() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        let mut f = StableBloomFilter::new(64 * 1024, 0.001, &mut rng);
        assert!(!f.check_and_insert(b"session-a"));
        assert!(!f.check_and_insert(b"session-b"));
        assert!(f.check_and_insert(b"session-a"));
        assert!(f.check_and_insert(b"session-b"));
    }

    #[test]
    fn false_positive_rate_stays_near_target() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut f = StableBloomFilter::new(64 * 1024, 0.001, &mut rng);
        let mut false_positives = 0;
        for i in 0u64..200_000 {
            if f.check_and_insert(&i.to_le_bytes()) {
                false_positives += 1;
            }
        }
        // Far more keys than cells: a plain Bloom filter would saturate; a stable one stays low.
        assert!(false_positives < 2_000, "{false_positives} false positives in 200000");
    }
}
