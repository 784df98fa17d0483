//! The `/stats` body (mtg-multi's JSON), rendered from the data plane's counters.

use super::Control;
use crate::engine::unix_ms;
use crate::users::stats_json::{LimitsJson, ThrottleJson};

impl Control {
    /// The `/stats` body now.
    pub fn stats_json(&self) -> String {
        let shared = &self.data;
        let users = shared.users();
        let now = unix_ms();
        let snapshots: Vec<(&str, crate::users::accounting::UserSnapshot, LimitsJson)> = users
            .names()
            .iter()
            .zip(users.all_stats().iter().zip(users.all_limits()))
            .map(|(name, (stats, limits))| {
                let period = crate::users::limits::quota_period(limits.quota_reset, now);
                let extra = LimitsJson {
                    quota: limits.quota,
                    quota_used: limits.quota.map(|_| stats.quota_used(period)),
                    quota_resets_at: limits
                        .quota
                        .and(crate::users::limits::quota_period_end(limits.quota_reset, now))
                        .map(crate::users::stats_json::rfc3339_ms),
                    expires_at: limits
                        .expires
                        .map(|at| crate::users::stats_json::rfc3339_ms(at.saturating_mul(1000))),
                    disabled: limits.disabled.then_some(true),
                    max_ips: (limits.max_ips > 0).then_some(u64::from(limits.max_ips)),
                    ips: Some(stats.addresses() as u64),
                    rate_limit: limits.rate_limit,
                    rate_limited_ms: limits
                        .rate_limit
                        .map(|_| u64::try_from(stats.rate().limited().as_millis()).unwrap_or(u64::MAX)),
                    max_connections: (limits.max_connections > 0)
                        .then_some(u64::from(limits.max_connections)),
                };
                (name.as_str(), stats.snapshot(), extra)
            })
            .collect();
        let throttle = shared.throttle().map(|t| ThrottleJson {
            active: t.active(),
            limit: t.limit(),
            caps: t
                .caps()
                .iter()
                .zip(users.names())
                .filter_map(|(cap, name)| cap.map(|c| (name.clone(), c)))
                .collect(),
        });
        crate::users::stats_json::render(shared.started_at_ms(), now, &snapshots, throttle.as_ref())
    }
}
