//! Bytes on the wire without per-byte crypto: pre-built ApplicationData records whose payload
//! is opaque to the proxy (it decrypts and re-encrypts without checking), and a record
//! skimmer that counts payload bytes by reading only record headers.

use mtg_proto::tls::record::{HEADER_LEN, MAX_RECORD_PAYLOAD, TYPE_APPLICATION_DATA, VERSION_TLS12};
use rand::RngCore;

/// Payload of each record the bulk client sends (the largest the proxy itself writes).
pub const BULK_RECORD: usize = MAX_RECORD_PAYLOAD;

/// How a subject frames what it sends to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// FakeTLS records: count payload only (the proxy).
    Tls,
    /// Raw bytes: count everything (the plain relay).
    Raw,
}

/// `count` back-to-back ApplicationData records of `payload_len` random bytes each.
///
/// Panics if `payload_len` does not fit a record's length field.
pub fn records(count: usize, payload_len: usize) -> Vec<u8> {
    assert!(u16::try_from(payload_len).is_ok(), "record payload too long");
    let mut out = Vec::with_capacity(count * (HEADER_LEN + payload_len));
    let mut rng = rand::rng();
    for _ in 0..count {
        out.push(TYPE_APPLICATION_DATA);
        out.extend_from_slice(&VERSION_TLS12);
        out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        let at = out.len();
        out.resize(at + payload_len, 0);
        rng.fill_bytes(&mut out[at..]);
    }
    out
}

/// `len` random bytes (what the fake DC sends: the proxy decrypts it without checking).
pub fn garbage(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand::rng().fill_bytes(&mut out);
    out
}

/// Counts the payload bytes of a record stream fed in arbitrary pieces.
#[derive(Debug, Clone, Default)]
pub struct Skimmer {
    header: [u8; HEADER_LEN],
    header_have: usize,
    payload_left: usize,
}

impl Skimmer {
    /// Feeds received bytes; returns how many of them were record payload.
    pub fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut payload = 0;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                payload += n;
                data = &data[n..];
            } else {
                let n = (HEADER_LEN - self.header_have).min(data.len());
                self.header[self.header_have..self.header_have + n].copy_from_slice(&data[..n]);
                self.header_have += n;
                data = &data[n..];
                if self.header_have == HEADER_LEN {
                    self.header_have = 0;
                    self.payload_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
            }
        }
        payload
    }
}

/// Counts bytes as a subject's client sees them.
#[derive(Debug, Clone)]
pub struct Counter {
    framing: Framing,
    skimmer: Skimmer,
}

impl Counter {
    /// A counter for `framing`.
    pub fn new(framing: Framing) -> Self {
        Self { framing, skimmer: Skimmer::default() }
    }

    /// Payload bytes among `data`.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        match self.framing {
            Framing::Tls => self.skimmer.feed(data),
            Framing::Raw => data.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skimmer_counts_payload_across_splits() {
        let stream = records(3, 1000);
        assert_eq!(stream.len(), 3 * 1005);
        for split in [1, 2, 5, 7, 1004, 1005, 1006, 3014] {
            let mut s = Skimmer::default();
            let total: usize = stream.chunks(split).map(|c| s.feed(c)).sum();
            assert_eq!(total, 3000, "split {split}");
        }
    }

    #[test]
    fn raw_counter_counts_everything() {
        assert_eq!(Counter::new(Framing::Raw).feed(&records(1, 10)), 15);
        assert_eq!(Counter::new(Framing::Tls).feed(&records(1, 10)), 10);
    }
}
