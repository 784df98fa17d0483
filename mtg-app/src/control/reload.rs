//! Reloads and the management lock: [`Control::reload`] re-reads the config file (SIGHUP,
//! `POST /reload`) and swaps its users into the data plane under the same lock the management
//! API takes.

use mtg_proto::Secret;

use super::Control;
use crate::engine::ReloadSummary;

impl Control {
    /// Serialises changes of the users: held from reading the current set to swapping in the
    /// next (and writing the config file), by the management API and by [`Control::reload`].
    pub(crate) async fn manage_lock(&self) -> ManageGuard<'_> {
        // The channel is never closed (both ends live in `self`): `send` only waits its turn.
        let _ = self.manage.0.send(()).await;
        ManageGuard(&self.manage.1)
    }

    /// Re-reads the config file and applies its users, limits, ad tags and `fast-mode` (a tag
    /// or mode change reaches new sessions only); an invalid file changes nothing. Other settings (listeners, timeouts, …) need a restart. Runs under the
    /// management lock, so it never interleaves with an API change of the users.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload".to_owned());
        };
        let _serialised = self.manage_lock().await;
        let result = crate::config::Config::load(path).map_err(|e| e.to_string()).map(|loaded| {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            let users: Vec<(String, Secret)> =
                loaded.config.users.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
            let config = &loaded.config;
            if self.data.set_fast_mode(config.fast_mode) != config.fast_mode {
                tracing::info!(fast_mode = config.fast_mode, "fast-mode changed for new sessions");
            }
            self.data.reload_users(
                &users,
                &config.secret_limits,
                &config.secret_limits_default,
                &config.ad_tags(),
            )
        });
        match &result {
            Ok(s) => tracing::info!(
                added = ?s.added, removed = ?s.removed, rekeyed = ?s.rekeyed, relimited = ?s.relimited,
                retagged = ?s.retagged, "config reloaded"
            ),
            Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
        }
        result
    }
}

/// Holds the management lock of [`Control`]; dropping it lets the next change in.
pub(crate) struct ManageGuard<'a>(&'a async_channel::Receiver<()>);

impl Drop for ManageGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}
