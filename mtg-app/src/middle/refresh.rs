//! The middle-proxy bootstrap's I/O: reads the copies cached in `cache-dir` before the proxy
//! serves, fetches the three `[middle-proxy]` sources (http(s) URLs through
//! [`http_fetch`](crate::http_fetch), direct like the IP lists; or files), writes each good new
//! body back to the cache atomically, and publishes the snapshot into [`Shared::middle`]. The
//! decisions are [`Bootstrap`]'s; the control plane runs [`Bootstrapper::refresh`] every
//! `update-each` (plus up to 5 % jitter).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mtg_proto::middle::ProxyMap;
use rand::Rng;
use tracing::{debug, info, warn};

use crate::config::{ListSource, MiddleProxy};
use crate::engine::Shared;
use crate::http_fetch::{self, Get};
use crate::ip_lists::list::source_name;

use super::MiddleSnapshot;
use super::bootstrap::{Bootstrap, Document, Outcome, SkewChange, SkewWatch, Streaks, clock_skew};

/// Each fetch (connect, TLS, headers, body) must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest document body read (today's are a few KiB).
pub const BODY_LIMIT: u64 = 1 << 20;
/// Shortest refresh period (a smaller `update-each` is raised to it).
pub const MIN_PERIOD: Duration = Duration::from_secs(1);

/// One fetched body and, for HTTP, Telegram's clock minus ours (seconds, from `Date`).
/// `Debug` shows the body's length only: it may be the proxy secret.
pub struct Body {
    /// The body.
    pub bytes: Vec<u8>,
    /// The skew measured from the answer's `Date` header (`None`: a file, or no usable date).
    pub skew: Option<i64>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("len", &self.bytes.len()).field("skew", &self.skew).finish()
    }
}

/// The bootstrap of one proxy: its sources, the last good copies and the log state.
#[derive(Debug)]
pub struct Bootstrapper {
    sources: MiddleProxy,
    state: Bootstrap,
    skew: SkewWatch,
    streaks: Streaks,
    cache_loaded: bool,
}

impl Bootstrapper {
    /// A bootstrap for these sources, with nothing loaded yet.
    pub fn new(sources: &MiddleProxy) -> Self {
        Self {
            sources: sources.clone(),
            state: Bootstrap::default(),
            skew: SkewWatch::default(),
            streaks: Streaks::default(),
            cache_loaded: false,
        }
    }

    /// Whether middle-proxy mode is needed now: some user has an effective ad tag.
    pub fn wanted(shared: &Shared) -> bool {
        shared.users().all_ad_tags().iter().any(Option::is_some)
    }

