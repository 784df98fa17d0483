//! MTProto for the tests: the sans-IO encoders and parsers of [`mtg_proto::mtproto`]
//! (padded-intermediate framing, `req_pq_multi`, `resPQ`), plus the wall clock they take.

pub use mtg_proto::mtproto::*;

/// The current wall-clock time since the Unix epoch.
pub fn unix_now() -> core::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}
