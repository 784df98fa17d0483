//! The cluster agent: one OS thread with a synchronous Redis connection. Every [`TICK`] it
//! counts the users' new bytes into a usage batch, applies the batch in Redis exactly once
//! (a per-instance sequence number: a batch retried after an unknown outcome is not counted
//! twice), sets each user's quota usage to the fleet's total plus what is not flushed yet,
//! writes the heartbeat, reads the fleet's and re-reads the users when they changed. The engine
//! never waits on it: it only reads and stores the atomics the engine already has, and swaps
//! the users table as a reload does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::fleet::{Beat, FleetView};
use super::store::{self, Store, UsersChange};
use super::{Cluster, Command};
use crate::control::Control;
use crate::engine::unix_ms;
use crate::users::accounting::UserStats;
use crate::users::limits::quota_period;

/// How often usage is flushed, the heartbeat written and the fleet read.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// How often the users are re-read even without a change message (repairs missed messages).
pub(super) const RESYNC: Duration = Duration::from_secs(10);

/// A user's counters and how many of its bytes are counted into batches already.
struct Tracked {
    stats: Arc<UserStats>,
    counted: u64,
    /// The usage counter it was last counted into.
    key: String,
}

/// A usage batch sent (or to send again) with its sequence number.
struct Batch {
    seq: u64,
    deltas: Vec<(String, u64)>,
}

pub(super) struct Agent {
    pub(super) control: Arc<Control>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) store: Store,
    pub(super) version: u64,
    tracked: BTreeMap<String, Tracked>,
    /// Bytes not in any batch yet, by usage key.
    unflushed: BTreeMap<String, u64>,
    pending: Option<Batch>,
    /// The sequence number of the next batch (of this process: see [`store::Keys`]).
    next_seq: u64,
    last_resync: Instant,
    resync_wanted: bool,
    /// Whether Redis is unreachable (logged once per outage).
    outage: bool,
}

impl Agent {
    pub(super) fn new(control: Arc<Control>, cluster: Arc<Cluster>, store: Store, version: u64) -> Self {
        Self {
            control,
            cluster,
            store,
            version,
            tracked: BTreeMap::new(),
            unflushed: BTreeMap::new(),
            pending: None,
            next_seq: 1,
            last_resync: Instant::now(),
            resync_wanted: false,
            outage: false,
        }
    }

