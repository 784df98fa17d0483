//! Users: `[secrets]` (name = secret) or the single top-level `secret` (named `default`), the
//! per-user `[secret-limits.NAME]` tables and the ad tags (`ad-tag`, `[secret-ad-tags]`).
//! Errors name the user, never the secret.

use std::collections::BTreeMap;

use mtg_proto::{Secret, SecretKind};

use super::error::{ConfigError, ConfigWarning, SecretProblem, TOP_LEVEL_FIRST, shown_str, type_name};
use super::reader::Reader;
use super::{AdTag, AdTagProblem, SecretLimits};
use super::{schema, timestamp, values};

/// The name the single top-level `secret` gets.
pub(super) const DEFAULT_USER: &str = "default";

/// Reads the users; `secured` says whether `dd` secrets are allowed.
pub(super) fn read(
    r: &Reader<'_>,
    secured: bool,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
    // The top-level `secret` is validated even when `[secrets]` wins, as mtg does.
    let single = match r.value("secret") {
        None => None,
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(parse("secret", s, None, secured)?),
        Some(other) => {
            return Err(secret_error("secret", SecretProblem::NotAString(type_name(other)), None));
        }
    };
    let mut users = BTreeMap::new();
    match r.value("secrets") {
        Some(toml::Value::Table(table)) if !table.is_empty() => {
            for (name, value) in table {
                let key = format!("secrets.{name}");
                let hint = schema::top_level_leaf(name)
                    .map(|k| format!("`{k}` is inside [secrets]: {TOP_LEVEL_FIRST}"));
                let toml::Value::String(text) = value else {
                    return Err(secret_error(&key, SecretProblem::NotAString(type_name(value)), hint));
                };
                users.insert(name.clone(), parse(&key, text, hint, secured)?);
            }
            if single.is_some() {
                warnings.push(ConfigWarning::SecretIgnored);
            }
        }
        Some(toml::Value::Table(_)) | None => match single {
            Some(secret) => {
                users.insert(DEFAULT_USER.to_owned(), secret);
            }
            None => {
                let hint = match schema::misplaced(r.root(), "secret") {
                    Some(table) => format!("`secret` is inside {table}: {TOP_LEVEL_FIRST}"),
                    None => "or a non-empty [secrets] table of name = \"secret\"".to_owned(),
                };
                return Err(ConfigError::Missing { key: "secret".into(), hint: Some(hint) });
            }
        },
        Some(other) => return Err(Reader::invalid("secrets", other, "a table of name = \"secret\"")),
    }
    let mut seen: Vec<(&String, &Secret)> = Vec::new();
    for (name, secret) in &users {
        if let Some((kept, _)) = seen.iter().find(|(_, s)| *s == secret) {
            warnings.push(ConfigWarning::SameSecret { kept: (*kept).clone(), shadowed: name.clone() });
        }
        seen.push((name, secret));
    }
    Ok(users)
}

fn parse(key: &str, text: &str, hint: Option<String>, secured: bool) -> Result<Secret, ConfigError> {
    let secret = Secret::parse(text).map_err(|e| secret_error(key, SecretProblem::Parse(e), hint))?;
    if secret.kind() == SecretKind::Secured && !secured {
        return Err(secret_error(key, SecretProblem::SecuredDisabled, None));
    }
    Ok(secret)
}

fn secret_error(key: &str, problem: SecretProblem, hint: Option<String>) -> ConfigError {
    ConfigError::Secret { key: key.to_owned(), problem, hint }
}

/// Reads `[secret-limits.NAME]` for the configured `users`.
pub(super) fn limits(
    r: &Reader<'_>,
    users: &BTreeMap<String, Secret>,
) -> Result<BTreeMap<String, SecretLimits>, ConfigError> {
    let mut out = BTreeMap::new();
    let table = match r.value("secret-limits") {
        None => return Ok(out),
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(Reader::invalid("secret-limits", other, "tables [secret-limits.NAME]")),
    };
    for (name, limits) in table {
        let key = format!("secret-limits.{name}");
        if !users.contains_key(name) {
            return Err(ConfigError::Invalid {
                key: "secret-limits".into(),
                value: shown_str(name),
                expected: format!("the name of a configured user ({})", names(users)),
            });
        }
        if !limits.is_table() {
            return Err(Reader::invalid(&key, limits, "a table of limits"));
        }
        out.insert(name.clone(), limits_at(r, &key)?);
    }
    Ok(out)
}

/// Reads `[secret-limits-default]`: the limits of users without a table of their own.
pub(super) fn default_limits(r: &Reader<'_>) -> Result<SecretLimits, ConfigError> {
    match r.value("secret-limits-default") {
        None => Ok(SecretLimits::default()),
        Some(toml::Value::Table(_)) => limits_at(r, "secret-limits-default"),
        Some(other) => Err(Reader::invalid("secret-limits-default", other, "a table of limits")),
    }
}

