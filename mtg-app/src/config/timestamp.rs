//! `expires` timestamps: RFC 3339 (`2026-12-31T23:59:59Z`, `…+03:00`, fractions ignored) or a
//! bare date (`2026-12-31`, midnight UTC), as Unix seconds. Parsed by hand: proleptic
//! Gregorian calendar, no time zone database needed.

use super::values::Expected;

/// What a timestamp must look like.
pub(super) const TIMESTAMP: Expected = "an RFC 3339 time like 2026-12-31T23:59:59Z or a date like 2026-12-31";

/// Parses a timestamp into Unix seconds.
pub(super) fn unix_seconds(text: &str) -> Result<i64, Expected> {
    let t = text.trim();
    let (date, time) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let [y, m, d] = fields(date, '-', [4, 2, 2])?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(TIMESTAMP);
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(time) = time {
        let offset_at = time.find(['Z', 'z', '+', '-']).ok_or(TIMESTAMP)?;
        let (clock, offset) = time.split_at(offset_at);
        let clock = match clock.split_once('.') {
            Some((whole, fraction)) if !fraction.is_empty() && is_digits(fraction) => whole,
            Some(_) => return Err(TIMESTAMP),
            None => clock,
        };
        let [h, mi, s] = fields(clock, ':', [2, 2, 2])?;
        if h > 23 || mi > 59 || s > 60 {
            return Err(TIMESTAMP);
        }
        secs += h * 3600 + mi * 60 + s;
        if !offset.eq_ignore_ascii_case("z") {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let [oh, om] = fields(&offset[1..], ':', [2, 2])?;
            if oh > 23 || om > 59 {
                return Err(TIMESTAMP);
            }
            secs -= sign * (oh * 3600 + om * 60);
        }
    }
    Ok(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, the form [`unix_seconds`] reads back (years 0 to
/// 9999; `None` outside them).
pub(super) fn rfc3339(secs: i64) -> Option<String> {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::users::stats_json::civil_from_days(days);
    (0..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// `N` decimal fields of the given widths separated by `sep`.
fn fields<const N: usize>(text: &str, sep: char, widths: [usize; N]) -> Result<[i64; N], Expected> {
    let mut out = [0i64; N];
    let mut parts = text.split(sep);
    for (slot, width) in out.iter_mut().zip(widths) {
        let part = parts.next().ok_or(TIMESTAMP)?;
        if part.len() != width || !is_digits(part) {
            return Err(TIMESTAMP);
        }
        *slot = part.parse().map_err(|_| TIMESTAMP)?;
    }
    if parts.next().is_some() {
        return Err(TIMESTAMP);
    }
    Ok(out)
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        let ok = [
            ("1970-01-01", 0),
            ("2000-02-29", 951_782_400),
            ("2026-12-31", 1_798_675_200),
            ("2026-12-31T23:59:59Z", 1_798_761_599),
            ("2026-12-31t23:59:59z", 1_798_761_599),
            ("2026-12-31 23:59:59Z", 1_798_761_599),
            ("2026-12-31T23:59:59.999Z", 1_798_761_599),
            ("2026-12-31T23:59:59+01:00", 1_798_757_999),
            ("2026-12-31T23:59:59-01:30", 1_798_766_999),
            ("1969-12-31T23:59:59Z", -1),
        ];
        for (text, want) in ok {
            assert_eq!(unix_seconds(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "tomorrow",
            "2026-13-01",
            "2026-02-29",
            "2026-12-31T25:00:00Z",
            "2026-12-31T10:00:00",
            "2026-1-31",
            "2026-12-31T10:00Z",
            "2026-12-31T10:00:00+0100",
            "2026-12-31T10:00:00.Z",
            "20261231",
        ] {
            assert_eq!(unix_seconds(bad), Err(TIMESTAMP), "{bad}");
        }
    }

    #[test]
    fn written_timestamps_read_back() {
        for secs in [0, -1, 951_782_400, 1_798_761_599, 253_402_300_799, -62_167_219_200] {
            let text = rfc3339(secs).unwrap();
            assert_eq!(unix_seconds(&text), Ok(secs), "{text}");
        }
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(253_402_300_800), None, "year 10000");
        assert_eq!(rfc3339(-62_167_219_201), None, "year -1");
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(i64::MIN), None);
    }
}
