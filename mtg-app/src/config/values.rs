//! Parsers for the value syntaxes of mtg's config (reference §2.1): Go durations, base-2 byte
//! sizes, literal `IP:port`, proxy, DNS and list URLs. Each returns what is allowed on error.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What a value must look like, for error messages.
pub(crate) type Expected = &'static str;

/// Go duration syntax: `300ms`, `10s`, `1h30m`, `1.5h`, case-insensitive, spaces ignored.
pub(crate) fn duration(text: &str) -> Result<Duration, Expected> {
    const EXPECTED: Expected = "a non-negative Go duration like 300ms, 10s, 1h30m";
    let s: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(EXPECTED);
    }
    let s = s.strip_prefix('+').unwrap_or(&s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(EXPECTED)?;
        if num_len == 0 {
            return Err(EXPECTED);
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| EXPECTED)?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(EXPECTED),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| EXPECTED)
}

/// Base-2 byte sizes: `1mib`, `1MB` (= MiB), `512kib`, `4KB`, or a plain number of bytes.
pub(crate) fn bytes(text: &str) -> Result<u64, Expected> {
    const EXPECTED: Expected = "a byte size like 512kib, 1mib, 4KB (base 2) or a number of bytes";
    let s: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(EXPECTED);
    }
    let number: f64 = number.parse().map_err(|_| EXPECTED)?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(EXPECTED),
    };
    let value = number * scale as f64;
    if !value.is_finite() || value < 0.0 || value > u64::MAX as f64 {
        return Err(EXPECTED);
    }
    Ok(value as u64)
}

/// A literal `IP:port` with port 1–65535 (IPv6 in brackets); hostnames are refused.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, Expected> {
    const EXPECTED: Expected = "a literal IP:port with port 1-65535 (IPv6 as [::1]:443; no hostnames)";
    let addr: SocketAddr = text.trim().parse().map_err(|_| EXPECTED)?;
    if addr.port() == 0 {
        return Err(EXPECTED);
    }
    Ok(addr)
}

/// A literal IP address.
pub(crate) fn ip(text: &str) -> Result<IpAddr, Expected> {
    text.trim().parse().map_err(|_| "a literal IPv4 or IPv6 address")
}

/// A hostname or literal IP without port, whitespace or `/?#`.
pub(crate) fn host(text: &str) -> Result<String, Expected> {
    const EXPECTED: Expected = "a hostname or IP address without port or path";
    let t = text.trim();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || "/?#".contains(c)) {
        return Err(EXPECTED);
    }
    if t.parse::<IpAddr>().is_ok() {
        return Ok(t.to_owned());
    }
    if t.contains(':') {
        return Err(EXPECTED);
    }
    Ok(t.to_owned())
}

/// A SOCKS5 upstream: `socks5://[user:password@]host[:port]` (or `socks5h`), port 1080 default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `true` for `socks5h` (the proxy resolves names).
    pub remote_dns: bool,
    /// Host name or IP of the SOCKS server.
    pub host: String,
    /// Port of the SOCKS server.
    pub port: u16,
    /// Optional user name.
    pub user: Option<String>,
    /// Optional password.
    pub password: Option<String>,
}

/// Parses a proxy URL.
pub(crate) fn proxy_url(text: &str) -> Result<ProxyUrl, Expected> {
    const EXPECTED: Expected = "a socks5:// or socks5h:// URL like socks5://user:pass@127.0.0.1:1080";
    let t = text.trim();
    let (remote_dns, rest) = if let Some(r) = t.strip_prefix("socks5://") {
        (false, r)
    } else if let Some(r) = t.strip_prefix("socks5h://") {
        (true, r)
    } else {
        return Err(EXPECTED);
    };
    let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let (host, port) = split_host_port(hostport, 1080).ok_or(EXPECTED)?;
    Ok(ProxyUrl { remote_dns, host, port, user, password })
}

fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if text.is_empty() {
        return None;
    }
    if let Some(v6) = text.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok().filter(|&p| p != 0)?,
            None if rest.is_empty() => default_port,
            None => return None,
        };
        return Some((ip.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => {
            Some((h.to_owned(), p.parse().ok().filter(|&p| p != 0)?))
        }
        Some(_) => None,
        None => Some((text.to_owned(), default_port)),
    }
}

/// A DNS resolver URI: `https://host[/path]`, `tls://host[:port]`, `udp://IP[:port]` or a bare IP.
pub(crate) fn dns_uri(text: &str) -> Result<String, Expected> {
    const EXPECTED: Expected =
        "a DNS URI: https://host[/path], tls://host[:port], udp://IP[:port] or a bare IP";
    let t = text.trim();
    if t.parse::<IpAddr>().is_ok() {
        return Ok(t.to_owned());
    }
    let ok = if let Some(r) = t.strip_prefix("https://") {
        let host = r.split('/').next().unwrap_or_default();
        !host.is_empty() && !host.contains('@')
    } else if let Some(r) = t.strip_prefix("tls://") {
        !r.contains('/') && !r.contains('@') && split_host_port(r, 853).is_some()
    } else if let Some(r) = t.strip_prefix("udp://") {
        split_host_port(r, 53).is_some_and(|(h, _)| h.parse::<IpAddr>().is_ok())
    } else {
        false
    };
    if ok { Ok(t.to_owned()) } else { Err(EXPECTED) }
}

