//! Users beyond the core's table: per-user counters, the fair-share throttle and the `/stats`
//! JSON.

pub mod accounting;
pub mod fair_share;
pub mod gate;
pub mod limits;
pub mod rate_bucket;
pub mod rate_limit;
pub mod stats_json;
pub mod throttle;
pub mod usage_file;