    /// Runs until [`Command::Stop`] (or every sender is gone).
    pub(super) fn run(mut self, commands: &Receiver<Command>) {
        let mut next_tick = Instant::now();
        loop {
            match commands.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(Command::Write(change, reply)) => {
                    let result = self.write(&change);
                    let _ = reply.send_blocking(result);
                }
                Ok(Command::ResetUsage(user, period, reply)) => {
                    let result = self.reset_usage(&user, period);
                    let _ = reply.send_blocking(result);
                }
                Ok(Command::Changed) => {
                    self.resync_wanted = true;
                    let result = self.resync();
                    self.outcome(result);
                }
                Ok(Command::Stop(done)) => {
                    self.count();
                    let result = self.exchange();
                    self.outcome(result);
                    let name = self.cluster.name.clone();
                    let _ = self.store.with(|con, keys| store::leave(con, keys, &name));
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.count();
                    let result = self.exchange();
                    self.outcome(result);
                    next_tick = Instant::now() + TICK;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn outcome(&mut self, result: redis::RedisResult<()>) {
        let address = &self.cluster.address;
        match result {
            Ok(()) => {
                if self.outage {
                    self.outage = false;
                    info!(redis = %address, "the fleet's Redis is reachable again");
                }
                self.cluster.set_reachable(true);
            }
            Err(e) => {
                if !self.outage {
                    self.outage = true;
                    warn!(redis = %address, error = %e,
                        "the fleet's Redis is unreachable: keeping the last known users, counting usage locally");
                } else {
                    debug!(error = %e, "the fleet's Redis is still unreachable");
                }
                self.cluster.set_reachable(false);
            }
        }
    }

    fn write(&mut self, change: &UsersChange) -> Result<(), String> {
        let address = self.cluster.address.clone();
        self.store
            .with(|con, keys| store::write(con, keys, change))
            .map_err(|e| format!("the fleet's Redis at {address}: {e}"))
    }

    fn reset_usage(&mut self, user: &str, period: u64) -> Result<(), String> {
        let key = self.store.keys.usage(user, period);
        self.unflushed.remove(&key);
        let address = self.cluster.address.clone();
        self.store
            .with(|con, keys| store::reset_usage(con, keys, user, period))
            .map_err(|e| format!("the fleet's Redis at {address}: {e}"))
    }

    /// Moves the users' new bytes into `unflushed` (also the last bytes of users gone, into
    /// the counter of the period they were last counted in).
    fn count(&mut self) {
        let users = self.control.data.users();
        let now = unix_ms();
        let mut seen = Vec::with_capacity(users.len());
        for ((name, stats), limits) in users.names().iter().zip(users.all_stats()).zip(users.all_limits()) {
            let key = self.store.keys.usage(name, quota_period(limits.quota_reset, now));
            if self.tracked.get(name).is_some_and(|old| !Arc::ptr_eq(&old.stats, stats)) {
                // Removed and added again since the last count: the old counters' last bytes.
                self.forget(name);
            }
            let tracked = self.tracked.entry(name.clone()).or_insert_with(|| Tracked {
                stats: stats.clone(),
                counted: 0,
                key: key.clone(),
            });
            tracked.key = key;
            let total = bytes(stats);
            let delta = total.saturating_sub(tracked.counted);
            tracked.counted = total;
            if delta > 0 {
                *self.unflushed.entry(tracked.key.clone()).or_default() += delta;
            }
            seen.push(name.as_str());
        }
        let gone: Vec<String> =
            self.tracked.keys().filter(|n| !seen.contains(&n.as_str())).cloned().collect();
        for name in gone {
            self.forget(&name);
        }
    }

    /// Stops tracking a user, counting its last bytes.
    fn forget(&mut self, name: &str) {
        if let Some(old) = self.tracked.remove(name) {
            let delta = bytes(&old.stats).saturating_sub(old.counted);
            if delta > 0 {
                *self.unflushed.entry(old.key).or_default() += delta;
            }
        }
    }

    /// One round with Redis: the batch, the quota totals, the heartbeat, the users if changed.
    fn exchange(&mut self) -> redis::RedisResult<()> {
        let name = self.cluster.name.clone();
        self.flush()?;
        let users = self.control.data.users();
        let now = unix_ms();
        let beat = Beat::local(&name, self.control.data.started_at_ms(), now, &users);
        let text = serde_json::to_string(&beat).unwrap_or_default();
        let beats = self.store.with(|con, keys| store::beat(con, keys, &name, &text, now))?;
        let view = FleetView::from_beats(&beats);
        for ((user, stats), limits) in users.names().iter().zip(users.all_stats()).zip(users.all_limits()) {
            if limits.cluster_wide_connections {
                stats.set_others_connections(view.others_connections(&name, user));
            }
            // Cleared when the limit stops being cluster-wide (a change through the API).
            let others =
                if limits.cluster_wide_ips { view.others_addresses(&name, user) } else { Vec::new() };
            stats.set_others_addresses(others);
        }
        self.cluster.set_view(view);
        self.resync()
    }

    /// Sends the pending batch (or a new one of `unflushed`) and sets every user's quota usage
    /// to the fleet's total plus its bytes not in Redis yet.
    fn flush(&mut self) -> redis::RedisResult<()> {
        if self.pending.is_none() && !self.unflushed.is_empty() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pending =
                Some(Batch { seq, deltas: std::mem::take(&mut self.unflushed).into_iter().collect() });
        }
        let users = self.control.data.users();
        let now = unix_ms();
        let quotas: Vec<(usize, u64, String)> = users
            .all_limits()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.quota.is_some())
            .map(|(i, l)| {
                let period = quota_period(l.quota_reset, now);
                (i, period, self.store.keys.usage(&users.names()[i], period))
            })
            .collect();
        let read: Vec<String> = quotas.iter().map(|(_, _, key)| key.clone()).collect();
        let (seq, deltas) = match &self.pending {
            Some(batch) => (batch.seq, batch.deltas.clone()),
            None => (0, Vec::new()),
        };
        if deltas.is_empty() && read.is_empty() {
            return Ok(());
        }
        let writer = self.cluster.writer.clone();
        let totals = self.store.with(|con, keys| store::flush(con, keys, &writer, seq, &deltas, &read))?;
        self.pending = None;
        for ((i, period, key), total) in quotas.iter().zip(&totals[deltas.len()..]) {
            let stats = &users.all_stats()[*i];
            let local = self.tracked.get(&users.names()[*i]).filter(|t| Arc::ptr_eq(&t.stats, stats));
            let not_counted = local.map_or(0, |t| bytes(stats).saturating_sub(t.counted));
            let not_flushed = self.unflushed.get(key).copied().unwrap_or(0);
            stats.restore_quota(total + not_counted + not_flushed, *period);
        }
        Ok(())
    }

    /// Re-reads the users when asked, when the version moved or every [`RESYNC`], and applies
    /// them when they differ from the served ones.
    fn resync(&mut self) -> redis::RedisResult<()> {
        let due = self.resync_wanted || self.last_resync.elapsed() >= RESYNC;
        let version = self.store.with(store::version)?;
        if !due && version == self.version {
            return Ok(());
        }
        let (mut version, mut users) = self.store.with(store::load)?;
        if users.users.is_empty() {
            // The store lost its data (a Redis without persistence restarted): whoever notices
            // first seeds it again with the users it serves.
            let ours = crate::control::management::stored_users(&self.control);
            let name = self.cluster.name.clone();
            let seeded = self.store.with(|con, keys| {
                store::unseed_if_empty(con, keys)?;
                store::seed(con, keys, &name, &ours)
            })?;
            if seeded {
                warn!(redis = %self.cluster.address, users = ours.users.len(),
                    "the fleet's Redis had no users: seeded it again with the ones served here");
            }
            (version, users) = self.store.with(store::load)?;
        }
        match super::apply_stored(&self.control, &users) {
            Some(()) => {
                self.version = version;
                self.resync_wanted = false;
                self.last_resync = Instant::now();
                self.cluster.save_cache(&users);
            }
            // The management lock is busy (an API change is being applied): next tick.
            None => self.resync_wanted = true,
        }
        Ok(())
    }
}

/// A user's bytes both ways since its counters were made (what the quota counts).
fn bytes(stats: &UserStats) -> u64 {
    let s = stats.snapshot();
    s.bytes_in + s.bytes_out
}
