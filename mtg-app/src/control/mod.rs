//! The control plane: what drives the data plane ([`crate::engine`]) without being on a
//! client connection's path: the stats and management API, reloads (SIGHUP, `POST /reload`)
//! and the management lock, quota usage persistence, the `/stats` body, the Prometheus page,
//! the background tasks (statsd, throttle, IP lists, usage saving, doppelganger learning) and
//! the top-level orchestration ([`serve`]: starts the engine's listeners and the tasks, then
//! stops gracefully). Depends on the engine; the engine never depends on it.

mod api;
mod http_server;
pub mod management;
mod metrics_http;
mod reload;
mod serve;
mod stats;
mod tasks;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::Shared;

pub use serve::{Ready, serve, serve_with_signals};

/// What only the control plane needs from the config. `Debug` shows no secret (the API token
/// hides itself).
#[derive(Debug, Clone, Default)]
pub struct ControlSettings {
    /// Where the stats API listens, if anywhere.
    pub api_bind_to: Option<SocketAddr>,
    /// Bearer token every API request must carry.
    pub api_token: Option<crate::config::ApiToken>,
    /// The config file, re-read on SIGHUP and `POST /reload`.
    pub config_path: Option<PathBuf>,
    /// Write API changes of users back to the config file.
    pub api_persist: bool,
    /// Where quota usage is persisted (every 30 s and at shutdown).
    pub usage_state_file: Option<PathBuf>,
    /// `[throttle] check-interval`: how often throttle caps are recomputed.
    pub throttle_interval: std::time::Duration,
}

impl ControlSettings {
    /// The control-plane settings a config asks for (no config path: the caller sets it).
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            api_bind_to: config.api_bind_to,
            api_token: config.api_token.clone(),
            config_path: None,
            api_persist: config.api_persist,
            usage_state_file: config.usage_state_file.clone(),
            throttle_interval: config.throttle.check_interval,
        }
    }
}

/// The control plane's state: the data plane it drives, its own settings and the management
/// lock.
pub struct Control {
    /// The data plane's shared state.
    pub data: Arc<Shared>,
    /// The control plane's settings.
    pub settings: ControlSettings,
    /// Held by every change of the users (management API and reloads) from reading the current
    /// set to swapping in (and persisting) the next: one read-modify-write at a time. An async
    /// lock (a one-slot channel), so waiting API calls never block a runtime thread.
    manage: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("data", &self.data)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control plane over `data` with these settings.
    pub fn new(data: Arc<Shared>, settings: ControlSettings) -> Arc<Self> {
        Arc::new(Self { data, settings, manage: async_channel::bounded(1) })
    }
}
