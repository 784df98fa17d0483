//! `doctor`'s middle-proxy section (only when some user has an ad tag): fetches the three
//! `[middle-proxy]` documents as the proxy does and reports their sizes, the secret's
//! `key_select`, the middle proxies per address family and our clock's skew from the
//! secret's `Date` header.

use futures_util::future::join3;

use crate::config::{Config, ListSource};
use crate::ip_lists::list::source_name;
use crate::middle::bootstrap::{Bootstrap, Document, SKEW_LIMIT_SECS};
use crate::middle::refresh::{self, Body, endpoints};

use super::{Section, Status};

/// The section's title.
pub const TITLE: &str = "Validate middle-proxy bootstrap";

/// Whether the config gives some user an ad tag (the section is skipped otherwise).
pub fn wanted(config: &Config) -> bool {
    config.ad_tag.is_some() || !config.secret_ad_tags.is_empty()
}

/// Fetches the three documents at once and reports on them.
pub async fn section(config: &Config) -> Section {
    let sources = &config.middle_proxy;
    let (secret, v4, v6) = join3(
        refresh::fetch(sources.secret_url.clone()),
        refresh::fetch(sources.config_url.clone()),
        refresh::fetch(sources.config_url_v6.clone()),
    )
    .await;
    report([
        (Document::Secret, &sources.secret_url, secret),
        (Document::Config, &sources.config_url, v4),
        (Document::ConfigV6, &sources.config_url_v6, v6),
    ])
}

/// The section for these fetch results (secret, IPv4 list, IPv6 list, in that order).
pub fn report(fetched: [(Document, &ListSource, Result<Body, String>); 3]) -> Section {
    let mut section = Section::new(TITLE);
    let mut state = Bootstrap::default();
    let mut skew = None;
    for (document, source, result) in fetched {
        let shown = source_name(source);
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                // IPv4 middle proxies are the ones used; IPv6 ones are optional.
                let status = if document == Document::ConfigV6 { Status::Warning } else { Status::Failed };
                section.push(status, format!("{}: {e}", document.describe()));
                continue;
            }
        };
        if document == Document::Secret {
            skew = body.skew;
        }
        let size = body.bytes.len();
        let accepted = state.offer(document, &body.bytes);
        let (status, text) = match (document, accepted) {
            (_, Err(why)) => {
                let status = if document == Document::ConfigV6 { Status::Warning } else { Status::Failed };
                (status, format!("{} from {shown} rejected: {why}", document.describe()))
            }
            (Document::Secret, Ok(_)) => {
                let key_select = state.secret().map_or(0, |secret| secret.key_select());
                let key_select = format!("{key_select:08x}");
                (Status::Ok, format!("proxy secret from {shown}: {size} bytes, key_select {key_select}"))
            }
            (_, Ok(accepted)) => {
                let map = if document == Document::Config { state.v4() } else { state.v6() };
                let (family, count) =
                    (if document == Document::Config { "IPv4" } else { "IPv6" }, endpoints(map));
                let skipped = if accepted.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} statement(s) skipped", accepted.warnings.len())
                };
                (
                    Status::Ok,
                    format!(
                        "{family} list from {shown}: {size} bytes, {count} middle-proxy address(es) for {} DC id(s){skipped}",
                        map.by_dc.len()
                    ),
                )
            }
        };
        section.push(status, text);
    }
    match skew {
        Some(skew) if skew.unsigned_abs() > SKEW_LIMIT_SECS.unsigned_abs() => section.push(
            Status::Failed,
            format!(
                "clock is {skew} s off Telegram's (Date of the secret's answer), over {SKEW_LIMIT_SECS} s: \
                 middle proxies refuse us and tagged users go direct; synchronise the clock (NTP)"
            ),
        ),
        Some(skew) => section.push(
            Status::Ok,
            format!(
                "clock is {skew} s off Telegram's (Date of the secret's answer), within {SKEW_LIMIT_SECS} s"
            ),
        ),
        None => {}
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &str) -> ListSource {
        ListSource::Url(format!("http://127.0.0.1:1/{path}"))
    }

    fn body(bytes: &[u8], skew: Option<i64>) -> Result<Body, String> {
        Ok(Body { bytes: bytes.to_vec(), skew })
    }

    #[test]
    fn a_good_bootstrap_reports_sizes_key_select_endpoints_and_skew() {
        let mut secret = vec![0u8; 128];
        secret[..4].copy_from_slice(&[0xc4, 0xf9, 0xfa, 0xca]);
        let v4 =
            b"default 2;\nproxy_for 2 127.0.0.1:1;\nproxy_for -2 127.0.0.1:1;\nproxy_for 4 127.0.0.2:1;\n";
        let (s, c, c6) = (url("s"), url("c"), url("c6"));
        let section = report([
            (Document::Secret, &s, body(&secret, Some(-2))),
            (Document::Config, &c, body(v4, None)),
            (Document::ConfigV6, &c6, Err("GET http://127.0.0.1:1/c6: http status: 404".into())),
        ]);
        let lines: Vec<_> = section.lines.iter().map(|(s, t)| (*s, t.as_str())).collect();
        let v4_line = format!(
            "IPv4 list from http://127.0.0.1:1/c: {} bytes, 2 middle-proxy address(es) for 3 DC id(s)",
            v4.len()
        );
        assert_eq!(
            lines,
            [
                (Status::Ok, "proxy secret from http://127.0.0.1:1/s: 128 bytes, key_select cafaf9c4"),
                (Status::Ok, v4_line.as_str()),
                (Status::Warning, "middle-proxy IPv6 config: GET http://127.0.0.1:1/c6: http status: 404"),
                (Status::Ok, "clock is -2 s off Telegram's (Date of the secret's answer), within 30 s"),
            ]
        );
    }

    #[test]
    fn failures_bad_bodies_and_skew_fail() {
        let (s, c, c6) = (url("s"), url("c"), url("c6"));
        let section = report([
            (Document::Secret, &s, body(&[1; 16], Some(120))),
            (Document::Config, &c, Err("GET http://127.0.0.1:1/c: Connection refused".into())),
            (Document::ConfigV6, &c6, body(b"garbage", None)),
        ]);
        let statuses: Vec<_> = section.lines.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [Status::Failed, Status::Failed, Status::Warning, Status::Failed]);
        assert!(section.lines[0].1.contains("rejected: proxy secret of 16 bytes"), "{:?}", section.lines);
        assert!(section.lines[3].1.starts_with("clock is 120 s off Telegram's"), "{:?}", section.lines);
    }
}
