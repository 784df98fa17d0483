//! The seam between the engine and the block/allow lists: the [`IpFilter`] the engine asks on
//! every accepted connection, and the [`ListKind`] a verdict or a list size is about. Both
//! [`crate::engine`] and [`crate::ip_lists`] depend on this module, not on each other.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;

/// Which list a verdict or a size is about (the `ip_list` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `[defense.blocklist]`: listed clients are refused.
    Blocklist,
    /// `[defense.allowlist]`: unlisted clients are refused.
    Allowlist,
}

impl ListKind {
    /// `"blocklist"` or `"allowlist"`, as in mtg's metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Blocklist => "blocklist",
            Self::Allowlist => "allowlist",
        }
    }
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Decides whether a client IP may connect at all (the block/allow lists plug in here), and
/// how its sources are refreshed.
pub trait IpFilter: Send + Sync {
    /// `Ok` to serve the connection; `Err` naming the list that refuses it (the connection is
    /// closed without reading).
    fn check(&self, ip: IpAddr) -> Result<(), ListKind>;

    /// The lists to load before the listeners accept, and how often to reload each after.
    fn refresh_periods(&self) -> Vec<(ListKind, Duration)> {
        Vec::new()
    }

    /// Loads one list from its sources again; yields its entry count.
    fn refresh(&self, _list: ListKind) -> BoxFuture<'_, usize> {
        Box::pin(std::future::ready(0))
    }
}

/// Serves everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl IpFilter for AllowAll {
    fn check(&self, _ip: IpAddr) -> Result<(), ListKind> {
        Ok(())
    }
}
