//! Telegram datacenter addresses: the built-in table (reference §4.c), per-DC overrides from
//! the config, and the order `prefer-ip` asks for.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// How to order (or filter) IPv4 and IPv6 DC addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferIp {
    /// IPv4 first, then IPv6.
    PreferIpv4,
    /// IPv6 first, then IPv4 (mtg's default).
    #[default]
    PreferIpv6,
    /// IPv4 only.
    OnlyIpv4,
    /// IPv6 only.
    OnlyIpv6,
}

/// The built-in table: DC → (IPv4 addresses, IPv6 addresses).
const BUILT_IN: &[(i16, &[&str], &[&str])] = &[
    (1, &["149.154.175.50:443"], &["[2001:b28:f23d:f001::a]:443"]),
    (2, &["149.154.167.51:443", "95.161.76.100:443"], &["[2001:67c:4e8:f002::a]:443"]),
    (3, &["149.154.175.100:443"], &["[2001:b28:f23d:f003::a]:443"]),
    (4, &["149.154.167.91:443"], &["[2001:67c:4e8:f004::a]:443"]),
    (5, &["149.154.171.5:443"], &["[2001:b28:f23f:f005::a]:443"]),
    (203, &["91.105.192.100:443"], &["[2a0a:f280:203:a:5000::100]:443"]),
];

/// Addresses of every known DC, in dial order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcTable {
    dcs: BTreeMap<i16, Vec<SocketAddr>>,
}

impl DcTable {
    /// The built-in table ordered by `prefer`, with `overrides` replacing whole entries (an
    /// override is used as written, in its order, whatever `prefer` says).
    pub fn new(prefer: PreferIp, overrides: &BTreeMap<i16, Vec<SocketAddr>>) -> Self {
        let mut dcs = BTreeMap::new();
        for &(dc, v4, v6) in BUILT_IN {
            // Literal addresses above: parsing cannot fail (checked by a test).
            let parse =
                |list: &[&str]| -> Vec<SocketAddr> { list.iter().filter_map(|a| a.parse().ok()).collect() };
            let (v4, v6) = (parse(v4), parse(v6));
            let ordered = match prefer {
                PreferIp::PreferIpv4 => [v4, v6].concat(),
                PreferIp::PreferIpv6 => [v6, v4].concat(),
                PreferIp::OnlyIpv4 => v4,
                PreferIp::OnlyIpv6 => v6,
            };
            dcs.insert(dc, ordered);
        }
        for (dc, addrs) in overrides {
            dcs.insert(*dc, addrs.clone());
        }
        Self { dcs }
    }

    /// Addresses of `dc`, in dial order; empty if unknown.
    pub fn addresses(&self, dc: i16) -> &[SocketAddr] {
        self.dcs.get(&dc).map_or(&[], Vec::as_slice)
    }

    /// Every DC of the table with its addresses, by DC number.
    pub fn dcs(&self) -> impl Iterator<Item = (i16, &[SocketAddr])> {
        self.dcs.iter().map(|(dc, addrs)| (*dc, addrs.as_slice()))
    }

    /// Whether `dc` has addresses.
    pub fn knows(&self, dc: i16) -> bool {
        !self.addresses(dc).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_parses_completely() {
        let t = DcTable::new(PreferIp::PreferIpv6, &BTreeMap::new());
        for &(dc, v4, v6) in BUILT_IN {
            assert_eq!(t.addresses(dc).len(), v4.len() + v6.len(), "DC {dc}");
        }
        assert!(t.addresses(2)[0].is_ipv6());
        assert_eq!(t.addresses(2).len(), 3);
    }

    #[test]
    fn prefer_and_only() {
        let none = BTreeMap::new();
        assert!(DcTable::new(PreferIp::PreferIpv4, &none).addresses(1)[0].is_ipv4());
        assert!(DcTable::new(PreferIp::OnlyIpv4, &none).addresses(5).iter().all(SocketAddr::is_ipv4));
        assert!(DcTable::new(PreferIp::OnlyIpv6, &none).addresses(5).iter().all(SocketAddr::is_ipv6));
        assert!(!DcTable::new(PreferIp::PreferIpv6, &none).knows(7));
    }

    #[test]
    fn overrides_replace_entries() {
        let mut o = BTreeMap::new();
        o.insert(2, vec!["127.0.0.1:14402".parse().unwrap()]);
        o.insert(9, vec!["127.0.0.1:14409".parse().unwrap()]);
        let t = DcTable::new(PreferIp::OnlyIpv6, &o);
        assert_eq!(t.addresses(2), &["127.0.0.1:14402".parse::<SocketAddr>().unwrap()]);
        assert!(t.knows(9));
        let dcs: Vec<i16> = t.dcs().map(|(dc, _)| dc).collect();
        assert_eq!(dcs, [1, 2, 3, 4, 5, 9, 203]);
        assert_eq!(t.dcs().nth(1).unwrap().1, t.addresses(2));
    }
}