/// Reads one user's limits from the table at the dotted path `prefix` (`secret-limits.NAME`;
/// empty for the root table, as the management API passes them). Errors name the key.
pub(super) fn limits_at(r: &Reader<'_>, prefix: &str) -> Result<SecretLimits, ConfigError> {
    let field = |f: &str| if prefix.is_empty() { f.to_owned() } else { format!("{prefix}.{f}") };
    let expires = match r.value(&field("expires")) {
        // An unquoted TOML date or date-time.
        Some(v @ toml::Value::Datetime(dt)) => Some(
            timestamp::unix_seconds(&dt.to_string()).map_err(|e| Reader::invalid(&field("expires"), v, e))?,
        ),
        _ => r.parsed(&field("expires"), timestamp::unix_seconds)?,
    };
    let wide = cluster_wide(r, &field("cluster-wide"))?;
    Ok(SecretLimits {
        max_connections: r.count(&field("max-connections"))?.unwrap_or(0),
        quota: r.bytes(&field("quota"))?,
        quota_reset: r.parsed(&field("quota-reset"), values::quota_reset)?.unwrap_or_default(),
        expires,
        disabled: r.flag(&field("disabled"))?,
        max_ips: r.count(&field("max-ips"))?.unwrap_or(0),
        rate_limit: r.rate(&field("rate-limit"))?,
        cluster_wide_connections: wide.contains(&ClusterWide::Connections),
        cluster_wide_ips: wide.contains(&ClusterWide::Ips),
    })
}

/// A limit `cluster-wide` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterWide {
    Connections,
    Ips,
}

/// `cluster-wide`: the limits counted across the fleet: a list of `"max-connections"` and
/// `"max-ips"`, or `true` (both) / `false` (none).
fn cluster_wide(r: &Reader<'_>, key: &str) -> Result<Vec<ClusterWide>, ConfigError> {
    match r.value(key) {
        Some(toml::Value::Boolean(true)) => return Ok(vec![ClusterWide::Connections, ClusterWide::Ips]),
        Some(toml::Value::Boolean(false)) => return Ok(Vec::new()),
        _ => {}
    }
    r.list(
        key,
        |s| match s {
            "max-connections" => Ok(ClusterWide::Connections),
            "max-ips" => Ok(ClusterWide::Ips),
            _ => Err("\"max-connections\" or \"max-ips\" (the limits counted fleet-wide), or true/false"),
        },
        str::to_owned,
    )
}

/// Reads the ad tag at `key` (`""` = none); a tag equal to a user's secret key is refused.
fn ad_tag_at(
    r: &Reader<'_>,
    key: &str,
    users: &BTreeMap<String, Secret>,
) -> Result<Option<AdTag>, ConfigError> {
    let problem = |problem| ConfigError::AdTag { key: key.to_owned(), problem };
    match r.value(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
        Some(toml::Value::String(s)) => {
            let tag = AdTag::parse(s).map_err(problem)?;
            tag.check_not_a_key(users).map_err(problem)?;
            Ok(Some(tag))
        }
        Some(other) => Err(problem(AdTagProblem::NotAString(type_name(other)))),
    }
}

/// Reads `ad-tag` and `[secret-ad-tags]` (name = tag) for the configured `users`; an empty
/// tag means none.
pub(super) fn ad_tags(
    r: &Reader<'_>,
    users: &BTreeMap<String, Secret>,
) -> Result<(Option<AdTag>, BTreeMap<String, AdTag>), ConfigError> {
    let global = ad_tag_at(r, "ad-tag", users)?;
    let mut out = BTreeMap::new();
    let table = match r.value("secret-ad-tags") {
        None => return Ok((global, out)),
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(Reader::invalid("secret-ad-tags", other, "a table of name = \"tag\"")),
    };
    for name in table.keys() {
        if !users.contains_key(name) {
            let mut expected = format!("the name of a configured user ({})", names(users));
            if let Some(top) = schema::top_level_leaf(name) {
                expected.push_str(&format!(" (`{top}` is a top-level key: {TOP_LEVEL_FIRST})"));
            }
            return Err(ConfigError::Invalid {
                key: "secret-ad-tags".into(),
                value: shown_str(name),
                expected,
            });
        }
        if let Some(tag) = ad_tag_at(r, &format!("secret-ad-tags.{name}"), users)? {
            out.insert(name.clone(), tag);
        }
    }
    Ok((global, out))
}

/// The user names for an error message, the first few only.
fn names(users: &BTreeMap<String, Secret>) -> String {
    const SHOWN: usize = 5;
    let mut list: Vec<&str> = users.keys().take(SHOWN).map(String::as_str).collect();
    if users.len() > SHOWN {
        list.push("…");
    }
    list.join(", ")
}
