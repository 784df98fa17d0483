//! The decisions of the middle-proxy bootstrap, without I/O: which fetched body replaces the
//! last good copy, when a new [`MiddleSnapshot`] is due, when our clock counts as skewed and
//! when a failure is worth a warning. [`refresh`](super::refresh) does the fetching, caching,
//! logging and publishing around it.
//!
//! Rules (spec `middle-proxy.md` §1.3, §10): a proxy secret must be 32..=256 bytes; a list
//! must name at least one middle proxy; a rejected or failed document never touches the last
//! good copy (nor the other documents: a failed IPv6 list leaves the IPv4 one alone); a
//! snapshot needs a secret and a non-empty IPv4 list (IPv6 may be empty) and is published
//! again only when it changed.

use std::time::SystemTime;

use mtg_proto::middle::proxy_config::{self, ConfigWarning};
use mtg_proto::middle::{ProxyMap, ProxySecret};

use super::MiddleSnapshot;

/// Largest clock difference with Telegram's (seconds) middle proxies accept.
pub const SKEW_LIMIT_SECS: i64 = 30;

/// One of the three documents of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Document {
    /// `getProxySecret`: the proxy secret.
    Secret,
    /// `getProxyConfig`: the IPv4 middle proxies.
    Config,
    /// `getProxyConfigV6`: the IPv6 middle proxies.
    ConfigV6,
}

impl Document {
    /// The three, in fetch order.
    pub const ALL: [Self; 3] = [Self::Secret, Self::Config, Self::ConfigV6];

    /// The `document` label of the fetch metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Config => "config",
            Self::ConfigV6 => "config_v6",
        }
    }

    /// The file name of its copy in `cache-dir`.
    pub fn cache_file(self) -> &'static str {
        match self {
            Self::Secret => "proxy-secret",
            Self::Config => "proxy-multi.conf",
            Self::ConfigV6 => "proxy-multi-v6.conf",
        }
    }

    /// How logs name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Secret => "middle-proxy secret",
            Self::Config => "middle-proxy config",
            Self::ConfigV6 => "middle-proxy IPv6 config",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one fetch of a document came to (the `outcome` label of the fetch metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A good body that differs from the last good copy (which it replaced).
    Ok,
    /// A good body equal to the last good copy.
    Unchanged,
    /// No body: unreachable, timed out, non-2xx, unreadable file.
    Failed,
    /// A body that is not a valid document (kept out).
    Rejected,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

/// A body that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Whether it replaced the last good copy (`false`: the same as it).
    pub changed: bool,
    /// Statements of a list that were skipped (logged at debug).
    pub warnings: Vec<ConfigWarning>,
}

/// The last good copy of each document and the last snapshot handed out.
#[derive(Debug, Default)]
pub struct Bootstrap {
    secret: Option<ProxySecret>,
    v4: ProxyMap,
    v6: ProxyMap,
    published: Option<MiddleSnapshot>,
}

impl Bootstrap {
    /// Validates `body` as `document`; a good one becomes its last good copy. The error says
    /// why a body was rejected (the last good copy stays).
    pub fn offer(&mut self, document: Document, body: &[u8]) -> Result<Accepted, String> {
        match document {
            Document::Secret => {
                let secret = ProxySecret::new(body).map_err(|e| e.to_string())?;
                let changed = self.secret.as_ref() != Some(&secret);
                self.secret = Some(secret);
                Ok(Accepted { changed, warnings: Vec::new() })
            }
            Document::Config | Document::ConfigV6 => {
                let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8 text ({e})"))?;
                let parsed = proxy_config::parse(text);
                if parsed.map.is_empty() {
                    let first = parsed.warnings.first().map(|w| format!(" (first problem: {w})"));
                    return Err(format!(
                        "no proxy_for line with a valid address{}",
                        first.unwrap_or_default()
                    ));
                }
                let kept = if document == Document::Config { &mut self.v4 } else { &mut self.v6 };
                let changed = *kept != parsed.map;
                *kept = parsed.map;
                Ok(Accepted { changed, warnings: parsed.warnings })
            }
        }
    }

    /// The last good proxy secret.
    pub fn secret(&self) -> Option<&ProxySecret> {
        self.secret.as_ref()
    }

    /// The last good IPv4 list (empty: none yet).
    pub fn v4(&self) -> &ProxyMap {
        &self.v4
    }

    /// The last good IPv6 list (empty: none yet).
    pub fn v6(&self) -> &ProxyMap {
        &self.v6
    }

    /// Whether there is a good copy of `document`.
    pub fn has(&self, document: Document) -> bool {
        match document {
            Document::Secret => self.secret.is_some(),
            Document::Config => !self.v4.is_empty(),
            Document::ConfigV6 => !self.v6.is_empty(),
        }
    }

