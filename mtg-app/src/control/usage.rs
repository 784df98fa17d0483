//! Quota usage: the `usage-state-file` is read at start and written every 30 s (by
//! [`tasks`](super::tasks)) and at shutdown; on the same tick, monthly quota periods roll over
//! for users with live sessions, so a session running across the 1st counts into the new month.

use std::collections::BTreeMap;

use super::Control;
use crate::users::usage_file::Usage;

impl Control {
    /// Every user's quota usage, by name, for the state file.
    pub fn usage(&self) -> BTreeMap<String, Usage> {
        let users = self.data.users();
        users
            .names()
            .iter()
            .zip(users.all_stats())
            .map(|(name, stats)| {
                let (quota_used, period) = stats.quota_state();
                (name.clone(), Usage { quota_used, period })
            })
            .collect()
    }

    /// Restores quota usage read from the state file (names no longer configured are dropped).
    pub fn restore_usage(&self, usage: &BTreeMap<String, Usage>) {
        let users = self.data.users();
        for (name, stats) in users.names().iter().zip(users.all_stats()) {
            if let Some(u) = usage.get(name) {
                stats.restore_quota(u.quota_used, u.period);
            }
        }
    }

    /// Starts a new quota period (usage from zero) for every user with a monthly reset whose
    /// stored period is older than now's. Admission does the same for the user it admits;
    /// this catches sessions that stay open across the 1st.
    pub fn roll_quota_periods(&self) {
        let users = self.data.users();
        crate::users::limits::roll_quota_periods(
            users.all_limits(),
            users.all_stats(),
            crate::engine::unix_ms(),
        );
    }

    /// Writes the usage state file, if one is configured.
    pub fn save_usage(&self) {
        if let Some(path) = &self.config().usage_state_file
            && let Err(e) = crate::users::usage_file::save(path, &self.usage())
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the usage state file");
        }
    }
}
