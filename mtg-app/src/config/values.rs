//! The scalar value syntaxes of mtg's config (reference §2.1 item 3): Go durations, base-2 byte
//! sizes, literal `IP:port`, IPs, hostnames, metric prefixes, HTTP paths and the enums. Each
//! parser returns, on error, what is allowed (for the one-line error). Every parser refuses
//! the empty string.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::dc_table::PreferIp;

/// What a value must look like, for error messages.
pub(super) type Expected = &'static str;

/// What a duration must look like.
pub(super) const DURATION: Expected = "a non-negative Go duration like 300ms, 10s, 1h30m";

/// Go duration syntax (`300ms`, `10s`, `1h30m`, `1.5h`; units ns, us, µs, ms, s, m, h),
/// case-insensitive, whitespace ignored, never negative. Computed in whole nanoseconds as Go
/// does, at most Go's limit (about 292 years).
pub(super) fn duration(text: &str) -> Result<Duration, Expected> {
    let s = normalise(text);
    let s = s.strip_prefix('+').unwrap_or(&s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DURATION);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, fraction, after) = decimal(rest).ok_or(DURATION)?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let nanos_per_unit: u128 = match &after[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DURATION),
        };
        let part = scaled(whole, fraction, nanos_per_unit).ok_or(DURATION)?;
        total = total.checked_add(part).ok_or(DURATION)?;
        rest = &after[unit_len..];
    }
    let nanos = u64::try_from(total).ok().filter(|&n| n <= i64::MAX as u64).ok_or(DURATION)?;
    Ok(Duration::from_nanos(nanos))
}

/// What a byte size must look like.
pub(super) const BYTES: Expected = "a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes";

/// Base-2 byte sizes, case-insensitive, whitespace ignored: `1mib`, `1MB` (= 1 MiB), `512kib`,
/// `4KB` (= 4096), `1.5gib`, or a plain number of bytes.
pub(super) fn bytes(text: &str) -> Result<u64, Expected> {
    let s = normalise(text);
    let (whole, fraction, unit) = decimal(&s).ok_or(BYTES)?;
    let power = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        "p" | "pb" | "pib" => 5,
        "e" | "eb" | "eib" => 6,
        _ => return Err(BYTES),
    };
    let value = scaled(whole, fraction, 1u128 << (10 * power)).ok_or(BYTES)?;
    u64::try_from(value).map_err(|_| BYTES)
}

/// What a rate must look like.
pub(super) const RATE: Expected =
    "a rate in bytes per second like 1mib, 500kib (base 2), 8mbit, 500kbit (base 10) or a number of bytes";

/// A rate in bytes per second: a byte size (`1mib`, `500kib`, `1mb` = 1 MiB, base 2, as every
/// size in the config) or bits per second in base 10, as network speeds are sold (`8mbit` =
/// 1 000 000 bytes/s, `500kbit` = 62 500, `1gbit`, `100bit`); case-insensitive, whitespace ignored.
pub(super) fn rate(text: &str) -> Result<u64, Expected> {
    let s = normalise(text);
    let Some(prefix) = s.strip_suffix("bit") else {
        return bytes(&s).map_err(|_| RATE);
    };
    let (whole, fraction, unit) = decimal(prefix).ok_or(RATE)?;
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        _ => return Err(RATE),
    };
    let bits = scaled(whole, fraction, 1000u128.pow(power)).ok_or(RATE)?;
    u64::try_from(bits / 8).map_err(|_| RATE)
}

/// Lowercase without whitespace (mtg strips spaces and tabs and ignores case).
fn normalise(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase()
}

/// Splits a leading unsigned decimal (`12`, `1.5`, `.5`, `5.`) into its whole digits, its
/// fraction digits and the rest; `None` when there are no digits at all.
fn decimal(s: &str) -> Option<(&str, &str, &str)> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (whole, rest) = s.split_at(whole_len);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())),
        None => ("", rest),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    Some((whole, fraction, rest))
}

