//! One block or allow list: its sources, the entries each source gave at its last successful
//! load, and the lookup set built from them, swapped in whole after every load.
//!
//! A source that fails to load (unreadable file, HTTP error or timeout) keeps the entries it
//! gave last time (none if it never loaded); the other sources are updated. mtg instead swaps
//! in an empty list when downloads fail.

use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use tracing::{info, warn};

use crate::config::{self, ListSource};
use crate::http_fetch::{self, Get};

use super::firehol;
use super::net::IpNet;
use super::{ListKind, RangeSet};

/// Largest list body read from a file or a URL.
pub const BODY_LIMIT: u64 = 64 << 20;
/// Shortest refresh period (a smaller `update-each` is raised to it).
pub const MIN_PERIOD: Duration = Duration::from_secs(1);
/// Most malformed-line warnings logged per source and load (then one summary line).
const WARNINGS_PER_SOURCE: usize = 10;

/// One list and its current contents.
#[derive(Debug)]
pub struct IpList {
    kind: ListKind,
    enabled: bool,
    sources: Vec<ListSource>,
    concurrency: usize,
    period: Duration,
    http_timeout: Duration,
    /// What lookups read: replaced whole after each load.
    current: RwLock<Arc<RangeSet>>,
    /// Per source (same order as `sources`): its entries at its last successful load.
    last_good: Mutex<Vec<Option<Vec<IpNet>>>>,
    /// Entries in `current` (sum over the sources).
    size: AtomicUsize,
}

/// What one load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries in the list now.
    pub entries: usize,
    /// Sources that loaded.
    pub loaded: usize,
    /// Sources that failed (their previous entries, if any, were kept).
    pub failed: usize,
}

impl IpList {
    /// A list from its config section (empty until [`Self::load`]); URLs are fetched within
    /// `http_timeout` each.
    pub fn new(kind: ListKind, section: &config::IpList, http_timeout: Duration) -> Self {
        Self {
            kind,
            enabled: section.enabled,
            sources: section.urls.clone(),
            concurrency: usize::try_from(section.download_concurrency).unwrap_or(1).max(1),
            period: section.update_each.max(MIN_PERIOD),
            http_timeout,
            current: RwLock::new(Arc::new(RangeSet::default())),
            last_good: Mutex::new(vec![None; section.urls.len()]),
            size: AtomicUsize::new(0),
        }
    }

    /// Which list this is.
    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// `enabled` in the config.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The refresh period (`update-each`, at least [`MIN_PERIOD`]).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Entries loaded now (networks, before merging overlaps).
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether `ip` is in the list now (takes the read lock only to clone the `Arc`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let set = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        set.contains(ip)
    }