/// A block/allow list source: an existing file, or an http(s) URL with a host.
pub(crate) fn list_source(text: &str) -> Result<String, Expected> {
    const EXPECTED: Expected = "an existing file path or an http(s):// URL";
    let t = text.trim();
    let path = std::path::Path::new(t);
    if path.is_file() {
        return Ok(std::path::absolute(path).map_or_else(|_| t.to_owned(), |p| p.display().to_string()));
    }
    for scheme in ["http://", "https://"] {
        if let Some(r) = t.strip_prefix(scheme)
            && !r.split(['/', '?', '#']).next().unwrap_or_default().is_empty()
        {
            return Ok(t.to_owned());
        }
    }
    Err(EXPECTED)
}

/// An `https://` URL with a host (doppelganger).
pub(crate) fn https_url(text: &str) -> Result<String, Expected> {
    let t = text.trim();
    match t.strip_prefix("https://") {
        Some(r) if !r.split(['/', '?', '#']).next().unwrap_or_default().is_empty() => Ok(t.to_owned()),
        _ => Err("an https:// URL with a host"),
    }
}

/// A metric prefix: lowercase letters and digits only.
pub(crate) fn metric_prefix(text: &str) -> Result<String, Expected> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err("lowercase letters and digits only (no dots or underscores)")
    }
}

/// An HTTP path, normalised to `/` + the value without leading/trailing slashes.
pub(crate) fn http_path(text: &str) -> String {
    format!("/{}", text.trim().trim_matches('/'))
}

/// A date `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp, as Unix seconds.
pub(crate) fn timestamp(text: &str) -> Result<i64, Expected> {
    const EXPECTED: Expected = "an RFC 3339 timestamp like 2026-12-31T23:59:59Z or a date like 2026-12-31";
    let t = text.trim();
    let num = |s: &str| -> Result<i64, Expected> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EXPECTED);
        }
        s.parse().map_err(|_| EXPECTED)
    };
    let (date, time) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut d = date.split('-');
    let (y, m, day) =
        (num(d.next().ok_or(EXPECTED)?)?, num(d.next().ok_or(EXPECTED)?)?, num(d.next().ok_or(EXPECTED)?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return Err(EXPECTED);
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(time) = time {
        let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
            Some(i) => (&time[..i], &time[i..]),
            None => return Err(EXPECTED),
        };
        let clock = clock.split('.').next().unwrap_or_default();
        let mut c = clock.split(':');
        let (h, mi, s) = (
            num(c.next().ok_or(EXPECTED)?)?,
            num(c.next().ok_or(EXPECTED)?)?,
            num(c.next().ok_or(EXPECTED)?)?,
        );
        if c.next().is_some() || h > 23 || mi > 59 || s > 60 {
            return Err(EXPECTED);
        }
        secs += h * 3600 + mi * 60 + s;
        if !offset.eq_ignore_ascii_case("z") {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (oh, om) = offset[1..].split_once(':').ok_or(EXPECTED)?;
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                return Err(EXPECTED);
            }
            secs -= sign * (oh * 3600 + om * 60);
        }
    }
    Ok(secs)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
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
    fn go_durations() {
        assert_eq!(duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("5S"), Ok(Duration::from_secs(5)));
        assert_eq!(duration(" 2 m "), Ok(Duration::from_secs(120)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("1us"), Ok(Duration::from_micros(1)));
        for bad in ["", "5", "-5s", "5 minutes", "s", "1x", "1.2.3s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes_are_base_two() {
        assert_eq!(bytes("1mib"), Ok(1 << 20));
        assert_eq!(bytes("1MB"), Ok(1 << 20));
        assert_eq!(bytes("512kib"), Ok(512 << 10));
        assert_eq!(bytes("4KB"), Ok(4096));
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("1.5 KiB"), Ok(1536));
        for bad in ["", "mb", "1xb", "-1kb"] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("1970-01-01"), Ok(0));
        assert_eq!(timestamp("2026-12-31"), Ok(1_798_675_200));
        assert_eq!(timestamp("2026-12-31T23:59:59Z"), Ok(1_798_761_599));
        assert_eq!(timestamp("2026-12-31T23:59:59+01:00"), Ok(1_798_757_999));
        for bad in ["2026-13-01", "2026-02-30", "tomorrow", "2026-12-31T25:00:00Z", "2026-12-31T10:00:00"] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxies() {
        let p = proxy_url("socks5://u:p@127.0.0.1:1081").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_deref(), p.password.as_deref()),
            ("127.0.0.1", 1081, Some("u"), Some("p"))
        );
        assert_eq!(proxy_url("socks5h://proxy.example").unwrap().port, 1080);
        assert_eq!(proxy_url("socks5://[::1]:9050").unwrap().host, "::1");
        assert!(proxy_url("http://127.0.0.1:8080").is_err());
        assert!(proxy_url("").is_err());
        assert!(proxy_url("socks5://").is_err());
    }
}
