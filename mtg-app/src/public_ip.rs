//! Our public addresses: `public-ipv4` / `public-ipv6` (or `access`'s flags) when given, else
//! asked of <https://ifconfig.co> (`Accept: text/plain`) once over IPv4 and once over IPv6, as
//! mtg does. Used by `access`, `doctor` and the start-up SNI check.

use std::net::IpAddr;
use std::time::Duration;

use crate::http_fetch::{Get, get_blocking_over};

/// The service that tells us our address.
pub const DETECT_URL: &str = "https://ifconfig.co";

/// Largest answer read from the detection service.
const ANSWER_LIMIT: u64 = 1024;

/// Our public address per family, and why detection failed where it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicIps {
    /// Our IPv4 address.
    pub ipv4: Option<IpAddr>,
    /// Our IPv6 address.
    pub ipv6: Option<IpAddr>,
    /// One line per failed detection (empty when nothing was detected or all worked).
    pub errors: Vec<String>,
}

impl PublicIps {
    /// The known addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ipv4.into_iter().chain(self.ipv6).collect()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }
}

/// Reads the detection service's text answer: one address of the asked family, surrounded by
/// whitespace at most.
pub fn parse_answer(body: &[u8], ipv6: bool) -> Result<IpAddr, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not text".to_owned())?.trim();
    let ip: IpAddr = text.parse().map_err(|_| {
        let shown: String = text.chars().take(60).collect();
        format!("the answer {shown:?} is not an IP address")
    })?;
    if ip.is_ipv6() == ipv6 {
        Ok(ip)
    } else {
        Err(format!("asked over IPv{}, got {ip}", if ipv6 { 6 } else { 4 }))
    }
}

/// Asks `url` for our address of one family (on the calling thread, within `timeout`).
pub fn detect_blocking(url: &str, ipv6: bool, timeout: Duration) -> Result<IpAddr, String> {
    let request = Get { url: url.to_owned(), accept: "text/plain", timeout, limit: ANSWER_LIMIT };
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    let body = get_blocking_over(&request, ipv6).map_err(|e| format!("{family}: {e}"))?;
    parse_answer(&body, ipv6).map_err(|e| format!("{family}: GET {}: {e}", crate::config::redacted(url)))
}

/// `known` addresses as they are; when none is known, both families are asked of `url` at
/// once (two threads, each within `timeout`), as `access`, `doctor` and `run` need.
pub fn known_or_detected(
    known_v4: Option<IpAddr>,
    known_v6: Option<IpAddr>,
    url: &str,
    timeout: Duration,
) -> PublicIps {
    if known_v4.is_some() || known_v6.is_some() {
        return PublicIps { ipv4: known_v4, ipv6: known_v6, errors: Vec::new() };
    }
    let ask = |ipv6: bool| {
        let url = url.to_owned();
        std::thread::Builder::new()
            .name(format!("detect-ipv{}", if ipv6 { 6 } else { 4 }))
            .spawn(move || detect_blocking(&url, ipv6, timeout))
    };
    let (v4, v6) = (ask(false), ask(true));
    let mut found = PublicIps::default();
    for (ipv6, thread) in [(false, v4), (true, v6)] {
        let result = match thread {
            Ok(handle) => handle.join().unwrap_or_else(|_| Err("the detection thread failed".to_owned())),
            Err(e) => Err(format!("cannot start a thread: {e}")),
        };
        match result {
            Ok(ip) if ipv6 => found.ipv6 = Some(ip),
            Ok(ip) => found.ipv4 = Some(ip),
            Err(e) => found.errors.push(e),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_address_of_the_asked_family() {
        assert_eq!(parse_answer(b"203.0.113.7\n", false), Ok("203.0.113.7".parse().unwrap()));
        assert_eq!(parse_answer(b" 2001:db8::7 ", true), Ok("2001:db8::7".parse().unwrap()));
        assert_eq!(parse_answer(b"2001:db8::7", false), Err("asked over IPv4, got 2001:db8::7".into()));
        assert_eq!(
            parse_answer(b"<html>blocked</html>", false),
            Err("the answer \"<html>blocked</html>\" is not an IP address".into())
        );
        assert_eq!(parse_answer(&[0xff, 0xfe], true), Err("the answer is not text".into()));
    }

    #[test]
    fn known_addresses_are_not_detected() {
        // An unroutable URL: asking it would fail, so success proves nothing was asked.
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let ips = known_or_detected(Some(v4), None, "http://[::1]:1/", Duration::from_secs(1));
        assert_eq!(ips, PublicIps { ipv4: Some(v4), ipv6: None, errors: vec![] });
    }

    #[test]
    fn detects_over_each_family_from_a_local_service() {
        let (url, server) = crate::http_fetch::test_server::serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n198.51.100.9\n",
        );
        // The IPv6 ask of an IPv4-only URL fails; the IPv4 one gets the answer.
        let ips = known_or_detected(None, None, &url, Duration::from_secs(5));
        assert_eq!(ips.ipv4, Some("198.51.100.9".parse().unwrap()));
        assert_eq!(ips.ipv6, None);
        assert_eq!(ips.errors.len(), 1, "{:?}", ips.errors);
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.contains("\r\naccept: text/plain\r\n"), "{request}");
    }
}
