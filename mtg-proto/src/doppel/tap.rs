//! Watching a real HTTPS exchange: [`RecordTap`] finds TLS records in the server's bytes as
//! they arrive, [`FlightObserver`] turns record arrivals and the client's writes into
//! inter-record durations and the certificate-flight size (reference §4.f).
//!
//! Both are total over any input: bytes that stop looking like TLS end the observation.

use core::time::Duration;

use crate::tls::record::{HEADER_LEN, TYPE_APPLICATION_DATA, TYPE_CHANGE_CIPHER_SPEC};

/// One complete record the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSeen {
    /// Record type (`0x14` ChangeCipherSpec, `0x16` handshake, `0x17` ApplicationData, …).
    pub kind: u8,
    /// Payload length.
    pub len: u16,
}

/// Incremental TLS record parser over the server→client byte stream.
#[derive(Debug, Clone, Default)]
pub struct RecordTap {
    header: [u8; HEADER_LEN],
    header_len: usize,
    remaining: usize,
    lost: bool,
}

impl RecordTap {
    /// A tap at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the stream stopped looking like TLS records (later bytes are ignored).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Feeds the next bytes received; calls `seen` for every record completed by them.
    pub fn feed(&mut self, mut bytes: &[u8], mut seen: impl FnMut(RecordSeen)) {
        while !bytes.is_empty() && !self.lost {
            if self.header_len < HEADER_LEN {
                let take = (HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < HEADER_LEN {
                    return;
                }
                let [kind, major, _, hi, lo] = self.header;
                if !(0x14..=0x18).contains(&kind) || major != 0x03 {
                    self.lost = true;
                    return;
                }
                self.remaining = usize::from(u16::from_be_bytes([hi, lo]));
            }
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                let [kind, _, _, hi, lo] = self.header;
                self.header_len = 0;
                seen(RecordSeen { kind, len: u16::from_be_bytes([hi, lo]) });
            }
        }
    }
}

/// Turns one connection's record arrivals and client writes into samples.
///
/// * Duration: time between an ApplicationData record and the record (of any type) before
///   it.
/// * Certificate-flight size: ApplicationData payload after the server's ChangeCipherSpec
///   and before the client's first ApplicationData record after it (TLS 1.3's encrypted
///   EncryptedExtensions, Certificate, CertificateVerify, Finished; the client's answer is its
///   encrypted Finished — its own ChangeCipherSpec, which some clients send as soon as the
///   ServerHello arrives, does not end the flight).
#[derive(Debug, Clone, Default)]
pub struct FlightObserver {
    tap: RecordTap,
    client_tap: RecordTap,
    previous: Option<Duration>,
    server_ccs: bool,
    client_answered: bool,
    cert_bytes: u32,
}

impl FlightObserver {
    /// An observer at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes the server sent arrived at `now` (time since any fixed origin); calls `duration` for every ApplicationData
    /// record they complete that follows an earlier record.
    pub fn server_bytes(&mut self, bytes: &[u8], now: Duration, mut duration: impl FnMut(Duration)) {
        let mut tap = core::mem::take(&mut self.tap);
        tap.feed(bytes, |record| {
            if record.kind == TYPE_APPLICATION_DATA {
                if let Some(previous) = self.previous {
                    duration(now.saturating_sub(previous));
                }
                if self.server_ccs && !self.client_answered {
                    self.cert_bytes = self.cert_bytes.saturating_add(u32::from(record.len));
                }
            } else if record.kind == TYPE_CHANGE_CIPHER_SPEC {
                self.server_ccs = true;
            }
            self.previous = Some(now);
        });
        self.tap = tap;
    }

    /// The client wrote `bytes` (its first ApplicationData record after the server's CCS ends
    /// the certificate flight).
    pub fn client_bytes(&mut self, bytes: &[u8]) {
        let mut answered = false;
        self.client_tap.feed(bytes, |record| answered |= record.kind == TYPE_APPLICATION_DATA);
        if answered && self.server_ccs {
            self.client_answered = true;
        }
    }

    /// The certificate-flight size, once the client answered a flight that had one.
    pub fn cert_size(&self) -> Option<u32> {
        (self.client_answered && self.cert_bytes > 0).then_some(self.cert_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xAA, len));
        r
    }

    #[test]
    fn records_split_anywhere_are_all_found() {
        let mut stream = record(0x16, 90);
        stream.extend(record(0x14, 1));
        stream.extend(record(0x17, 3000));
        stream.extend(record(0x17, 0));
        for cut in 1..stream.len() {
            let mut tap = RecordTap::new();
            let mut seen = Vec::new();
            tap.feed(&stream[..cut], |r| seen.push(r));
            tap.feed(&stream[cut..], |r| seen.push(r));
            let want =
                [(0x16, 90), (0x14, 1), (0x17, 3000), (0x17, 0)].map(|(kind, len)| RecordSeen { kind, len });
            assert_eq!(seen, want, "cut at {cut}");
        }
    }

    #[test]
    fn non_tls_bytes_stop_the_tap() {
        let mut tap = RecordTap::new();
        let mut seen = 0;
        tap.feed(b"HTTP/1.1 200 OK\r\n\r\n", |_| seen += 1);
        assert!(tap.lost());
        tap.feed(&record(0x17, 5), |_| seen += 1);
        assert_eq!(seen, 0);
    }

    #[test]
    fn a_tls13_exchange_gives_durations_and_the_cert_size() {
        let t0 = Duration::from_secs(1000);
        let ms = |n| t0 + Duration::from_millis(n);
        let mut obs = FlightObserver::new();
        let mut durations = Vec::new();
        // ServerHello + CCS + two encrypted flight records in one read at 10 ms.
        let mut first = record(0x16, 122);
        first.extend(record(0x14, 1));
        first.extend(record(0x17, 2500));
        first.extend(record(0x17, 1800));
        obs.client_bytes(&record(0x16, 512)); // the ClientHello: before the CCS, ends nothing.
        obs.server_bytes(&first, ms(10), |d| durations.push(d));
        obs.client_bytes(&record(0x14, 1)); // the client's CCS: not an answer either.
        // A flight record split over two reads.
        let third = record(0x17, 300);
        obs.server_bytes(&third[..100], ms(14), |d| durations.push(d));
        obs.server_bytes(&third[100..], ms(15), |d| durations.push(d));
        assert_eq!(obs.cert_size(), None, "the client has not answered yet");
        let finished = record(0x17, 53);
        obs.client_bytes(&finished[..3]);
        assert_eq!(obs.cert_size(), None, "half a header is not a record yet");
        obs.client_bytes(&finished[3..]);
        obs.server_bytes(&record(0x17, 16401), ms(40), |d| durations.push(d));
        assert_eq!(obs.cert_size(), Some(2500 + 1800 + 300));
        let want: Vec<Duration> = [0, 0, 5, 25].map(Duration::from_millis).to_vec();
        assert_eq!(durations, want);
    }
}
