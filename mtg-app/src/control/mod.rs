//! The control plane: what drives the data plane ([`crate::engine`]) without being on a
//! client connection's path: the stats and management API, reloads (SIGHUP, `POST /reload`)
//! and the management lock, quota usage persistence, the `/stats` body, the Prometheus page,
//! the background tasks (statsd, throttle, IP lists, usage saving, doppelganger learning) and
//! the top-level orchestration ([`serve`]: starts the engine's listeners and the tasks, then
//! stops gracefully). Depends on the engine; the engine never depends on it.

mod api;
mod cluster_json;
mod http_server;
pub mod management;
mod metrics_http;
mod panel;
mod reload;
mod serve;
mod stats;
mod tasks;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::Shared;

pub use serve::{Ready, serve, serve_with_signals};

/// The control plane's state: the data plane it drives, the config file it reloads and the
/// management lock. Its settings (API listener and token, `api-persist`, the usage file, the
/// throttle interval) are read from the config the engine started with: [`Control::config`].
pub struct Control {
    /// The data plane's shared state.
    pub data: Arc<Shared>,
    /// The config file, re-read on SIGHUP and `POST /reload` (none for `simple-run`).
    pub config_path: Option<PathBuf>,
    /// Held by every change of the users (management API and reloads) from reading the current
    /// set to swapping in (and persisting) the next: one read-modify-write at a time. An async
    /// lock (a one-slot channel), so waiting API calls never block a runtime thread.
    manage: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Fleet mode, once joined (`[cluster]`).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("data", &self.data)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control plane over `data`, reloading from `config_path` (if any).
    pub fn new(data: Arc<Shared>, config_path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            data,
            config_path,
            manage: async_channel::bounded(1),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// The config the proxy started with (keys that need a restart; users, limits and ad tags
    /// live in the engine's directory).
    pub fn config(&self) -> &Config {
        &self.data.settings().config
    }

    /// Fleet mode, when `[cluster]` is on and joined.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Sets the fleet handle (once, at start).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }
}
