//! The user last matched from each client address, tried first on that address's next
//! handshake. Bounded: when full, it is cleared (hints are an optimisation, not state).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use mtg_proto::UserId;

/// Bounded map client IP → last matched user.
#[derive(Debug)]
pub(crate) struct HintCache {
    capacity: usize,
    map: Mutex<HashMap<IpAddr, UserId>>,
}

impl HintCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, map: Mutex::new(HashMap::with_capacity(capacity.min(1024))) }
    }

    pub(crate) fn get(&self, ip: IpAddr) -> Option<UserId> {
        self.map.lock().ok()?.get(&ip).copied()
    }

    pub(crate) fn put(&self, ip: IpAddr, user: UserId) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity && !map.contains_key(&ip) {
                map.clear();
            }
            map.insert(ip, user);
        }
    }
}
