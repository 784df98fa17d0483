//! One list entry: an IPv4 or IPv6 network (`addr/prefix`), parsed from a CIDR or a bare IP.

use std::fmt;
use std::net::IpAddr;

/// A network: every address whose first `prefix` bits equal those of `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a list entry is not a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The address part is not an IPv4 or IPv6 address.
    Address(String),
    /// The prefix length is not a number within the family's bits.
    Prefix(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => write!(f, "{a:?} is not an IP address"),
            Self::Prefix(p) => write!(f, "{p:?} is not a prefix length (0-32 for IPv4, 0-128 for IPv6)"),
        }
    }
}

impl std::error::Error for NetError {}

impl IpNet {
    /// The network of `addr` with `prefix` bits (host bits are kept as given; matching ignores
    /// them). `None` when `prefix` exceeds the family's bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= bits(addr)).then_some(Self { addr, prefix })
    }

    /// Parses `a.b.c.d/n`, `x:y::z/n` or a bare IP (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, NetError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| NetError::Address(addr_text.to_owned()))?;
        let prefix = match prefix_text {
            None => bits(addr),
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| NetError::Prefix(p.to_owned()))?
            }
            Some(p) => return Err(NetError::Prefix(p.to_owned())),
        };
        Self::new(addr, prefix).ok_or_else(|| NetError::Prefix(prefix.to_string()))
    }

    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network (an IPv4 address never matches an IPv6 network and the
    /// other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_u32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_u128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Address bits of the family of `addr`.
fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The network mask of an IPv4 prefix.
pub(super) fn mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The network mask of an IPv6 prefix.
pub(super) fn mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_bare_ips_of_both_families() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert_eq!((net.addr(), net.prefix()), (ip("10.1.0.0"), 16));
        let net = IpNet::parse("192.0.2.7").unwrap();
        assert_eq!((net.addr(), net.prefix()), (ip("192.0.2.7"), 32));
        let net = IpNet::parse("2001:db8::/32").unwrap();
        assert_eq!((net.addr(), net.prefix()), (ip("2001:db8::"), 32));
        let net = IpNet::parse("2001:db8::1").unwrap();
        assert_eq!((net.addr(), net.prefix()), (ip("2001:db8::1"), 128));
        assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().prefix(), 0);
    }

    #[test]
    fn rejects_bad_addresses_and_prefixes_naming_the_part() {
        assert_eq!(IpNet::parse("10.0.0.256"), Err(NetError::Address("10.0.0.256".into())));
        assert_eq!(IpNet::parse("example.com/8"), Err(NetError::Address("example.com".into())));
        assert_eq!(IpNet::parse("10.0.0.0/33"), Err(NetError::Prefix("33".into())));
        assert_eq!(IpNet::parse("::/129"), Err(NetError::Prefix("129".into())));
        assert_eq!(IpNet::parse("10.0.0.0/"), Err(NetError::Prefix(String::new())));
        assert_eq!(IpNet::parse("10.0.0.0/+8"), Err(NetError::Prefix("+8".into())));
        assert_eq!(IpNet::parse("10.0.0.0/8/8"), Err(NetError::Prefix("8/8".into())));
        assert_eq!(IpNet::parse("10.0.0.0/0008"), Err(NetError::Prefix("0008".into())));
    }

    #[test]
    fn containment_ignores_host_bits_and_other_families() {
        let net = IpNet::parse("10.1.2.3/16").unwrap();
        assert!(net.contains(ip("10.1.0.0")));
        assert!(net.contains(ip("10.1.255.255")));
        assert!(!net.contains(ip("10.2.0.0")));
        assert!(!net.contains(ip("::ffff:10.1.0.1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("255.255.255.255")));
        assert!(!IpNet::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(IpNet::parse("::/0").unwrap().contains(ip("::1")));
        let six = IpNet::parse("2001:db8:abcd::/48").unwrap();
        assert!(six.contains(ip("2001:db8:abcd:ffff::1")));
        assert!(!six.contains(ip("2001:db8:abce::")));
    }
}
