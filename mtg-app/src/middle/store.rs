//! The middle-proxy snapshot sessions route by: the proxy secret and the IPv4/IPv6 lists,
//! replaced whole (never merged, never emptied) by the bootstrap, read lock-free-ish (one
//! `RwLock` read of an `Arc` per new middle-proxy session, never per chunk).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use mtg_proto::middle::{ProxyMap, ProxySecret};

/// One good copy of what `getProxySecret`, `getProxyConfig` and `getProxyConfigV6` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddleSnapshot {
    /// The proxy secret (key derivation, `key_select`).
    pub secret: ProxySecret,
    /// IPv4 middle proxies per signed DC id.
    pub v4: ProxyMap,
    /// IPv6 middle proxies per signed DC id (empty when never fetched).
    pub v6: ProxyMap,
}

/// The current snapshot and whether middle proxies may be used now.
#[derive(Debug, Default)]
pub struct MiddleStore {
    current: RwLock<Option<Arc<MiddleSnapshot>>>,
    /// Set while our clock is more than 30 s off Telegram's: middle proxies would refuse
    /// every handshake, so sessions go direct.
    skewed: AtomicBool,
    /// Bumped by every [`MiddleStore::publish`] (tests and diagnostics wait on it).
    generation: AtomicU64,
}

impl MiddleStore {
    /// The snapshot new middle-proxy sessions use; `None` before the first good copy and
    /// while the clock is skewed.
    pub fn current(&self) -> Option<Arc<MiddleSnapshot>> {
        if self.skewed.load(Ordering::Relaxed) {
            return None;
        }
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Swaps in a new good copy for new sessions (live ones keep theirs) and returns it.
    /// `Shared::publish_middle` also retires the pool's connections it makes stale.
    pub fn publish(&self, snapshot: MiddleSnapshot) -> Arc<MiddleSnapshot> {
        let snapshot = Arc::new(snapshot);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(snapshot.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        snapshot
    }

    /// The number of snapshots published so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Records whether our clock is too far off Telegram's for middle proxies.
    pub fn set_skewed(&self, skewed: bool) {
        self.skewed.store(skewed, Ordering::Relaxed);
    }

    /// Whether middle proxies are off because of clock skew.
    pub fn is_skewed(&self) -> bool {
        self.skewed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(first: u8) -> MiddleSnapshot {
        let secret = ProxySecret::new(&[first; 128]).expect("128 bytes is a valid length");
        let v4 = mtg_proto::middle::proxy_config::parse("proxy_for 2 127.0.0.1:8888;\n").map;
        MiddleSnapshot { secret, v4, v6: ProxyMap::default() }
    }

    #[test]
    fn nothing_until_published_and_nothing_while_skewed() {
        let store = MiddleStore::default();
        assert!(store.current().is_none());
        store.publish(snapshot(1));
        assert_eq!(store.current().as_deref(), Some(&snapshot(1)));
        store.set_skewed(true);
        assert!(store.current().is_none() && store.is_skewed());
        store.set_skewed(false);
        store.publish(snapshot(2));
        assert_eq!(store.current().as_deref(), Some(&snapshot(2)));
        assert_eq!(store.generation(), 2);
    }
}