    /// Reads every source (`download-concurrency` at a time), updates the entries of those
    /// that loaded, keeps those of the others, and swaps the new lookup set in.
    pub async fn load(&self) -> LoadReport {
        let timeout = self.http_timeout;
        let bodies: Vec<Result<Vec<u8>, String>> = stream::iter(self.sources.iter().cloned())
            .map(|source| read_source(source, timeout))
            .buffered(self.concurrency)
            .collect()
            .await;
        let (mut loaded, mut failed) = (0, 0);
        let (set, entries) = {
            let mut last_good = self.last_good.lock().unwrap_or_else(PoisonError::into_inner);
            for ((source, body), kept) in self.sources.iter().zip(bodies).zip(last_good.iter_mut()) {
                let name = source_name(source);
                match body {
                    Ok(body) => {
                        *kept = Some(self.parse_logged(&name, &body));
                        loaded += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        let kept_entries = kept.as_ref().map_or(0, Vec::len);
                        warn!(list = %self.kind, error = %e, kept_entries, "cannot load a list source; its previous entries stay");
                    }
                }
            }
            let entries: usize = last_good.iter().flatten().map(Vec::len).sum();
            (RangeSet::new(last_good.iter().flatten().flatten()), entries)
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        self.size.store(entries, Ordering::Relaxed);
        info!(list = %self.kind, entries, sources_loaded = loaded, sources_failed = failed, "IP list loaded");
        if entries == 0 && self.kind == ListKind::Allowlist {
            warn!("the allowlist is enabled but has no entry: every client is refused");
        }
        LoadReport { entries, loaded, failed }
    }

    /// Enables the list with `nets` as its contents, without sources.
    #[cfg(test)]
    pub(super) fn set_for_test(&mut self, enabled: bool, nets: &[IpNet]) {
        self.enabled = enabled;
        *self.current.get_mut().unwrap_or_else(PoisonError::into_inner) = Arc::new(RangeSet::new(nets));
        *self.size.get_mut() = nets.len();
    }

    /// Parses one source's body, warning about each skipped line (up to a limit).
    fn parse_logged(&self, name: &str, body: &[u8]) -> Vec<IpNet> {
        let parsed = firehol::parse(body);
        for line in parsed.malformed.iter().take(WARNINGS_PER_SOURCE) {
            warn!(list = %self.kind, "{}", firehol::warning(name, line));
        }
        if let Some(more) = parsed.malformed.len().checked_sub(WARNINGS_PER_SOURCE).filter(|&n| n > 0) {
            warn!(list = %self.kind, "{name}: {more} more malformed lines skipped");
        }
        parsed.nets
    }
}

/// A source as logs show it: the file path, or the URL with its password hidden.
pub fn source_name(source: &ListSource) -> String {
    match source {
        ListSource::File(path) => path.display().to_string(),
        ListSource::Url(url) => config::redacted(url),
    }
}

/// The body of a source: a file read on a blocking thread, or a GET within `timeout`; errors
/// name the source.
async fn read_source(source: ListSource, timeout: Duration) -> Result<Vec<u8>, String> {
    match source {
        ListSource::Url(url) => {
            let mut get = Get::new(&url, timeout);
            get.limit = BODY_LIMIT;
            get.accept = "text/plain, */*";
            http_fetch::get(get).await
        }
        ListSource::File(path) => {
            blocking::unblock(move || {
                let shown = path.display();
                let file = std::fs::File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
                let mut body = Vec::new();
                file.take(BODY_LIMIT + 1).read_to_end(&mut body).map_err(|e| format!("{shown}: {e}"))?;
                if body.len() as u64 > BODY_LIMIT {
                    return Err(format!("{shown}: larger than {BODY_LIMIT} bytes"));
                }
                Ok(body)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    /// Runs a future to completion on this thread (the loads only wait for blocking threads).
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// A list file in a temp directory of its own (removed when the guard drops).
    fn temp_file(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new().prefix(&format!("mtg-iplist-{name}-")).tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    fn section(files: &[&PathBuf]) -> config::IpList {
        config::IpList {
            enabled: true,
            download_concurrency: 2,
            urls: files.iter().map(|p| ListSource::File((*p).clone())).collect(),
            update_each: Duration::from_millis(10),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_failing_source_keeps_its_previous_entries_and_the_others_update() {
        let (_da, a) = temp_file("keep-a", "10.0.0.0/8\n");
        let (_db, b) = temp_file("keep-b", "192.0.2.1\n2001:db8::/32\n");
        let list = IpList::new(ListKind::Blocklist, &section(&[&a, &b]), Duration::from_secs(1));
        assert_eq!(list.period(), MIN_PERIOD);
        assert!(!list.contains(ip("10.1.1.1")), "empty before the first load");
        assert_eq!(block_on(list.load()), LoadReport { entries: 3, loaded: 2, failed: 0 });
        assert!(list.contains(ip("10.1.1.1")) && list.contains(ip("192.0.2.1")));

        std::fs::remove_file(&a).unwrap();
        std::fs::write(&b, "198.51.100.0/24\n").unwrap();
        assert_eq!(block_on(list.load()), LoadReport { entries: 2, loaded: 1, failed: 1 });
        assert_eq!(list.size(), 2);
        assert!(list.contains(ip("10.1.1.1")), "a's entries stay while a fails");
        assert!(!list.contains(ip("192.0.2.1")), "b's old entries are replaced");
        assert!(list.contains(ip("198.51.100.9")));
    }

    #[test]
    fn a_source_that_never_loaded_contributes_nothing() {
        let (_dg, good) = temp_file("never-good", "127.0.0.2\n");
        let (_dn, gone) = temp_file("never-gone", "127.0.0.3\n");
        std::fs::remove_file(&gone).unwrap();
        let list = IpList::new(ListKind::Allowlist, &section(&[&gone, &good]), Duration::from_secs(1));
        assert_eq!(block_on(list.load()), LoadReport { entries: 1, loaded: 1, failed: 1 });
        assert!(list.contains(ip("127.0.0.2")));
        assert!(!list.contains(ip("127.0.0.3")));
    }
}
