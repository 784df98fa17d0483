//! Doppelganger: shaping the proxy→client records like a real website (reference §4.f).
//!
//! * [`weibull`]: the inter-record delay model, its sampling and its maximum-likelihood fit.
//! * [`drs`]: the record-size schedule (dynamic record sizing).
//! * [`samples`]: what learning keeps (the last durations and certificate-flight sizes) and
//!   the statistics derived from it.
//! * [`flight_shape`]: the fronting site's first flight per kind of hello, learned, and what
//!   the fake flight takes from it.
//! * [`tap`]: the byte-level observer of a real HTTPS exchange that produces those samples.
//!
//! Everything here is sans-IO: times and randomness are passed in.

pub mod drs;
pub mod flight_shape;
pub mod samples;
pub mod tap;
pub mod weibull;

pub use drs::RecordSizer;
pub use flight_shape::{FlightProfile, FlightShape, FlightStats, HelloKind};
pub use samples::{CertSize, Samples, Statistics};
pub use tap::{FlightObserver, RecordSeen, RecordTap};
pub use weibull::Weibull;
