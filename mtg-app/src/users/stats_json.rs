//! The `/stats` JSON of mtg-multi (reference §5.2): field names and order, every user present,
//! `last_seen` null until first admitted, `throttle` only when a limit is set, `caps` only when
//! non-empty.

use std::collections::BTreeMap;

use serde::Serialize;

use super::accounting::UserSnapshot;

/// The throttle part of the stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThrottleJson {
    /// Whether any user is capped.
    pub active: bool,
    /// `max-connections`.
    pub limit: u64,
    /// Caps by user name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub caps: BTreeMap<String, u64>,
}

/// The per-user limit fields, each present only when that limit is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LimitsJson {
    /// `quota` in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// Bytes used against the quota this period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_used: Option<u64>,
    /// When a monthly quota starts over (the first of next month, 00:00 UTC), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_resets_at: Option<String>,
    /// `expires` as RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `true` when disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// `max-ips`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ips: Option<u64>,
    /// Distinct client addresses with live sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<u64>,
    /// `rate-limit` in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u64>,
    /// Milliseconds the user's session directions waited for the rate limit, summed over them
    /// (with `rate_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_ms: Option<u64>,
    /// `max-connections`: the user's own cap on live connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
}

#[derive(Serialize)]
struct UserJson {
    connections: u64,
    bytes_in: u64,
    bytes_out: u64,
    last_seen: Option<String>,
    #[serde(flatten)]
    limits: LimitsJson,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    started_at: String,
    uptime_seconds: u64,
    total_connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle: Option<&'a ThrottleJson>,
    users: BTreeMap<&'a str, UserJson>,
}

/// Renders the stats body (with its trailing newline).
pub fn render(
    started_at_ms: i64,
    now_ms: i64,
    users: &[(&str, UserSnapshot, LimitsJson)],
    throttle: Option<&ThrottleJson>,
) -> String {
    let body = StatsJson {
        started_at: rfc3339_ms(started_at_ms),
        uptime_seconds: u64::try_from((now_ms - started_at_ms) / 1000).unwrap_or(0),
        total_connections: users.iter().map(|(_, s, _)| s.connections).sum(),
        throttle,
        users: users
            .iter()
            .map(|(name, s, limits)| {
                (
                    *name,
                    UserJson {
                        connections: s.connections,
                        bytes_in: s.bytes_in,
                        bytes_out: s.bytes_out,
                        last_seen: s.last_seen_ms.map(rfc3339_ms),
                        limits: limits.clone(),
                    },
                )
            })
            .collect(),
    };
    // Serialising plain structs and maps of strings cannot fail.
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    text
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for Unix milliseconds.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_798_761_599_123), "2026-12-31T23:59:59.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn exact_shape_without_throttle() {
        let users = [
            (
                "alice",
                UserSnapshot { connections: 2, bytes_in: 10, bytes_out: 20, last_seen_ms: Some(5_000) },
                LimitsJson::default(),
            ),
            (
                "bob",
                UserSnapshot::default(),
                LimitsJson {
                    quota: Some(100),
                    quota_used: Some(0),
                    disabled: Some(true),
                    max_ips: Some(2),
                    ips: Some(1),
                    rate_limit: Some(1 << 20),
                    rate_limited_ms: Some(1500),
                    ..LimitsJson::default()
                },
            ),
        ];
        assert_eq!(
            render(1_000, 62_500, &users, None),
            r#"{
  "started_at": "1970-01-01T00:00:01.000Z",
  "uptime_seconds": 61,
  "total_connections": 2,
  "users": {
    "alice": {
      "connections": 2,
      "bytes_in": 10,
      "bytes_out": 20,
      "last_seen": "1970-01-01T00:00:05.000Z"
    },
    "bob": {
      "connections": 0,
      "bytes_in": 0,
      "bytes_out": 0,
      "last_seen": null,
      "quota": 100,
      "quota_used": 0,
      "disabled": true,
      "max_ips": 2,
      "ips": 1,
      "rate_limit": 1048576,
      "rate_limited_ms": 1500
    }
  }
}
"#
        );
    }

    #[test]
    fn throttle_block_and_caps_only_when_present() {
        let idle = ThrottleJson { active: false, limit: 10, caps: BTreeMap::new() };
        let text = render(0, 0, &[], Some(&idle));
        assert!(text.contains("\"throttle\": {\n    \"active\": false,\n    \"limit\": 10\n  },"), "{text}");
        let busy = ThrottleJson { active: true, limit: 10, caps: [("bob".to_owned(), 4)].into() };
        let text = render(0, 0, &[], Some(&busy));
        assert!(text.contains("\"caps\": {\n      \"bob\": 4\n    }"), "{text}");
    }
}
