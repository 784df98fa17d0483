//! Heartbeats and the fleet view: every second each instance writes its counters under a key
//! that expires ([`BEAT_TTL`](super::store::BEAT_TTL)) and reads everyone's; `/cluster` and
//! `/stats?scope=cluster` render the last read, never waiting on Redis.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::engine::Directory;

/// One user's counters on one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBeat {
    /// Live sessions.
    pub connections: u64,
    /// Payload bytes from clients since the instance started.
    pub bytes_in: u64,
    /// Payload bytes to clients since the instance started.
    pub bytes_out: u64,
}

impl UserBeat {
    fn add(&mut self, other: &Self) {
        self.connections += other.connections;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// One instance's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The instance's `[cluster] name`.
    pub name: String,
    /// When it started, Unix milliseconds.
    pub started_at_ms: i64,
    /// When it wrote this beat, Unix milliseconds.
    pub seen_at_ms: i64,
    /// Its totals.
    pub totals: UserBeat,
    /// Its counters by user.
    pub users: BTreeMap<String, UserBeat>,
    /// Client addresses with live sessions, of the users with cluster-wide `max-ips` only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
}

impl Beat {
    /// This instance's beat now.
    pub(super) fn local(name: &str, started_at_ms: i64, now_ms: i64, users: &Directory) -> Self {
        let mut beat = Self { name: name.to_owned(), started_at_ms, seen_at_ms: now_ms, ..Self::default() };
        for ((user, stats), limits) in users.names().iter().zip(users.all_stats()).zip(users.all_limits()) {
            if limits.cluster_wide_ips {
                let own = stats.address_list();
                if !own.is_empty() {
                    beat.addresses.insert(user.clone(), own);
                }
            }
            let s = stats.snapshot();
            let counts =
                UserBeat { connections: s.connections, bytes_in: s.bytes_in, bytes_out: s.bytes_out };
            beat.totals.add(&counts);
            // Users with no traffic yet stay out: the beat grows with the active users only.
            if counts != UserBeat::default() {
                beat.users.insert(user.clone(), counts);
            }
        }
        beat
    }
}

/// The fleet as last read from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Live instances (heartbeats not expired), by name.
    pub instances: BTreeMap<String, Beat>,
}

impl FleetView {
    /// The view from heartbeats as read (unreadable ones are skipped).
    pub(super) fn from_beats(beats: &[String]) -> Self {
        let instances = beats
            .iter()
            .filter_map(|text| serde_json::from_str::<Beat>(text).ok())
            .map(|beat| (beat.name.clone(), beat))
            .collect();
        Self { instances }
    }

    /// Live sessions of `user` on instances other than `me`.
    pub(super) fn others_connections(&self, me: &str, user: &str) -> u64 {
        self.instances
            .values()
            .filter(|b| b.name != me)
            .filter_map(|b| b.users.get(user))
            .map(|u| u.connections)
            .sum()
    }

    /// Client addresses with live sessions of `user` on instances other than `me` (each once).
    pub(super) fn others_addresses(&self, me: &str, user: &str) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self
            .instances
            .values()
            .filter(|b| b.name != me)
            .filter_map(|b| b.addresses.get(user))
            .flatten()
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The fleet's totals: all users, and by user.
    pub fn totals(&self) -> (UserBeat, BTreeMap<String, UserBeat>) {
        let mut all = UserBeat::default();
        let mut users: BTreeMap<String, UserBeat> = BTreeMap::new();
        for beat in self.instances.values() {
            all.add(&beat.totals);
            for (name, counts) in &beat.users {
                users.entry(name.clone()).or_default().add(counts);
            }
        }
        (all, users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(name: &str, users: &[(&str, u64, u64)]) -> String {
        let mut b = Beat { name: name.into(), started_at_ms: 1, seen_at_ms: 2, ..Beat::default() };
        for (user, connections, bytes) in users {
            let counts = UserBeat { connections: *connections, bytes_in: *bytes, bytes_out: 2 * bytes };
            b.totals.add(&counts);
            b.users.insert((*user).into(), counts);
        }
        serde_json::to_string(&b).unwrap()
    }

    #[test]
    fn totals_and_other_instances_connections() {
        let view = FleetView::from_beats(&[
            beat("a", &[("alice", 2, 10), ("bob", 1, 1)]),
            beat("b", &[("alice", 3, 5)]),
            "not json".into(),
        ]);
        assert_eq!(view.instances.len(), 2);
        assert_eq!(view.others_connections("a", "alice"), 3);
        assert_eq!(view.others_connections("b", "alice"), 2);
        assert_eq!(view.others_connections("c", "alice"), 5);
        assert_eq!(view.others_connections("a", "carol"), 0);
        let (all, users) = view.totals();
        assert_eq!(all, UserBeat { connections: 6, bytes_in: 16, bytes_out: 32 });
        assert_eq!(users["alice"], UserBeat { connections: 5, bytes_in: 15, bytes_out: 30 });
    }

    #[test]
    fn other_instances_addresses_each_once() {
        let with = |name: &str, ips: &[&str]| {
            let mut b = Beat { name: name.into(), ..Beat::default() };
            b.addresses.insert("alice".into(), ips.iter().map(|ip| ip.parse().unwrap()).collect());
            serde_json::to_string(&b).unwrap()
        };
        let view = FleetView::from_beats(&[
            with("a", &["127.0.0.1"]),
            with("b", &["127.0.0.2", "127.0.0.1"]),
            with("c", &["::1"]),
        ]);
        let ips = |v: &[&str]| v.iter().map(|ip| ip.parse().unwrap()).collect::<Vec<IpAddr>>();
        assert_eq!(view.others_addresses("a", "alice"), ips(&["127.0.0.1", "127.0.0.2", "::1"]));
        assert_eq!(view.others_addresses("b", "alice"), ips(&["127.0.0.1", "::1"]));
        assert_eq!(view.others_addresses("a", "bob"), ips(&[]));
        // A beat without addresses (an older instance) still reads.
        let plain = serde_json::to_string(&Beat { name: "d".into(), ..Beat::default() }).unwrap();
        assert!(!plain.contains("addresses"));
        assert_eq!(FleetView::from_beats(&[plain]).instances.len(), 1);
    }
}
