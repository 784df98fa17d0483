//! Block and allow lists of client addresses (`[defense.blocklist]`, `[defense.allowlist]`):
//! FireHOL-format sources (local files, http(s) URLs) loaded before the listeners accept and
//! refreshed every `update-each`, looked up on every accepted connection.
//!
//! * [`net`]: one entry (`IpNet`).
//! * [`firehol`]: the list format; malformed lines are skipped with a warning.
//! * [`ranges`]: the lookup structure (sorted disjoint ranges, binary search).
//! * [`list`]: one list: its sources, their last good entries, the current lookup set.

pub mod firehol;
pub mod list;
pub mod net;
pub mod ranges;

use std::net::IpAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::Config;
pub use crate::ip_filter::{IpFilter, ListKind};

pub use list::IpList;
pub use net::IpNet;
pub use ranges::RangeSet;

/// Both lists of a config: the engine's [`IpFilter`].
#[derive(Debug)]
pub struct IpLists {
    block: IpList,
    allow: IpList,
}

impl IpLists {
    /// The lists `config` asks for (a disabled list is never loaded and never refuses);
    /// URLs are fetched with `[network.timeout] http`.
    pub fn from_config(config: &Config) -> Self {
        let http = config.network.timeout.http;
        Self {
            block: IpList::new(ListKind::Blocklist, &config.blocklist, http),
            allow: IpList::new(ListKind::Allowlist, &config.allowlist, http),
        }
    }

    /// The list of `kind`.
    pub fn list(&self, kind: ListKind) -> &IpList {
        match kind {
            ListKind::Blocklist => &self.block,
            ListKind::Allowlist => &self.allow,
        }
    }
}

impl IpFilter for IpLists {
    fn check(&self, ip: IpAddr) -> Result<(), ListKind> {
        // mtg's order: the allowlist first, then the blocklist.
        if self.allow.enabled() && !self.allow.contains(ip) {
            return Err(ListKind::Allowlist);
        }
        if self.block.enabled() && self.block.contains(ip) {
            return Err(ListKind::Blocklist);
        }
        Ok(())
    }

    fn refresh_periods(&self) -> Vec<(ListKind, Duration)> {
        [&self.allow, &self.block]
            .into_iter()
            .filter(|l| l.enabled())
            .map(|l| (l.kind(), l.period()))
            .collect()
    }

    fn refresh(&self, kind: ListKind) -> BoxFuture<'_, usize> {
        Box::pin(async move { self.list(kind).load().await.entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(block: &[&str], allow: Option<&[&str]>) -> IpLists {
        let off = crate::config::IpList {
            enabled: false,
            download_concurrency: 1,
            urls: Vec::new(),
            update_each: Duration::from_secs(3600),
        };
        let mut out = IpLists {
            block: IpList::new(ListKind::Blocklist, &off, Duration::from_secs(1)),
            allow: IpList::new(ListKind::Allowlist, &off, Duration::from_secs(1)),
        };
        let nets = |l: &[&str]| l.iter().map(|s| IpNet::parse(s).unwrap()).collect::<Vec<_>>();
        out.block.set_for_test(true, &nets(block));
        if let Some(allow) = allow {
            out.allow.set_for_test(true, &nets(allow));
        }
        out
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn verdicts_name_the_refusing_list_allowlist_first() {
        let l = lists(&["10.0.0.0/8"], Some(&["10.0.0.0/16", "192.0.2.0/24"]));
        assert_eq!(l.check(ip("192.0.2.5")), Ok(()));
        assert_eq!(l.check(ip("10.0.1.1")), Err(ListKind::Blocklist));
        assert_eq!(l.check(ip("10.1.0.1")), Err(ListKind::Allowlist));
        assert_eq!(l.check(ip("198.51.100.1")), Err(ListKind::Allowlist));
        let block_only = lists(&["10.0.0.0/8"], None);
        assert_eq!(block_only.check(ip("198.51.100.1")), Ok(()));
        assert_eq!(block_only.check(ip("::1")), Ok(()));
        assert_eq!(block_only.refresh_periods().len(), 1);
        assert_eq!(ListKind::Allowlist.label(), "allowlist");
    }
}
