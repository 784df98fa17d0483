//! Fleet mode (`[cluster]`): many instances share one set of users, fleet-wide quotas and
//! (per limit) fleet-wide connection caps through Redis (or Valkey). The "cluster agent" is a
//! dedicated OS thread with a synchronous Redis client ([`agent`]); a second thread listens
//! for "users changed" messages. The relay and the handshake never wait on either: the agent
//! reads and stores the atomics the engine already has and swaps the users table as a reload
//! does. What is kept in Redis: [`store`].

mod agent;
mod cache;
mod fleet;
mod redact;
mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::{info, warn};

pub use fleet::{Beat, FleetView, UserBeat};
pub use redact::redis_address;
pub use store::{StoredUsers, UsersChange};

use crate::control::Control;

/// This machine's hostname (the default `[cluster] name`), `mtg-multi` when unknown.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String =
        name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(64).collect();
    if name.is_empty() { "mtg-multi".to_owned() } else { name }
}

/// What the API and the process ask of the agent.
pub(crate) enum Command {
    /// Write a change of the users; the reply says whether Redis took it.
    Write(UsersChange, async_channel::Sender<Result<(), String>>),
    /// Forget a user's usage in a quota period.
    ResetUsage(String, u64, async_channel::Sender<Result<(), String>>),
    /// Another instance changed the users: re-read them.
    Changed,
    /// Flush once more, leave the fleet and end.
    Stop(Sender<()>),
}

/// The control plane's handle on fleet mode.
pub struct Cluster {
    name: String,
    /// `NAME:RUN`: whose usage batches these are (`RUN` random per process).
    writer: String,
    /// The Redis address without the user info.
    address: String,
    cache_file: Option<PathBuf>,
    commands: Mutex<Sender<Command>>,
    view: RwLock<Arc<FleetView>>,
    reachable: AtomicBool,
    cached: Mutex<Option<StoredUsers>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("redis", &self.address)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This instance's name in the fleet.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis address (no password).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the last exchange with Redis worked.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn set_reachable(&self, up: bool) {
        self.reachable.store(up, Ordering::Relaxed);
    }

    /// The fleet as last read.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_view(&self, view: FleetView) {
        *self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(view);
    }

    fn send(&self, command: Command) -> bool {
        self.commands.lock().unwrap_or_else(std::sync::PoisonError::into_inner).send(command).is_ok()
    }

    async fn ask(
        &self,
        make: impl FnOnce(async_channel::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (reply, answer) = async_channel::bounded(1);
        if !self.send(make(reply)) {
            return Err("the cluster agent has stopped".to_owned());
        }
        answer.recv().await.unwrap_or_else(|_| Err("the cluster agent has stopped".to_owned()))
    }

    /// Writes a change of the users to Redis (the agent answers within its I/O timeouts).
    pub async fn write_users(&self, change: UsersChange) -> Result<(), String> {
        if change.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Command::Write(change, reply)).await
    }

    /// Forgets `user`'s fleet usage in quota `period`.
    pub async fn reset_usage(&self, user: &str, period: u64) -> Result<(), String> {
        let user = user.to_owned();
        self.ask(|reply| Command::ResetUsage(user, period, reply)).await
    }

    /// Flushes the last usage and leaves the fleet (waits up to a few seconds).
    pub fn stop(&self) {
        let (done, wait) = mpsc::channel();
        if self.send(Command::Stop(done)) {
            let _ = wait.recv_timeout(3 * store::IO_TIMEOUT);
        }
    }

    fn save_cache(&self, users: &StoredUsers) {
        let Some(path) = &self.cache_file else { return };
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.as_ref() == Some(users) {
            return;
        }
        match cache::save(path, users) {
            Ok(()) => *cached = Some(users.clone()),
            Err(e) => warn!(file = %path.display(), error = %e, "cannot write the users cache"),
        }
    }
}

/// Applies users read from Redis (or the cache) unless an API change holds the management
/// lock (`None`: try again later).
fn apply_stored(control: &Control, users: &StoredUsers) -> Option<()> {
    let _serialised = control.try_manage_lock()?;
    crate::control::management::apply_stored(control, users);
    Some(())
}

/// Joins the fleet: connects to Redis, seeds it from the config's users if this is the first
/// instance, serves the store's users (or, with Redis unreachable, the cached ones), then
/// starts the agent. An error (Redis unreachable and nothing cached) names the Redis address
/// without its password.
pub fn start(control: &Arc<Control>, config: &crate::config::Cluster) -> Result<Arc<Cluster>, String> {
    let address = redis_address(&config.redis);
    let client =
        redis::Client::open(config.redis.as_str()).map_err(|e| format!("[cluster] redis {address}: {e}"))?;
    let mut store = store::Store::new(client.clone(), &config.key_prefix);
    let (commands, receive) = mpsc::channel();
    let cluster = Arc::new(Cluster {
        name: config.name.clone(),
        writer: format!("{}:{:016x}", config.name, rand::random::<u64>()),
        address: address.clone(),
        cache_file: config.cache_file.clone(),
        commands: Mutex::new(commands.clone()),
        view: RwLock::default(),
        reachable: AtomicBool::new(false),
        cached: Mutex::new(None),
    });
    let ours = crate::control::management::stored_users(control);
    let joined = store.with(|con, keys| {
        let seeded = store::seed(con, keys, &config.name, &ours)?;
        Ok((seeded, store::load(con, keys)?))
    });
    let version = match joined {
        Ok((seeded, (version, users))) => {
            if seeded {
                info!(redis = %address, users = users.users.len(), "seeded the fleet's users from this config");
            }
            apply_stored(control, &users);
            cluster.save_cache(&users);
            cluster.set_reachable(true);
            info!(redis = %address, name = %config.name, users = users.users.len(), "joined the fleet");
            version
        }
        Err(e) => {
            let cached = match &config.cache_file {
                Some(path) => cache::load(path)?,
                None => None,
            };
            let Some(users) = cached else {
                return Err(format!(
                    "cannot reach the fleet's Redis at {address} ({e}) and no users are cached: set \
                     [cluster] cache-file so a start without Redis serves the last known users"
                ));
            };
            warn!(redis = %address, error = %e, users = users.users.len(),
                "the fleet's Redis is unreachable: using the cached users");
            apply_stored(control, &users);
            0
        }
    };
    control.set_cluster(cluster.clone());
    let agent = agent::Agent::new(control.clone(), cluster.clone(), store, version);
    std::thread::Builder::new()
        .name("mtg-cluster".into())
        .spawn(move || agent.run(&receive))
        .map_err(|e| format!("cannot start the cluster agent: {e}"))?;
    let channel = store::Keys::new(&config.key_prefix).events();
    std::thread::Builder::new()
        .name("mtg-cluster-sub".into())
        .spawn(move || subscribe(&client, &channel, &commands))
        .map_err(|e| format!("cannot start the cluster listener: {e}"))?;
    Ok(cluster)
}

/// Listens for "users changed" messages and tells the agent; reconnects every second while
/// Redis is unreachable. Ends when the agent is gone.
fn subscribe(client: &redis::Client, channel: &str, agent: &Sender<Command>) {
    loop {
        if let Ok(mut con) = client.get_connection_with_timeout(store::IO_TIMEOUT) {
            let mut pubsub = con.as_pubsub();
            if pubsub.subscribe(channel).is_ok() {
                // Messages may have been missed while away.
                if agent.send(Command::Changed).is_err() {
                    return;
                }
                while pubsub.get_message().is_ok() {
                    if agent.send(Command::Changed).is_err() {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