/// `whole.fraction × unit`, truncated to an integer; `None` on overflow. The digits are ASCII
/// digits (as `decimal` splits them).
fn scaled(whole: &str, fraction: &str, unit: u128) -> Option<u128> {
    let mut total: u128 = 0;
    for d in whole.bytes() {
        total = total.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    total = total.checked_mul(unit)?;
    // Fraction digits after the 18th are ignored: they move the result by less than
    // unit / 10^18 (and numerator × unit stays within u128 for units up to 2^60).
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for d in fraction.bytes().take(18) {
        numerator = numerator * 10 + u128::from(d - b'0');
        denominator *= 10;
    }
    total.checked_add(numerator.checked_mul(unit)? / denominator)
}

/// What a TCP segment size (`[network] client-mss`) must be.
pub(super) const MSS: Expected = "a segment size in bytes from 88 to 32767 (the bounds Linux accepts for \
     TCP_MAXSEG), or a preset: \"tspu\" (92), \"extreme-low\" (88), \"2in8\" (256)";

/// The smallest and largest TCP_MAXSEG Linux accepts (`TCP_MIN_MSS`, `MAX_TCP_WINDOW`).
pub(super) const MSS_RANGE: std::ops::RangeInclusive<i64> = 88..=32767;

/// A segment size as a string, case-insensitive: a preset (`tspu` = 92, `extreme-low` = 88,
/// `2in8` = 256) or a number of bytes within [`MSS_RANGE`].
pub(super) fn mss(text: &str) -> Result<u16, Expected> {
    match normalise(text).as_str() {
        "tspu" => Ok(92),
        "extreme-low" => Ok(88),
        "2in8" => Ok(256),
        digits => digits
            .parse::<i64>()
            .ok()
            .filter(|n| MSS_RANGE.contains(n))
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(MSS),
    }
}

/// What a listen or target address must look like.
pub(super) const SOCKET_ADDR: Expected =
    "a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)";

/// A literal `IP:port` with port 1–65535 (IPv6 in brackets); hostnames and `*` are refused.
pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, Expected> {
    let addr: SocketAddr = text.trim().parse().map_err(|_| SOCKET_ADDR)?;
    if addr.port() == 0 {
        return Err(SOCKET_ADDR);
    }
    Ok(addr)
}

/// A literal IPv4 or IPv6 address.
pub(super) fn ip(text: &str) -> Result<IpAddr, Expected> {
    text.trim().parse().map_err(|_| "a literal IPv4 or IPv6 address")
}

/// A hostname or literal IP (IPv6 with or without brackets), without port, path, whitespace
/// or `/?#`.
pub(super) fn host(text: &str) -> Result<String, Expected> {
    const EXPECTED: Expected = "a hostname or IP address without port or path";
    let t = text.trim();
    let unbracketed = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || "/?#:@[]".contains(c);
    if t.is_empty() || t.chars().any(bad) {
        return Err(EXPECTED);
    }
    Ok(t.to_owned())
}

/// A metric prefix: lowercase letters and digits only.
pub(super) fn metric_prefix(text: &str) -> Result<String, Expected> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err("lowercase letters and digits only (no dots or underscores)")
    }
}

/// An HTTP path, normalised to `/` + the value without leading/trailing slashes.
pub(super) fn http_path(text: &str) -> Result<String, Expected> {
    let t = text.trim().trim_matches('/');
    if text.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err("a URL path like /metrics");
    }
    Ok(format!("/{t}"))
}

/// `prefer-ip`, case-insensitive.
pub(super) fn prefer_ip(text: &str) -> Result<PreferIp, Expected> {
    match text.trim().to_ascii_lowercase().as_str() {
        "prefer-ipv4" => Ok(PreferIp::PreferIpv4),
        "prefer-ipv6" => Ok(PreferIp::PreferIpv6),
        "only-ipv4" => Ok(PreferIp::OnlyIpv4),
        "only-ipv6" => Ok(PreferIp::OnlyIpv6),
        _ => Err("prefer-ipv4, prefer-ipv6, only-ipv4 or only-ipv6"),
    }
}

/// How the log lines on stderr are written (`log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines: time, level, target, message, `key=value` fields (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the same
    /// fields as the text lines, at the top level.
    Json,
}

/// Parses `log-format`.
pub(super) fn log_format(text: &str) -> Result<LogFormat, Expected> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("text or json"),
    }
}

/// Tag style of statsd lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagFormat {
    /// `name:1|c|#k:v,k:v` (mtg's effective default).
    #[default]
    Datadog,
    /// `name,k=v:1|c`.
    Influxdb,
    /// `name;k=v:1|c`.
    Graphite,
}

/// `tag-format`, case-insensitive.
pub(super) fn tag_format(text: &str) -> Result<TagFormat, Expected> {
    match text.trim().to_ascii_lowercase().as_str() {
        "datadog" => Ok(TagFormat::Datadog),
        "influxdb" => Ok(TagFormat::Influxdb),
        "graphite" => Ok(TagFormat::Graphite),
        _ => Err("datadog, influxdb or graphite"),
    }
}

