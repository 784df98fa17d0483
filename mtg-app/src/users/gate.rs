//! A user's session gate: the switch every live session of the user watches. Closing it ends
//! them all (a reload removing, re-keying or disabling the user, or the quota crossed by any
//! session); sessions admitted afterwards get a fresh switch once the user is allowed again
//! (a reload that re-enables it, a new quota period).

use std::sync::Mutex;

/// Why a gate was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Open.
    No,
    /// By a reload (removed, re-keyed, disabled, expired): only a reload opens it again.
    ByReload,
    /// By the quota: an admission that finds the user within its quota opens it again.
    ByQuota,
}

#[derive(Debug)]
struct Switch {
    off: async_channel::Sender<()>,
    watch: async_channel::Receiver<()>,
    closed: Closed,
}

impl Switch {
    fn new() -> Self {
        let (off, watch) = async_channel::bounded(1);
        Self { off, watch, closed: Closed::No }
    }

    fn close(&mut self, why: Closed) {
        if self.closed == Closed::No {
            self.closed = why;
            self.off.close();
        }
    }
}

/// The switch one user's live sessions watch; sessions end when it closes. Locked only at
/// admission and when closing, never per chunk.
#[derive(Debug)]
pub struct UserGate(Mutex<Switch>);

impl Default for UserGate {
    fn default() -> Self {
        Self(Mutex::new(Switch::new()))
    }
}

impl UserGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Switch> {
        // A poisoned lock only means a panic elsewhere while swapping: the value is whole.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session was just admitted, the user found within its quota: a gate closed by the
    /// quota (last period, or a lower quota) opens again; one closed by a reload stays closed
    /// (the session ends at once).
    pub fn admitted(&self) {
        let mut switch = self.lock();
        if switch.closed == Closed::ByQuota {
            *switch = Switch::new();
        }
    }

    /// What a session watches: it ends when this closes.
    pub fn watch(&self) -> async_channel::Receiver<()> {
        self.lock().watch.clone()
    }

    /// Ends every live session (a reload removed, re-keyed, disabled or expired the user).
    pub fn close(&self) {
        self.lock().close(Closed::ByReload);
    }

    /// Ends every live session because the quota is used up.
    pub fn close_over_quota(&self) {
        self.lock().close(Closed::ByQuota);
    }

    /// Opens a closed gate for later sessions (a reload found the user allowed again).
    pub fn reopen(&self) {
        let mut switch = self.lock();
        if switch.closed != Closed::No {
            *switch = Switch::new();
        }
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed != Closed::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_closures_reopen_at_admission_reload_closures_only_at_reload() {
        let gate = UserGate::default();
        let first = gate.watch();
        gate.close_over_quota();
        assert!(first.is_closed() && gate.is_closed());
        // A new period: the next admission gets a fresh, open switch.
        gate.admitted();
        let second = gate.watch();
        assert!(!second.is_closed() && !gate.is_closed());
        gate.close();
        assert!(second.is_closed());
        // A quota crossing does not turn a reload closure into one admission reopens.
        gate.close_over_quota();
        gate.admitted();
        assert!(gate.watch().is_closed());
        gate.reopen();
        assert!(!gate.watch().is_closed());
    }
}
