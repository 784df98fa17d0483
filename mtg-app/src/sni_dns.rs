//! Whether the secrets' hostnames resolve to this server: FakeTLS clients name the hostname in
//! their SNI, so a censor comparing it with the address they connect to sees a mismatch when it
//! does not point here. `doctor` reports it; `run` warns about it in the background at start.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use tracing::{debug, warn};

use crate::public_ip::{DETECT_URL, known_or_detected};

/// How a hostname's addresses compare with our public ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every public address of ours is among the hostname's.
    Match,
    /// Some of ours are, these are not.
    Partial {
        /// Our addresses the hostname does not resolve to.
        missing: Vec<IpAddr>,
    },
    /// None of ours is.
    Mismatch,
}

/// Compares `resolved` (the hostname's addresses) with `ours` (not empty); IPv4-mapped IPv6
/// addresses count as IPv4.
pub fn compare(resolved: &[IpAddr], ours: &[IpAddr]) -> Verdict {
    let resolved: BTreeSet<IpAddr> = resolved.iter().map(IpAddr::to_canonical).collect();
    let missing: Vec<IpAddr> =
        ours.iter().filter(|ip| !resolved.contains(&ip.to_canonical())).copied().collect();
    if missing.is_empty() {
        Verdict::Match
    } else if missing.len() == ours.len() {
        Verdict::Mismatch
    } else {
        Verdict::Partial { missing }
    }
}

/// Addresses as a short list for messages: `1.2.3.4, 2001:db8::1`.
pub fn list(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The distinct addresses of `host`, with the OS resolver (blocking).
pub fn resolve_blocking(host: &str) -> std::io::Result<Vec<IpAddr>> {
    let set: BTreeSet<IpAddr> = (host, 443).to_socket_addrs()?.map(|a| a.ip().to_canonical()).collect();
    Ok(set.into_iter().collect())
}

/// `run`'s start-up check, on a background thread so serving is not delayed: for each
/// hostname, a warning when it does not resolve to our public address (configured, else
/// detected within `timeout`). Never fatal.
pub fn spawn_startup_check(
    hosts: Vec<String>,
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    timeout: Duration,
) {
    if hosts.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new().name("sni-check".into()).spawn(move || {
        let ours = known_or_detected(ipv4, ipv6, DETECT_URL, timeout);
        if ours.is_empty() {
            warn!(
                errors = ?ours.errors,
                "cannot check the secrets' hostnames against our public IP: none known; set public-ipv4 / public-ipv6"
            );
            return;
        }
        let ours = ours.addresses();
        for host in &hosts {
            let resolved = match resolve_blocking(host) {
                Ok(resolved) => resolved,
                Err(e) => {
                    warn!(host = %host, error = %e, "cannot resolve a secret's hostname");
                    continue;
                }
            };
            match compare(&resolved, &ours) {
                Verdict::Match => debug!(host = %host, "secret hostname resolves to our public IP"),
                Verdict::Partial { missing } => warn!(
                    host = %host,
                    resolved = %list(&resolved),
                    missing = %list(&missing),
                    "secret hostname does not resolve to all of our public IPs"
                ),
                Verdict::Mismatch => warn!(
                    host = %host,
                    resolved = %list(&resolved),
                    public = %list(&ours),
                    "secret hostname does not resolve to our public IP: censors may notice the SNI mismatch"
                ),
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the SNI/IP check");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn compares_per_address() {
        let resolved = ips(&["203.0.113.5", "2001:db8::5"]);
        assert_eq!(compare(&resolved, &ips(&["203.0.113.5"])), Verdict::Match);
        assert_eq!(compare(&resolved, &ips(&["203.0.113.5", "2001:db8::5"])), Verdict::Match);
        assert_eq!(
            compare(&resolved, &ips(&["203.0.113.5", "2001:db8::6"])),
            Verdict::Partial { missing: ips(&["2001:db8::6"]) }
        );
        assert_eq!(compare(&resolved, &ips(&["198.51.100.1"])), Verdict::Mismatch);
        assert_eq!(compare(&ips(&["::ffff:203.0.113.5"]), &ips(&["203.0.113.5"])), Verdict::Match);
        assert_eq!(list(&resolved), "203.0.113.5, 2001:db8::5");
    }

    #[test]
    fn resolves_localhost_to_loopback() {
        let resolved = resolve_blocking("localhost").unwrap();
        assert!(resolved.contains(&"127.0.0.1".parse().unwrap()), "{resolved:?}");
    }
}