/// When a user's data quota starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaReset {
    /// Never: the quota is for the user's whole life.
    #[default]
    None,
    /// At 00:00 UTC on the first day of each month.
    Monthly,
}

/// `quota-reset`, case-insensitive.
pub(super) fn quota_reset(text: &str) -> Result<QuotaReset, Expected> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(QuotaReset::None),
        "monthly" => Ok(QuotaReset::Monthly),
        _ => Err("none or monthly"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("300ms", Duration::from_millis(300)),
            ("10s", Duration::from_secs(10)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("5S", Duration::from_secs(5)),
            ("1H30M", Duration::from_secs(5400)),
            (" 2 m ", Duration::from_secs(120)),
            ("\t1m\t30s", Duration::from_secs(90)),
            ("0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1ns", Duration::from_nanos(1)),
            ("0.1s", Duration::from_millis(100)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (text, want) in ok {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5", "-5s", "5 minutes", "s", "1x", "1.2.3s", ".s", "5d", "2562048h", "1e3s"] {
            assert_eq!(duration(bad), Err(DURATION), "{bad}");
        }
    }

    #[test]
    fn byte_sizes_are_base_two() {
        let ok = [
            ("1mib", 1 << 20),
            ("1MB", 1 << 20),
            ("1MiB", 1 << 20),
            ("512kib", 512 << 10),
            ("4KB", 4096),
            ("1024", 1024),
            ("1024b", 1024),
            ("1.5 KiB", 1536),
            ("2 g", 2 << 30),
            ("1tb", 1 << 40),
            ("0", 0),
            ("15eib", 15 << 60),
        ];
        for (text, want) in ok {
            assert_eq!(bytes(text), Ok(want), "{text}");
        }
        for bad in ["", "mb", "1xb", "-1kb", "1.2.3kb", "16eib", "1e3"] {
            assert_eq!(bytes(bad), Err(BYTES), "{bad}");
        }
    }

    #[test]
    fn rates_take_byte_sizes_and_bits_per_second() {
        let ok = [
            ("1mib", 1 << 20),
            ("1mb", 1 << 20),
            ("500kib", 500 << 10),
            ("1kb", 1024),
            ("8mbit", 1_000_000),
            ("500kbit", 62_500),
            ("20 Mbit", 2_500_000),
            ("1.5mbit", 187_500),
            ("1gbit", 125_000_000),
            ("800bit", 100),
            ("4096", 4096),
        ];
        for (text, want) in ok {
            assert_eq!(rate(text), Ok(want), "{text}");
        }
        for bad in ["", "mbit", "1xbit", "-1mbit", "1mibit", "1.2.3mbit", "fast", "16eib"] {
            assert_eq!(rate(bad), Err(RATE), "{bad}");
        }
    }

    #[test]
    fn addresses_are_literal_with_a_port() {
        assert_eq!(socket_addr("127.0.0.1:443"), Ok(SocketAddr::from(([127, 0, 0, 1], 443))));
        assert_eq!(socket_addr("[::1]:443"), Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 443))));
        for bad in
            ["localhost:443", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1", "::1:443", "*:443", ":443"]
        {
            assert_eq!(socket_addr(bad), Err(SOCKET_ADDR), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host("front.example"), Ok("front.example".to_owned()));
        assert_eq!(host("[::1]"), Ok("::1".to_owned()));
        assert_eq!(host("10.0.0.1"), Ok("10.0.0.1".to_owned()));
        for bad in ["", "a b", "front.example:443", "https://front.example", "a/b", "x?y"] {
            assert!(host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_syntaxes() {
        assert_eq!(http_path("metrics/"), Ok("/metrics".to_owned()));
        assert_eq!(http_path("/"), Ok("/".to_owned()));
        assert_eq!(http_path("//a/b//"), Ok("/a/b".to_owned()));
        assert!(http_path("/a b").is_err());
        assert!(metric_prefix("mtg2").is_ok());
        for bad in ["", "mtg.", "mtg_x", "MTG"] {
            assert!(metric_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(prefer_ip("Only-IPv6"), Ok(PreferIp::OnlyIpv6));
        assert_eq!(tag_format("InfluxDB"), Ok(TagFormat::Influxdb));
        assert_eq!(quota_reset("MONTHLY"), Ok(QuotaReset::Monthly));
        for parse_empty in [
            duration("").err(),
            bytes("").err(),
            socket_addr("").err(),
            ip("").err(),
            host("").err(),
            metric_prefix("").err(),
            http_path("").err(),
            prefer_ip("").err(),
            tag_format("").err(),
            quota_reset("").err(),
        ] {
            assert!(parse_empty.is_some());
        }
    }
}
