//! The shape of the fronting site's first flight, learned per kind of ClientHello, and what
//! the fake flight takes from it.
//!
//! ```text
//! learning: site's flight ──ObservedFlight::parse──► FlightStats::add(kind, flight)
//!           FlightStats::profile() ──► FlightProfile (Copy; one FlightShape per HelloKind)
//! handshake: FlightProfile + the client's hello ──► the fake ServerHello's cipher suite,
//!            extension order and key share, and the length of its one encrypted record
//! ```
//!
//! The fake flight keeps ONE ApplicationData record whatever the site sends: every Telegram
//! client reads exactly ServerHello, ChangeCipherSpec and one ApplicationData record as the
//! handshake answer and feeds any later record into the MTProto stream, where random bytes
//! break the connection (TDLib's `TlsInit::wait_hello_response`; telemt issue #759). That
//! record carries the site's whole encrypted flight length instead, so the flight's size on
//! the wire matches.

use std::collections::VecDeque;

use rand_core::RngCore;

use crate::tls::record::HEADER_LEN;
use crate::tls::server_flight::{ExtensionOrder, KeyShare, MAX_RECORDS, ObservedFlight};

/// Observations kept per kind of hello (older ones are dropped first).
pub const KEEP_FLIGHTS: usize = 32;
/// Largest payload of the fake flight's encrypted record (TLS 1.3's ciphertext limit, 2^14 + 256).
pub const MAX_ENCRYPTED_RECORD: u32 = 16640;
/// Named group X25519.
pub const GROUP_X25519: u16 = 0x001d;
/// Named group X25519MLKEM768 (the post-quantum hybrid current browsers offer).
pub const GROUP_X25519_MLKEM768: u16 = 0x11ec;
/// The cipher suite learning's probe hellos list first (after GREASE). A site that answers
/// the probes with it follows the client's order, as OpenSSL and rustls do by default.
pub const PROBE_PREFERRED_SUITE: u16 = 0x1301;

/// Which kind of ClientHello a flight answers. A site picks its key share from the ones the
/// client offered, so its ServerHello differs in size (32 or 1120 key bytes) between kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloKind {
    /// The hello offers an X25519 key share only (older Telegram clients).
    X25519,
    /// The hello also offers an X25519MLKEM768 key share (current TDLib and browsers).
    X25519MlKem768,
}

impl HelloKind {
    /// Every kind, in the order learning probes them.
    pub const ALL: [Self; 2] = [Self::X25519MlKem768, Self::X25519];

    fn index(self) -> usize {
        match self {
            Self::X25519 => 0,
            Self::X25519MlKem768 => 1,
        }
    }

    /// A short name for logs and `doctor`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X25519 => "x25519",
            Self::X25519MlKem768 => "x25519mlkem768",
        }
    }
}

/// What the fake flight reproduces of one kind of hello's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightShape {
    /// The cipher suite the site chose.
    pub cipher_suite: u16,
    /// The site's ServerHello extension order.
    pub extensions: ExtensionOrder,
    /// The site's key share group and length.
    pub key_share: Option<KeyShare>,
    /// Whether the site sent a ChangeCipherSpec (the fake flight always does: clients need it).
    pub change_cipher_spec: bool,
    /// Length of the site's ServerHello record payload (for `doctor`; the fake one follows
    /// from the key share).
    pub server_hello_len: u16,
    ranges: [(u32, u32); MAX_RECORDS],
    count: u8,
    /// Observations with this shape's signature.
    pub observations: u32,
}

impl FlightShape {
    /// Per encrypted record of the site's flight: the smallest and largest payload length seen.
    pub fn record_ranges(&self) -> &[(u32, u32)] {
        &self.ranges[..usize::from(self.count)]
    }

    /// Smallest and largest bytes the site's encrypted records took on the wire (headers in).
    pub fn encrypted_wire_len(&self) -> (u32, u32) {
        self.record_ranges().iter().fold((0u32, 0u32), |(lo, hi), &(min, max)| {
            let header = HEADER_LEN as u32;
            (lo.saturating_add(min).saturating_add(header), hi.saturating_add(max).saturating_add(header))
        })
    }