    /// The wait before the next refresh: `update-each` (at least [`MIN_PERIOD`]) plus a random
    /// jitter of up to 5 % of it.
    pub fn next_wait(&self) -> Duration {
        let period = self.sources.update_each.max(MIN_PERIOD);
        let jitter_ms = u64::try_from(period.as_millis() / 20).unwrap_or(u64::MAX);
        period + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// Loads the copies in `cache-dir` (once; nothing without a `cache-dir`) and publishes
    /// them when they make a whole snapshot. A missing file is normal; an unreadable or invalid
    /// one is a warning and ignored. Blocking file reads: call it before serving or on a
    /// blocking thread.
    pub fn load_cache(&mut self, shared: &Shared) {
        if std::mem::replace(&mut self.cache_loaded, true) {
            return;
        }
        for (document, path, result) in read_cache(self.sources.cache_dir.as_deref()) {
            self.accept_cached(document, &path, result);
        }
        self.publish(shared, "cache");
    }

    /// Fetches the three documents at once, keeps the good new ones (writing them to the
    /// cache), checks our clock against the secret's `Date`, and publishes a changed
    /// snapshot. Failures are warned about once per streak.
    pub async fn refresh(&mut self, shared: &Shared) {
        if !std::mem::replace(&mut self.cache_loaded, true) {
            // Tags appeared after the start: the cache was not read before serving.
            let dir = self.sources.cache_dir.clone();
            for (document, path, result) in blocking::unblock(move || read_cache(dir.as_deref())).await {
                self.accept_cached(document, &path, result);
            }
            self.publish(shared, "cache");
        }
        let (secret, config, config_v6) = futures_util::future::join3(
            fetch(self.sources.secret_url.clone()),
            fetch(self.sources.config_url.clone()),
            fetch(self.sources.config_url_v6.clone()),
        )
        .await;
        if let Ok(Body { skew: Some(skew), .. }) = &secret {
            self.check_skew(shared, *skew);
        }
        for (document, fetched) in
            [(Document::Secret, secret), (Document::Config, config), (Document::ConfigV6, config_v6)]
        {
            self.take(shared, document, fetched).await;
        }
        self.publish(shared, "fetch");
    }

    fn accept_cached(&mut self, document: Document, path: &Path, result: std::io::Result<Vec<u8>>) {
        match result {
            Ok(bytes) => {
                if let Err(why) = self.state.offer(document, &bytes) {
                    warn!(path = %path.display(), "the cached {} is corrupt ({why}); ignored", document.describe());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                debug!(path = %path.display(), "no cached {} yet", document.describe());
            }
            Err(e) => {
                let what = document.describe();
                warn!(path = %path.display(), error = %e, "cannot read the cached {what}; ignored");
            }
        }
    }

    /// Handles one fetch's result: validation, metrics, logs, the cache.
    async fn take(&mut self, shared: &Shared, document: Document, fetched: Result<Body, String>) {
        let source = source_name(self.source(document));
        let outcome = match fetched {
            Err(e) => {
                if self.streaks.failed(document) {
                    warn!("{} unreachable: {e}; {}", document.describe(), self.fallback(document));
                }
                Outcome::Failed
            }
            Ok(body) => match self.state.offer(document, &body.bytes) {
                Err(why) => {
                    if self.streaks.failed(document) {
                        warn!(%source, "{} rejected: {why}; {}", document.describe(), self.fallback(document));
                    }
                    Outcome::Rejected
                }
                Ok(accepted) => {
                    if self.streaks.succeeded(document) {
                        info!(%source, "{} fetched again", document.describe());
                    }
                    for warning in &accepted.warnings {
                        debug!(%source, "{}: skipped {warning}", document.describe());
                    }
                    if accepted.changed {
                        self.write_cache(document, body.bytes).await;
                        Outcome::Ok
                    } else {
                        Outcome::Unchanged
                    }
                }
            },
        };
        debug!(%source, outcome = outcome.label(), "{} fetched", document.describe());
        shared.metrics().middle_proxy_fetch(document.label(), outcome.label());
    }

    /// What happens while `document` has no fresh copy.
    fn fallback(&self, document: Document) -> &'static str {
        match (document, self.state.has(document)) {
            (_, true) => "keeping the last good copy",
            (Document::ConfigV6, false) => "no IPv6 middle proxies",
            (_, false) => "tagged users go direct",
        }
    }

    fn source(&self, document: Document) -> &ListSource {
        match document {
            Document::Secret => &self.sources.secret_url,
            Document::Config => &self.sources.config_url,
            Document::ConfigV6 => &self.sources.config_url_v6,
        }
    }

    fn check_skew(&mut self, shared: &Shared, skew: i64) {
        match self.skew.observe(skew) {
            Some(SkewChange::Skewed(skew)) => {
                shared.middle().set_skewed(true);
                warn!(
                    "clock is {skew} s off Telegram's; middle proxies are off, tagged users go direct until it is fixed"
                );
            }
            Some(SkewChange::Fixed(skew)) => {
                shared.middle().set_skewed(false);
                info!("clock is within 30 s of Telegram's again ({skew} s off); middle proxies are on");
            }
            None => {}
        }
    }

    /// Writes a good new body to `cache-dir` (when set); a failure is a warning.
    async fn write_cache(&self, document: Document, bytes: Vec<u8>) {
        let Some(dir) = self.sources.cache_dir.clone() else { return };
        let path = dir.join(document.cache_file());
        let shown = path.clone();
        let written = blocking::unblock(move || {
            std::fs::create_dir_all(&dir)?;
            crate::atomic_file::write(&path, &bytes)
        })
        .await;
        if let Err(e) = written {
            warn!(path = %shown.display(), error = %e, "cannot cache the {}", document.describe());
        }
    }

    /// Publishes the snapshot when it is whole and changed, and updates the endpoint gauges.
    fn publish(&mut self, shared: &Shared, from: &str) {
        let Some(snapshot) = self.state.next_snapshot() else { return };
        let (v4, v6) = (endpoints(&snapshot.v4), endpoints(&snapshot.v6));
        shared.metrics().middle_proxy_endpoints("ipv4", v4);
        shared.metrics().middle_proxy_endpoints("ipv6", v6);
        log_published(&snapshot, from, v4, v6);
        shared.publish_middle(snapshot);
    }
}

fn log_published(snapshot: &MiddleSnapshot, from: &str, v4: usize, v6: usize) {
    info!(
        from,
        secret_bytes = snapshot.secret.as_bytes().len(),
        key_select = format_args!("{:08x}", snapshot.secret.key_select()),
        ipv4_endpoints = v4,
        ipv6_endpoints = v6,
        "middle-proxy snapshot published"
    );
}

/// Distinct middle-proxy addresses of a map.
pub fn endpoints(map: &ProxyMap) -> usize {
    map.by_dc.values().flatten().collect::<BTreeSet<_>>().len()
}

/// The three cached files' contents (or why not), read on the calling thread.
fn read_cache(dir: Option<&Path>) -> Vec<(Document, PathBuf, std::io::Result<Vec<u8>>)> {
    let Some(dir) = dir else { return Vec::new() };
    Document::ALL
        .into_iter()
        .map(|document| {
            let path = dir.join(document.cache_file());
            let read = read_file(&path);
            (document, path, read)
        })
        .collect()
}

/// A file's bytes, at most [`BODY_LIMIT`].
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(BODY_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > BODY_LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {BODY_LIMIT} bytes"),
        ));
    }
    Ok(bytes)
}

