//! The lookup structure of a loaded list: every network turned into an inclusive address range,
//! sorted and merged into disjoint ranges per family, searched by binary search.
//!
//! Chosen over a prefix trie or a crate: a list of N networks becomes at most N ranges in two
//! flat vectors (16 or 32 bytes each, no per-node allocation), a lookup is one `partition_point`
//! (O(log N)), and building it is one sort. Nothing to maintain beyond these lines.

use std::net::IpAddr;

use super::net::{IpNet, mask_u32, mask_u128};

/// Disjoint, sorted, inclusive address ranges of IPv4 and IPv6 networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl RangeSet {
    /// The set of every address in any of `nets`.
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net.addr() {
                IpAddr::V4(a) => {
                    let mask = mask_u32(net.prefix());
                    let start = u32::from(a) & mask;
                    v4.push((start, start | !mask));
                }
                IpAddr::V6(a) => {
                    let mask = mask_u128(net.prefix());
                    let start = u128::from(a) & mask;
                    v6.push((start, start | !mask));
                }
            }
        }
        Self { v4: merged(v4), v6: merged(v6) }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack listener reports for IPv4 clients) is looked up as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => covered(&self.v4, u32::from(a)),
            IpAddr::V6(a) => covered(&self.v6, u128::from(a)),
        }
    }

    /// Number of disjoint ranges (after merging overlapping and adjacent networks).
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Sorts inclusive ranges and merges overlapping or adjacent ones.
fn merged<T: Copy + Ord + num::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1 >= start || last.1.successor() == Some(start) => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` is inside one of the sorted disjoint `ranges`.
fn covered<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(start, _)| start <= x);
    after > 0 && ranges[after - 1].1 >= x
}

/// The one operation `merged` needs from both address widths.
mod num {
    /// `x + 1` unless it overflows.
    pub(super) trait One: Sized {
        fn successor(self) -> Option<Self>;
    }

    impl One for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }

    impl One for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| IpNet::parse(s).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn merges_overlapping_and_adjacent_networks() {
        let set = RangeSet::new(&nets(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.7", "10.0.2.0/24"]));
        assert_eq!(set.v4, vec![(0x0a00_0000, 0x0a00_00ff), (0x0a00_0200, 0x0a00_02ff)]);
        assert!(set.contains(ip("10.0.0.255")));
        assert!(!set.contains(ip("10.0.1.0")));
        assert!(set.contains(ip("10.0.2.0")));
        assert!(!set.contains(ip("10.0.3.0")));
    }

    #[test]
    fn whole_spaces_and_edges() {
        let set = RangeSet::new(&nets(&["0.0.0.0/0", "::/0"]));
        assert_eq!(set.ranges(), 2);
        assert!(set.contains(ip("0.0.0.0")) && set.contains(ip("255.255.255.255")));
        assert!(set.contains(ip("::")) && set.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        let top = RangeSet::new(&nets(&["255.255.255.255", "255.255.255.254"]));
        assert_eq!(top.v4, vec![(u32::MAX - 1, u32::MAX)]);
        assert!(!RangeSet::default().contains(ip("1.2.3.4")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_entries() {
        let set = RangeSet::new(&nets(&["127.0.0.2"]));
        assert!(set.contains(ip("::ffff:127.0.0.2")));
        assert!(!set.contains(ip("::ffff:127.0.0.1")));
    }

    /// Networks biased to share prefixes, so overlaps and adjacency happen often.
    fn v4_net() -> impl Strategy<Value = IpNet> {
        (0u32..64, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, prefix)| {
            let addr = (hi << 26) | (lo >> 6);
            IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), prefix).unwrap()
        })
    }

    fn v6_net() -> impl Strategy<Value = IpNet> {
        (0u128..16, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, prefix)| {
            let addr = (hi << 124) | (lo >> 4);
            IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), prefix).unwrap()
        })
    }

    fn probe_near(nets: &[IpNet], pick: usize, delta: i8, random: IpAddr) -> IpAddr {
        // Half the probes land on a network edge (±1), the others anywhere.
        let Some(net) = nets.get(pick % (nets.len() + 1)) else { return random };
        match net.addr() {
            IpAddr::V4(a) => {
                let mask = mask_u32(net.prefix());
                let edge = if delta >= 0 { u32::from(a) | !mask } else { u32::from(a) & mask };
                IpAddr::V4(Ipv4Addr::from(edge.wrapping_add_signed(i32::from(delta.signum()))))
            }
            IpAddr::V6(a) => {
                let mask = mask_u128(net.prefix());
                let edge = if delta >= 0 { u128::from(a) | !mask } else { u128::from(a) & mask };
                IpAddr::V6(Ipv6Addr::from(edge.wrapping_add_signed(i128::from(delta.signum()))))
            }
        }
    }

    proptest! {
        #[test]
        fn v4_lookup_equals_a_linear_scan(
            list in prop::collection::vec(v4_net(), 0..40),
            probes in prop::collection::vec((any::<usize>(), any::<i8>(), any::<u32>()), 1..40),
        ) {
            let set = RangeSet::new(&list);
            for (pick, delta, random) in probes {
                let ip = probe_near(&list, pick, delta, IpAddr::V4(Ipv4Addr::from(random)));
                prop_assert_eq!(set.contains(ip), list.iter().any(|n| n.contains(ip)), "{}", ip);
            }
        }

        #[test]
        fn v6_lookup_equals_a_linear_scan(
            list in prop::collection::vec(v6_net(), 0..40),
            probes in prop::collection::vec((any::<usize>(), any::<i8>(), any::<u128>()), 1..40),
        ) {
            let set = RangeSet::new(&list);
            for (pick, delta, random) in probes {
                let ip = probe_near(&list, pick, delta, IpAddr::V6(Ipv6Addr::from(random)));
                if ip.to_canonical().is_ipv4() {
                    continue; // IPv4-mapped: looked up as IPv4, covered by the mixed test.
                }
                prop_assert_eq!(set.contains(ip), list.iter().any(|n| n.contains(ip)), "{}", ip);
            }
        }

        #[test]
        fn mixed_families_never_cross_match(
            v4 in prop::collection::vec(v4_net(), 0..20),
            v6 in prop::collection::vec(v6_net(), 0..20),
            a in any::<u32>(),
            b in any::<u128>(),
        ) {
            let all: Vec<IpNet> = v4.iter().chain(&v6).copied().collect();
            let set = RangeSet::new(&all);
            let four = IpAddr::V4(Ipv4Addr::from(a));
            let six = IpAddr::V6(Ipv6Addr::from(b));
            prop_assert_eq!(set.contains(four), v4.iter().any(|n| n.contains(four)));
            // A mapped address is looked up as IPv4, everything else in the IPv6 ranges.
            let expected_six = match six.to_canonical() {
                IpAddr::V4(_) => v4.iter().any(|n| n.contains(six.to_canonical())),
                IpAddr::V6(_) => v6.iter().any(|n| n.contains(six)),
            };
            prop_assert_eq!(set.contains(six), expected_six);
        }
    }
}