    /// The payload length of the fake flight's one encrypted record: one draw per site record
    /// (uniform between its smallest and largest seen length), summed with the headers of the
    /// records it stands for, so the flight takes the site's bytes on the wire; at most
    /// [`MAX_ENCRYPTED_RECORD`].
    pub fn draw_encrypted_len(&self, rng: &mut (impl RngCore + ?Sized)) -> usize {
        let mut total = 0u64;
        for &(min, max) in self.record_ranges() {
            let span = u64::from(max.saturating_sub(min)) + 1;
            total += HEADER_LEN as u64 + u64::from(min) + u64::from(rng.next_u32()) % span;
        }
        total.saturating_sub(HEADER_LEN as u64).clamp(1, u64::from(MAX_ENCRYPTED_RECORD)) as usize
    }
}

/// The learned shapes, one per [`HelloKind`] (none before learning). `Copy`: every new
/// handshake takes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlightProfile {
    shapes: [Option<FlightShape>; 2],
}

impl FlightProfile {
    /// Nothing learned: the fake flight keeps its fixed layout.
    pub const EMPTY: Self = Self { shapes: [None, None] };

    /// The shape learned for `kind`, if any.
    pub fn get(&self, kind: HelloKind) -> Option<&FlightShape> {
        self.shapes[kind.index()].as_ref()
    }

    /// The shape for a hello of `kind`: its own, else the other kind's (same site, same
    /// certificate), else none.
    pub fn for_hello(&self, kind: HelloKind) -> Option<&FlightShape> {
        self.get(kind).or_else(|| HelloKind::ALL.iter().find_map(|&k| self.get(k)))
    }

    /// Whether nothing has been learned.
    pub fn is_empty(&self) -> bool {
        self.shapes.iter().all(Option::is_none)
    }
}

/// The last [`KEEP_FLIGHTS`] observed flights per kind of hello.
#[derive(Debug, Clone, Default)]
pub struct FlightStats {
    seen: [VecDeque<ObservedFlight>; 2],
}

/// What must be equal for two flights to share a shape.
type Signature = (u16, ExtensionOrder, Option<KeyShare>, bool, usize);

fn signature(f: &ObservedFlight) -> Signature {
    (f.cipher_suite, f.extensions, f.key_share, f.change_cipher_spec, f.encrypted.as_slice().len())
}

impl FlightStats {
    /// No observations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a flight the site sent to a hello of `kind`.
    pub fn add(&mut self, kind: HelloKind, flight: ObservedFlight) {
        let seen = &mut self.seen[kind.index()];
        if seen.len() == KEEP_FLIGHTS {
            seen.pop_front();
        }
        seen.push_back(flight);
    }

    /// Observations kept for `kind`.
    pub fn observations(&self, kind: HelloKind) -> usize {
        self.seen[kind.index()].len()
    }

    /// The shape of `kind`: the signature (cipher suite, extension order, key share,
    /// ChangeCipherSpec, record count) seen most often (the latest on a tie), with the range of
    /// each record's length over the observations that have it.
    pub fn shape(&self, kind: HelloKind) -> Option<FlightShape> {
        let seen = &self.seen[kind.index()];
        let mut best: Option<(usize, &ObservedFlight)> = None;
        for flight in seen.iter().rev() {
            let sig = signature(flight);
            let count = seen.iter().filter(|f| signature(f) == sig).count();
            if best.is_none_or(|(n, _)| count > n) {
                best = Some((count, flight));
            }
        }
        let (count, model) = best?;
        let sig = signature(model);
        let mut shape = FlightShape {
            cipher_suite: model.cipher_suite,
            extensions: model.extensions,
            key_share: model.key_share,
            change_cipher_spec: model.change_cipher_spec,
            server_hello_len: model.server_hello_len,
            ranges: [(u32::MAX, 0); MAX_RECORDS],
            count: model.encrypted.as_slice().len() as u8,
            observations: count as u32,
        };
        for flight in seen.iter().filter(|f| signature(f) == sig) {
            for (range, &len) in shape.ranges.iter_mut().zip(flight.encrypted.as_slice()) {
                range.0 = range.0.min(len);
                range.1 = range.1.max(len);
            }
        }
        Some(shape)
    }

    /// The shapes of every kind learned so far.
    pub fn profile(&self) -> FlightProfile {
        let mut profile = FlightProfile::default();
        for kind in HelloKind::ALL {
            profile.shapes[kind.index()] = self.shape(kind);
        }
        profile
    }
}