/// One source's body: a GET within [`FETCH_TIMEOUT`] (non-2xx is an error; the skew comes
/// from its `Date`), or a file read on a blocking thread.
pub async fn fetch(source: ListSource) -> Result<Body, String> {
    match source {
        ListSource::Url(url) => {
            let mut get = Get::new(&url, FETCH_TIMEOUT);
            get.limit = BODY_LIMIT;
            let fetched = http_fetch::get_with_date(get).await?;
            let skew = fetched.date.as_deref().and_then(|date| clock_skew(date, fetched.received_at));
            Ok(Body { bytes: fetched.body, skew })
        }
        ListSource::File(path) => {
            blocking::unblock(move || {
                read_file(&path)
                    .map(|bytes| Body { bytes, skew: None })
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_counts_distinct_addresses() {
        let map = mtg_proto::middle::proxy_config::parse(
            "proxy_for 1 127.0.0.1:1;\nproxy_for -1 127.0.0.1:1;\nproxy_for 2 127.0.0.2:1;\n",
        )
        .map;
        assert_eq!(endpoints(&map), 2);
        assert_eq!(endpoints(&ProxyMap::default()), 0);
    }

    #[test]
    fn the_wait_is_the_period_plus_at_most_five_percent() {
        let sources = MiddleProxy { update_each: Duration::from_secs(100), ..MiddleProxy::default() };
        let boot = Bootstrapper::new(&sources);
        for _ in 0..50 {
            let wait = boot.next_wait();
            assert!(wait >= Duration::from_secs(100) && wait <= Duration::from_secs(105), "{wait:?}");
        }
        let tiny = MiddleProxy { update_each: Duration::from_millis(1), ..MiddleProxy::default() };
        assert!(Bootstrapper::new(&tiny).next_wait() >= MIN_PERIOD);
    }
}
