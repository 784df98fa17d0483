//! The throttle's live state: caps recomputed every `check-interval` from the users'
//! connection counts, read by every admission.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::accounting::UserStats;
use super::fair_share::fair_share;

/// What a recomputation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Caps appeared.
    Activated,
    /// Caps went away.
    Deactivated,
    /// Same state (caps may have moved).
    Unchanged,
}

/// Caps by user id under a global connection budget.
#[derive(Debug)]
pub struct Throttle {
    limit: u64,
    caps: RwLock<Arc<Vec<Option<u64>>>>,
    active: AtomicBool,
}

impl Throttle {
    /// A throttle for `limit` connections, with no caps yet.
    pub fn new(limit: u64) -> Self {
        Self { limit, caps: RwLock::new(Arc::new(Vec::new())), active: AtomicBool::new(false) }
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether any user is capped.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The cap of user `index`, if capped.
    pub fn cap(&self, index: usize) -> Option<u64> {
        self.caps().get(index).copied().flatten()
    }

    /// All caps by user id.
    pub fn caps(&self) -> Arc<Vec<Option<u64>>> {
        // A poisoned lock only means a panic elsewhere while swapping: the value is whole.
        self.caps.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Recomputes the caps from the users' live connection counts.
    pub fn recompute(&self, users: &[Arc<UserStats>]) -> Transition {
        let counts: Vec<u64> = users.iter().map(|u| u.connections()).collect();
        let caps = fair_share(&counts, self.limit);
        let active = caps.iter().any(Option::is_some);
        *self.caps.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(caps);
        match (self.active.swap(active, Ordering::Relaxed), active) {
            (false, true) => Transition::Activated,
            (true, false) => Transition::Deactivated,
            _ => Transition::Unchanged,
        }
    }
}
