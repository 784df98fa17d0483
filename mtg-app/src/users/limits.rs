//! Per-user limits (`[secret-limits.NAME]`, else `[secret-limits-default]`): who is refused
//! (disabled, expired, over quota, one client address too many — all domain-fronted like a
//! wrong secret) and each user's own connection cap.

use crate::config::{QuotaReset, SecretLimits};

use super::accounting::UserStats;

/// Why a user with a valid secret is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `disabled = true`.
    Disabled,
    /// Past `expires`.
    Expired,
    /// `quota` used up in this period.
    OverQuota,
    /// A new client address while `max-ips` others have live sessions.
    MaxIps,
}

impl Refusal {
    /// The `reason` label of the `user_fronted_by_limit` metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::OverQuota => "quota",
            Self::MaxIps => "max_ips",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disabled => "user disabled",
            Self::Expired => "user expired",
            Self::OverQuota => "user over quota",
            Self::MaxIps => "user at max-ips client addresses",
        })
    }
}

/// The quota period of a moment: months since year 0 (UTC) for monthly resets, 0 for none.
pub fn quota_period(reset: QuotaReset, unix_ms: i64) -> u64 {
    match reset {
        QuotaReset::None => 0,
        QuotaReset::Monthly => {
            let (y, m) = year_month(unix_ms.div_euclid(1000).div_euclid(86_400));
            u64::try_from(y * 12 + m - 1).unwrap_or(0)
        }
    }
}

/// When the quota period of a moment ends (Unix ms of the first of the next month, 00:00 UTC)
/// for monthly resets; `None` for none.
pub fn quota_period_end(reset: QuotaReset, unix_ms: i64) -> Option<i64> {
    match reset {
        QuotaReset::None => None,
        QuotaReset::Monthly => {
            let (y, m) = year_month(unix_ms.div_euclid(1000).div_euclid(86_400));
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some(days_from_civil(y, m, 1).saturating_mul(86_400_000))
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn year_month(days: i64) -> (i64, i64) {
    let (y, m, _) = super::stats_json::civil_from_days(days);
    (y, m)
}

/// Whether `limits` refuse a user now, given its counters.
pub fn refusal(limits: &SecretLimits, stats: &UserStats, unix_ms: i64) -> Option<Refusal> {
    if limits.disabled {
        return Some(Refusal::Disabled);
    }
    if limits.expires.is_some_and(|at| unix_ms.div_euclid(1000) >= at) {
        return Some(Refusal::Expired);
    }
    if let Some(quota) = limits.quota
        && stats.quota_used(quota_period(limits.quota_reset, unix_ms)) >= quota
    {
        return Some(Refusal::OverQuota);
    }
    None
}

/// Starts a new quota period (usage from zero) for every user with a quota whose stored
/// period is older than `unix_ms`'s; `limits` and `stats` are by user id.
pub fn roll_quota_periods(limits: &[SecretLimits], stats: &[std::sync::Arc<UserStats>], unix_ms: i64) {
    for (limits, stats) in limits.iter().zip(stats) {
        if limits.quota.is_some() {
            stats.quota_used(quota_period(limits.quota_reset, unix_ms));
        }
    }
}

/// The tighter of two optional caps.
pub fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monthly_period_ends_on_the_first_of_the_next_month() {
        // 2026-12-02T06:55:00Z → 2027-01-01; 2024-02-29 → 2024-03-01.
        assert_eq!(quota_period_end(QuotaReset::Monthly, 1_796_194_500_000), Some(1_798_761_600_000));
        assert_eq!(quota_period_end(QuotaReset::Monthly, 1_709_164_800_000), Some(1_709_251_200_000));
        assert_eq!(quota_period_end(QuotaReset::None, 1_709_164_800_000), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn a_new_month_starts_usage_from_zero_for_monthly_quotas_only() {
        // 2026-11-30 and 2026-12-01 (UTC).
        let (nov, dec) = (1_796_000_000_000, 1_796_083_200_000);
        let monthly =
            SecretLimits { quota: Some(1000), quota_reset: QuotaReset::Monthly, ..SecretLimits::default() };
        let forever = SecretLimits { quota: Some(1000), ..SecretLimits::default() };
        let limits = [monthly, forever];
        let stats: Vec<std::sync::Arc<UserStats>> = (0..2).map(|_| std::sync::Arc::default()).collect();
        for (l, s) in limits.iter().zip(&stats) {
            s.quota_used(quota_period(l.quota_reset, nov));
            s.add_bytes(600, 600);
        }
        roll_quota_periods(&limits, &stats, nov);
        assert_eq!(stats[0].quota_state().0, 1200, "same month: kept");
        roll_quota_periods(&limits, &stats, dec);
        assert_eq!(stats[0].quota_state().0, 0, "a new month starts from zero");
        assert_eq!(stats[1].quota_state().0, 1200, "no reset: kept");
    }

    #[test]
    fn periods_and_refusals() {
        // 2026-11-22 and 2026-12-01 (UTC) are in consecutive months.
        let nov = 1_795_305_600_000;
        let dec = 1_796_083_200_000;
        assert_eq!(quota_period(QuotaReset::Monthly, dec), quota_period(QuotaReset::Monthly, nov) + 1);
        assert_eq!(quota_period(QuotaReset::None, dec), 0);

        let stats = UserStats::default();
        let limits =
            SecretLimits { quota: Some(100), quota_reset: QuotaReset::Monthly, ..SecretLimits::default() };
        assert_eq!(refusal(&limits, &stats, nov), None);
        stats.add_bytes(60, 40);
        assert_eq!(refusal(&limits, &stats, nov), Some(Refusal::OverQuota));
        // A new month starts from zero.
        assert_eq!(refusal(&limits, &stats, dec), None);

        let expired = SecretLimits { expires: Some(nov / 1000), ..SecretLimits::default() };
        assert_eq!(refusal(&expired, &stats, nov), Some(Refusal::Expired));
        assert_eq!(refusal(&expired, &stats, nov - 1000), None);
        let disabled = SecretLimits { disabled: true, ..SecretLimits::default() };
        assert_eq!(refusal(&disabled, &stats, nov), Some(Refusal::Disabled));
        assert_eq!(tighter(Some(3), Some(5)), Some(3));
        assert_eq!(tighter(None, Some(5)), Some(5));
        assert_eq!(tighter(None, None), None);
    }

    #[test]
    fn a_monthly_reset_readmits_a_user_whose_sessions_the_quota_ended() {
        use super::super::gate::UserGate;
        use std::sync::Arc;
        // 2026-11-22 and 2026-12-01 (UTC).
        let (nov, dec) = (1_795_305_600_000, 1_796_083_200_000);
        let limits =
            SecretLimits { quota: Some(100), quota_reset: QuotaReset::Monthly, ..SecretLimits::default() };
        let stats = Arc::new(UserStats::default());
        stats.set_limits(&limits);
        let gate = Arc::new(UserGate::default());
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(refusal(&limits, &stats, nov), None);
        let session = stats.try_admit(None, ip, 0, nov, gate.clone()).unwrap();
        session.add_bytes(70, 30);
        assert!(session.watch().is_closed(), "crossing the quota ends the session");
        assert_eq!(refusal(&limits, &stats, nov), Some(Refusal::OverQuota));
        drop(session);
        // December: the quota starts over, the next session is admitted and stays open.
        assert_eq!(refusal(&limits, &stats, dec), None);
        let session = stats.try_admit(None, ip, 0, dec, gate).unwrap();
        assert!(!session.watch().is_closed());
        session.add_bytes(10, 10);
        assert!(!session.watch().is_closed());
    }
}