    /// The snapshot to publish now: `Some` when there is a secret and an IPv4 list and they
    /// (or the IPv6 list) differ from the last snapshot returned.
    pub fn next_snapshot(&mut self) -> Option<MiddleSnapshot> {
        let secret = self.secret.clone()?;
        if self.v4.is_empty() {
            return None;
        }
        let snapshot = MiddleSnapshot { secret, v4: self.v4.clone(), v6: self.v6.clone() };
        if self.published.as_ref() == Some(&snapshot) {
            return None;
        }
        self.published = Some(snapshot.clone());
        Some(snapshot)
    }
}

/// Telegram's clock minus ours in whole seconds, from a response's `Date` header and our
/// clock when it arrived; `None` when the header is not an HTTP date.
pub fn clock_skew(date: &str, received_at: SystemTime) -> Option<i64> {
    let theirs = httpdate::parse_http_date(date.trim()).ok()?;
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    Some(match theirs.duration_since(received_at) {
        Ok(ahead) => secs(ahead),
        Err(behind) => -secs(behind.duration()),
    })
}

/// A change of the skew verdict, with the skew measured (seconds, Telegram's minus ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkewChange {
    /// More than [`SKEW_LIMIT_SECS`] off: middle proxies go off.
    Skewed(i64),
    /// Back within the limit: middle proxies go on again.
    Fixed(i64),
}

/// Whether our clock is too far off Telegram's, from one measurement to the next.
#[derive(Debug, Default, Clone, Copy)]
pub struct SkewWatch {
    skewed: bool,
}

impl SkewWatch {
    /// Records a measurement; `Some` when the verdict changed.
    pub fn observe(&mut self, skew: i64) -> Option<SkewChange> {
        let skewed = skew.unsigned_abs() > SKEW_LIMIT_SECS.unsigned_abs();
        if skewed == self.skewed {
            return None;
        }
        self.skewed = skewed;
        Some(if skewed { SkewChange::Skewed(skew) } else { SkewChange::Fixed(skew) })
    }

    /// The current verdict.
    pub fn is_skewed(&self) -> bool {
        self.skewed
    }
}

/// Failure streaks per document: a warning at the first failure, one line at the recovery.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streaks {
    failing: [bool; 3],
}

impl Streaks {
    /// Records a failure; `true` when it starts a streak (warn then, not again).
    pub fn failed(&mut self, document: Document) -> bool {
        !std::mem::replace(&mut self.failing[document.index()], true)
    }

    /// Records a success; `true` when it ends a streak (say so once).
    pub fn succeeded(&mut self, document: Document) -> bool {
        std::mem::replace(&mut self.failing[document.index()], false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CONFIG: &str = "default 2;\nproxy_for 2 127.0.0.1:8888;\nproxy_for -2 127.0.0.1:8888;\n";
    const CONFIG_V6: &str = "proxy_for 2 [::1]:8888;\n";

    fn secret(first: u8) -> Vec<u8> {
        let mut bytes = vec![0x5a; 128];
        bytes[0] = first;
        bytes
    }

    fn ready() -> Bootstrap {
        let mut b = Bootstrap::default();
        b.offer(Document::Secret, &secret(1)).unwrap();
        b.offer(Document::Config, CONFIG.as_bytes()).unwrap();
        b
    }

    #[test]
    fn a_good_secret_and_v4_list_publish_once() {
        let mut b = Bootstrap::default();
        assert!(b.offer(Document::Secret, &secret(1)).unwrap().changed);
        assert_eq!(b.next_snapshot(), None, "no IPv4 list yet");
        assert!(b.offer(Document::Config, CONFIG.as_bytes()).unwrap().changed);
        let snapshot = b.next_snapshot().expect("secret + v4 is enough");
        assert_eq!(snapshot.secret.as_bytes(), secret(1));
        assert_eq!(snapshot.v4.group(-2), ["127.0.0.1:8888".parse().unwrap()]);
        assert!(snapshot.v6.is_empty());
        assert_eq!(b.next_snapshot(), None, "nothing changed");
    }

    #[test]
    fn the_same_bodies_again_are_unchanged_and_publish_nothing() {
        let mut b = ready();
        b.next_snapshot().unwrap();
        assert!(!b.offer(Document::Secret, &secret(1)).unwrap().changed);
        // Comments and order of equal statements do not make a change.
        let same = format!("# refreshed\n{CONFIG}");
        assert!(!b.offer(Document::Config, same.as_bytes()).unwrap().changed);
        assert_eq!(b.next_snapshot(), None);
    }

    #[test]
    fn empty_or_garbage_bodies_are_rejected_and_keep_the_old_copy() {
        let mut b = ready();
        let first = b.next_snapshot().unwrap();
        for bad in [&b""[..], b"<html>502 Bad Gateway</html>", b"proxy_for 2 nowhere;\n", b"\xff\xfe\x00"] {
            let err = b.offer(Document::Config, bad).unwrap_err();
            assert!(err.contains("no proxy_for") || err.contains("UTF-8"), "{err}");
            assert!(b.offer(Document::ConfigV6, bad).is_err());
        }
        let err = b.offer(Document::Secret, &[7; 16]).unwrap_err();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(b.offer(Document::Secret, &[7; 300]).is_err());
        assert_eq!(b.next_snapshot(), None, "nothing replaced");
        assert!(b.has(Document::Secret) && b.has(Document::Config) && !b.has(Document::ConfigV6));
        // The kept copy is still the one published.
        assert!(!b.offer(Document::Config, CONFIG.as_bytes()).unwrap().changed);
        assert_eq!(first.secret.as_bytes(), secret(1));
    }

    #[test]
    fn a_rotated_secret_or_changed_list_publishes_again() {
        let mut b = ready();
        b.next_snapshot().unwrap();
        assert!(b.offer(Document::Secret, &secret(2)).unwrap().changed);
        let rotated = b.next_snapshot().expect("rotation publishes");
        assert_eq!(rotated.secret.key_select_bytes()[0], 2);
        let moved = CONFIG.replace("8888", "9999");
        assert!(b.offer(Document::Config, moved.as_bytes()).unwrap().changed);
        assert_eq!(b.next_snapshot().unwrap().v4.group(2), ["127.0.0.1:9999".parse().unwrap()]);
        assert!(b.offer(Document::ConfigV6, CONFIG_V6.as_bytes()).unwrap().changed);
        assert_eq!(b.next_snapshot().unwrap().v6.group(2), ["[::1]:8888".parse().unwrap()]);
    }

    #[test]
    fn a_bad_v6_list_never_touches_v4() {
        let mut b = ready();
        b.offer(Document::ConfigV6, CONFIG_V6.as_bytes()).unwrap();
        let before = b.next_snapshot().unwrap();
        assert!(b.offer(Document::ConfigV6, b"garbage").is_err());
        assert_eq!(b.next_snapshot(), None);
        assert!(!b.offer(Document::Config, CONFIG.as_bytes()).unwrap().changed);
        assert_eq!(before.v4.group(2), ["127.0.0.1:8888".parse().unwrap()]);
    }

    #[test]
    fn skipped_statements_come_back_as_warnings() {
        let mut b = Bootstrap::default();
        let text = format!("{CONFIG}frobnicate 3;\n");
        let accepted = b.offer(Document::Config, text.as_bytes()).unwrap();
        assert_eq!(accepted.warnings.len(), 1);
        assert_eq!(accepted.warnings[0].line, 4);
    }

    #[test]
    fn skew_is_read_from_the_date_header() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 01:00:00 GMT").unwrap();
        assert_eq!(clock_skew("Wed, 02 Dec 2026 01:00:00 GMT", now), Some(0));
        assert_eq!(clock_skew("Wed, 02 Dec 2026 01:02:00 GMT", now), Some(120));
        assert_eq!(clock_skew(" Wed, 02 Dec 2026 00:58:00 GMT ", now), Some(-120));
        // A response that arrived half a second later than the server's whole second.
        assert_eq!(clock_skew("Wed, 02 Dec 2026 01:00:00 GMT", now + Duration::from_millis(500)), Some(0));
        assert_eq!(clock_skew("yesterday", now), None);
        assert_eq!(clock_skew("", now), None);
    }

    #[test]
    fn skew_over_30_seconds_switches_once_each_way() {
        let mut watch = SkewWatch::default();
        assert_eq!(watch.observe(0), None);
        assert_eq!(watch.observe(30), None);
        assert_eq!(watch.observe(-30), None);
        assert_eq!(watch.observe(120), Some(SkewChange::Skewed(120)));
        assert!(watch.is_skewed());
        assert_eq!(watch.observe(-31), None, "still skewed: no second warning");
        assert_eq!(watch.observe(2), Some(SkewChange::Fixed(2)));
        assert_eq!(watch.observe(1), None);
        assert!(!watch.is_skewed());
    }

    #[test]
    fn failures_warn_once_per_streak() {
        let mut streaks = Streaks::default();
        assert!(!streaks.succeeded(Document::Secret));
        assert!(streaks.failed(Document::Secret));
        assert!(!streaks.failed(Document::Secret));
        assert!(streaks.failed(Document::ConfigV6), "streaks are per document");
        assert!(streaks.succeeded(Document::Secret));
        assert!(!streaks.succeeded(Document::Secret));
        assert!(streaks.failed(Document::Secret), "a new streak warns again");
    }

    #[test]
    fn labels_and_cache_names() {
        let labels: Vec<_> = Document::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["secret", "config", "config_v6"]);
        let files: Vec<_> = Document::ALL.iter().map(|d| d.cache_file()).collect();
        assert_eq!(files, ["proxy-secret", "proxy-multi.conf", "proxy-multi-v6.conf"]);
        let outcomes = [Outcome::Ok, Outcome::Unchanged, Outcome::Failed, Outcome::Rejected];
        assert_eq!(outcomes.map(Outcome::label), ["ok", "unchanged", "failed", "rejected"]);
    }
}
