//! The management API: list, add, update, replace and remove users, set the ad tags and reset
//! quotas at run time (the request shapes of MHSanaei/mtg-multi). Changes apply at once through the same path
//! as a reload and, with `api-persist = true`, are written back to the config file
//! ([`persist`]). Every change is one read-modify-write under the management lock (an async
//! lock: waiting calls do not block a runtime thread), which reloads take too: concurrent
//! calls each succeed or fail on their own, none is lost.
//!
//! Each entry point takes the request body bytes and returns a serialisable value or an
//! [`ApiError`] (a 4xx naming the field for bad input; 500 only when the file cannot be
//! written), so the HTTP layer only routes.

use std::collections::BTreeMap;
use std::path::Path;

use mtg_proto::{Secret, SecretKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Control;
use crate::config::{
    AD_TAG_RULE, AdTag, AdTagProblem, AdTags, Config, ConfigError, QuotaReset, SecretLimits,
};
use crate::engine::unix_ms;

/// An API failure: the HTTP status and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

/// One user as `GET /secrets` shows it: the secret and the limits, named and formatted as the
/// fields `POST /secrets` and `PUT /secrets` take (absent = no limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The secret in hex.
    pub secret: String,
    /// The same secret in base64url.
    pub base64: String,
    /// The fronting hostname (empty for `dd`).
    pub host: String,
    /// Most live connections (absent = no cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The data quota in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// `monthly` when the quota starts over each month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_reset: Option<&'static str>,
    /// When the user expires, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Present (and `true`) when the user is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Most distinct client addresses with live sessions (absent = no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ips: Option<u32>,
    /// The rate limit in bytes per second, each direction (absent = no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u64>,
    /// `["max-connections"]` when the cap counts the whole fleet's sessions (`[cluster]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_wide: Option<Vec<&'static str>>,
    /// The user's own ad tag (`[secret-ad-tags]`), 32 hex; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_tag: Option<String>,
    /// The tag the user's new sessions get (its own, else the global `ad-tag`); absent when
    /// none (direct to the DCs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_ad_tag: Option<String>,
}

impl UserView {
    fn new(secret: &Secret, limits: &SecretLimits, own: Option<AdTag>, effective: Option<AdTag>) -> Self {
        Self {
            ad_tag: own.map(|t| t.to_hex()),
            effective_ad_tag: effective.map(|t| t.to_hex()),
            secret: secret.to_hex(),
            base64: secret.to_base64url(),
            host: secret.host().to_owned(),
            max_connections: Some(limits.max_connections).filter(|&n| n > 0),
            quota: limits.quota,
            quota_reset: (limits.quota_reset == QuotaReset::Monthly).then_some("monthly"),
            expires: limits.expires.map(|at| crate::users::stats_json::rfc3339_ms(at.saturating_mul(1000))),
            disabled: limits.disabled.then_some(true),
            max_ips: Some(limits.max_ips).filter(|&n| n > 0),
            rate_limit: limits.rate_limit,
            cluster_wide: Some(limits.cluster_wide_names()).filter(|names| !names.is_empty()),
        }
    }
}

/// The limit fields both `POST /secrets` and `PUT /secrets` entries take: the values of the
/// `[secret-limits.NAME]` keys, in the same formats (`quota`: bytes or a size string;
/// `quota_reset`: `none`/`monthly`; `expires`: RFC 3339 or `YYYY-MM-DD`; `disabled`: bool;
/// `max_connections`, `max_ips`: counts; `rate_limit`: bytes/s or a rate string). Absent, `null`, `""`, `0` and `false` mean "no limit".
#[derive(Debug, Default)]
struct LimitFields {
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
    max_ips: Option<Value>,
    rate_limit: Option<Value>,
    cluster_wide: Option<Value>,
}

impl LimitFields {
    /// Parses the fields with the config's own readers; `at` prefixes field names in errors.
    fn parse(self, at: &str) -> Result<SecretLimits, ApiError> {
        let mut table = toml::Table::new();
        for (key, value) in [
            ("max-connections", self.max_connections),
            ("quota", self.quota),
            ("quota-reset", self.quota_reset),
            ("expires", self.expires),
            ("disabled", self.disabled),
            ("max-ips", self.max_ips),
            ("rate-limit", self.rate_limit),
            ("cluster-wide", self.cluster_wide),
        ] {
            if let Some(value) = value.and_then(json_to_toml) {
                table.insert(key.to_owned(), value);
            }
        }
        let limits = SecretLimits::from_table(&table).map_err(|e| match e {
            ConfigError::Invalid { key, value, expected } => {
                ApiError::bad(format!("field `{at}{}`: {value}: expected {expected}", key.replace('-', "_")))
            }
            other => ApiError::bad(format!("limits: {other}")),
        })?;
        if limits.to_table().is_none() {
            return Err(ApiError::bad(format!("field `{at}expires`: outside the years 0000 to 9999")));
        }
        Ok(limits)
    }
}

/// A JSON value as the TOML value the config reader sees; `null` is absent.
fn json_to_toml(value: Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            // Fractions and integers above i64::MAX: the readers refuse floats with the
            // expected form.
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => toml::Value::String(s),
        Value::Array(items) => toml::Value::Array(items.into_iter().filter_map(json_to_toml).collect()),
        Value::Object(map) => {
            toml::Value::Table(map.into_iter().filter_map(|(k, v)| Some((k, json_to_toml(v)?))).collect())
        }
    })
}

/// An ad tag field of a request body: a 32-hex string; absent, `null` and `""` mean none.
/// `field` names it in errors.
fn parse_ad_tag(value: Option<Value>, field: &str) -> Result<Option<AdTag>, ApiError> {
    let bad = |problem: AdTagProblem| ApiError::bad(format!("field `{field}`: {problem}; {AD_TAG_RULE}"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => AdTag::parse(&s).map(Some).map_err(bad),
        Some(Value::Bool(_)) => Err(bad(AdTagProblem::NotAString("a boolean"))),
        Some(Value::Number(_)) => Err(bad(AdTagProblem::NotAString("a number"))),
        Some(Value::Array(_)) => Err(bad(AdTagProblem::NotAString("an array"))),
        Some(Value::Object(_)) => Err(bad(AdTagProblem::NotAString("an object"))),
    }
}

/// The body of `POST /secrets`: a name with a secret, or a host to generate one, limits and
/// the user's own ad tag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    secret: Option<String>,
    host: Option<String>,
    ad_tag: Option<Value>,
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
    max_ips: Option<Value>,
    rate_limit: Option<Value>,
    cluster_wide: Option<Value>,
}

/// One user in the body of `PUT /secrets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    secret: String,
    ad_tag: Option<Value>,
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
    max_ips: Option<Value>,
    rate_limit: Option<Value>,
    cluster_wide: Option<Value>,
}

impl Entry {
    /// The secret, the limits and the own ad tag; `at` prefixes field names in errors.
    fn parse(self, control: &Control, at: &str) -> Result<(Secret, SecretLimits, Option<AdTag>), ApiError> {
        let secret = parse_secret(control, &self.secret, &format!("{at}secret"))?;
        let limits = LimitFields {
            max_connections: self.max_connections,
            quota: self.quota,
            quota_reset: self.quota_reset,
            expires: self.expires,
            disabled: self.disabled,
            max_ips: self.max_ips,
            rate_limit: self.rate_limit,
            cluster_wide: self.cluster_wide,
        }
        .parse(at)?;
        Ok((secret, limits, parse_ad_tag(self.ad_tag, &format!("{at}ad_tag"))?))
    }
}

/// The body of `PUT /secrets`: the whole new set of users, and the global ad tag (absent =
/// none, as in mtg-multi).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceAll {
    secrets: BTreeMap<String, Entry>,
    ad_tag: Option<Value>,
}

/// The body of `PUT /adtag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAdTag {
    ad_tag: Option<Value>,
}

/// The users as the API changes them: (name, secret) sorted by name, the limits of the users
/// that have any, and the ad tags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    users: Vec<(String, Secret)>,
    limits: BTreeMap<String, SecretLimits>,
    tags: AdTags,
}

impl State {
    fn current(control: &Control) -> Self {
        let directory = control.data.users();
        let users = directory.names().iter().cloned().zip(directory.secrets().iter().cloned()).collect();
        // Own tables only: users without one keep getting `[secret-limits-default]`.
        let limits = directory
            .names()
            .iter()
            .zip(directory.own_limits())
            .filter_map(|(n, l)| Some((n.clone(), l.clone().filter(|l| !l.is_unlimited())?)))
            .collect();
        Self { users, limits, tags: directory.ad_tag_config() }
    }

    fn set_own_ad_tag(&mut self, name: &str, tag: Option<AdTag>) {
        match tag {
            Some(tag) => self.tags.per_user.insert(name.to_owned(), tag),
            None => self.tags.per_user.remove(name),
        };
    }

    /// Refuses a tag that is some user's secret key (the value @MTProxybot is given, pasted
    /// back as the tag), as the config loader does.
    fn check_tags(&self) -> Result<(), ApiError> {
        let users = self.users.iter().map(|(n, s)| (n, s));
        let global = self.tags.global.iter().map(|t| ("the global ad tag".to_owned(), t));
        let own = self.tags.per_user.iter().map(|(n, t)| (format!("the ad tag of user {n}"), t));
        for (what, tag) in global.chain(own) {
            if let Err(problem) = tag.check_not_a_key(users.clone()) {
                return Err(ApiError::bad(format!("{what}: {problem}; {AD_TAG_RULE}")));
            }
        }
        Ok(())
    }

    fn set_limits(&mut self, name: &str, limits: SecretLimits) {
        if limits.is_unlimited() {
            self.limits.remove(name);
        } else {
            self.limits.insert(name.to_owned(), limits);
        }
    }
}

/// `GET /secrets`: every user by name, with its own limits (those `POST /secrets` sets; a
/// user without them gets `[secret-limits-default]`).
pub fn list(control: &Control) -> BTreeMap<String, UserView> {
    let users = control.data.users();
    let none = SecretLimits::default();
    (0..users.len())
        .map(|i| {
            let view = UserView::new(
                &users.secrets()[i],
                users.own_limits()[i].as_ref().unwrap_or(&none),
                users.own_ad_tags()[i],
                users.all_ad_tags()[i],
            );
            (users.names()[i].clone(), view)
        })
        .collect()
}

const NAME_RULE: &str = "1-64 letters, digits, '-', '_' or '.'";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}

/// A secret from the API, allowed by the `[secured]` setting; `field` names it in errors.
fn parse_secret(control: &Control, text: &str, field: &str) -> Result<Secret, ApiError> {
    let secret = Secret::parse(text).map_err(|e| ApiError::bad(format!("field `{field}`: {e}")))?;
    if secret.kind() == SecretKind::Secured && !control.data.settings().handshake.secured {
        return Err(ApiError::bad(format!("field `{field}`: dd secrets need [secured] enabled = true")));
    }
    Ok(secret)
}

/// What `POST /secrets` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The user's name.
    pub name: String,
    /// The user as `GET /secrets` shows it now.
    pub view: UserView,
    /// `true` for a new user (201), `false` for an update (200).
    pub created: bool,
}

/// `POST /secrets` with a JSON body: adds a user, or updates an existing one.
///
/// A new user needs exactly one of `secret` or `host` (a key is generated for the host). For an
/// existing user, `secret` re-keys it (its sessions close), neither keeps its secret, and
/// `host` is refused with 409 (it would silently re-key the user with a random key). In both
/// cases the user's limits become exactly the limit fields given (absent = no limit), and its
/// own ad tag exactly `ad_tag` (absent = none: the global tag applies), as in mtg-multi. A tag
/// change closes no session.
pub async fn add(control: &Control, body: &[u8]) -> Result<Added, ApiError> {
    let request: AddUser = parse_json(body)?;
    let own_tag = parse_ad_tag(request.ad_tag, "ad_tag")?;
    if !valid_name(&request.name) {
        return Err(ApiError::bad(format!("field `name`: {NAME_RULE}")));
    }
    let new_secret = match (&request.secret, &request.host) {
        (Some(text), None) => Some(parse_secret(control, text, "secret")?),
        (None, Some(host)) => Some(
            crate::secrets::generate(host, &mut rand::rng())
                .map_err(|e| ApiError::bad(format!("field `host`: {e}")))?,
        ),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("give exactly one of the fields `secret` or `host`"));
        }
    };
    let limits = LimitFields {
        max_connections: request.max_connections,
        quota: request.quota,
        quota_reset: request.quota_reset,
        expires: request.expires,
        disabled: request.disabled,
        max_ips: request.max_ips,
        rate_limit: request.rate_limit,
        cluster_wide: request.cluster_wide,
    }
    .parse("")?;
    let name = request.name;

    let _serialised = control.manage_lock().await;
    let mut state = State::current(control);
    let existing = state.users.iter().position(|(n, _)| *n == name);
    let created = existing.is_none();
    let secret = match (existing, new_secret) {
        (Some(_), Some(_)) if request.host.is_some() => {
            return Err(ApiError::new(
                409,
                format!(
                    "user {name} already exists: give `secret` to re-key it, or neither `secret` nor \
                     `host` to keep its secret"
                ),
            ));
        }
        (Some(i), Some(secret)) => {
            state.users[i].1 = secret.clone();
            secret
        }
        (Some(i), None) => state.users[i].1.clone(),
        (None, Some(secret)) => {
            state.users.push((name.clone(), secret.clone()));
            state.users.sort_by(|a, b| a.0.cmp(&b.0));
            secret
        }
        (None, None) => {
            return Err(ApiError::bad("give exactly one of the fields `secret` or `host`"));
        }
    };
    state.set_limits(&name, limits.clone());
    state.set_own_ad_tag(&name, own_tag);
    state.check_tags()?;
    apply(control, &state).await?;
    let view = UserView::new(&secret, &limits, own_tag, state.tags.effective(&name));
    Ok(Added { view, name, created })
}

/// `PUT /secrets` with `{"secrets": {NAME: {secret, ad_tag?, ...limits}}, "ad_tag"?}`: replaces
/// every user, all limits and the ad tags in one step (an absent top-level `ad_tag` clears the
/// global tag, as in mtg-multi). Everything is validated first; any error changes nothing.
pub async fn replace(control: &Control, body: &[u8]) -> Result<BTreeMap<String, UserView>, ApiError> {
    let request: ReplaceAll = parse_json(body)?;
    if request.secrets.is_empty() {
        return Err(ApiError::bad("field `secrets`: at least one user is needed"));
    }
    let global = parse_ad_tag(request.ad_tag, "ad_tag")?;
    let mut state = State {
        users: Vec::new(),
        limits: BTreeMap::new(),
        tags: AdTags { global, per_user: BTreeMap::new() },
    };
    for (name, entry) in request.secrets {
        if !valid_name(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(ApiError::bad(format!("field `secrets`: user name {shown:?}: {NAME_RULE}")));
        }
        let (secret, limits, own_tag) = entry.parse(control, &format!("secrets.{name}."))?;
        state.set_limits(&name, limits);
        state.set_own_ad_tag(&name, own_tag);
        state.users.push((name, secret));
    }
    state.check_tags()?;
    // BTreeMap order: already sorted by name.
    let _serialised = control.manage_lock().await;
    apply(control, &state).await?;
    Ok(list(control))
}

/// `DELETE /secrets/{name}`: removes the user and everything of it (limits, and any per-user
/// table in the file).
pub async fn remove(control: &Control, name: &str) -> Result<(), ApiError> {
    let _serialised = control.manage_lock().await;
    let mut state = State::current(control);
    let before = state.users.len();
    state.users.retain(|(n, _)| n != name);
    if state.users.len() == before {
        return Err(ApiError::new(404, format!("no user {name}")));
    }
    if state.users.is_empty() {
        return Err(ApiError::new(409, "cannot remove the last user"));
    }
    state.limits.remove(name);
    state.tags.per_user.remove(name);
    apply(control, &state).await
}

/// `GET /adtag`: `{"ad_tag": "<32 hex>"}`, or `{"ad_tag": null}` when no global tag is set
/// (mtg-multi's shape).
pub fn get_ad_tag(control: &Control) -> Value {
    serde_json::json!({ "ad_tag": control.data.users().global_ad_tag().map(|t| t.to_hex()) })
}

/// `PUT /adtag` with `{"ad_tag": "<32 hex>"}`: sets the global tag (a missing or empty tag is
/// refused: `DELETE /adtag` clears it). No session is closed; new sessions get the tag.
pub async fn set_ad_tag(control: &Control, body: &[u8]) -> Result<(), ApiError> {
    let request: SetAdTag = parse_json(body)?;
    let Some(tag) = parse_ad_tag(request.ad_tag, "ad_tag")? else {
        return Err(ApiError::bad("field `ad_tag` is required; use DELETE /adtag to clear it"));
    };
    let _serialised = control.manage_lock().await;
    let mut state = State::current(control);
    state.tags.global = Some(tag);
    state.check_tags()?;
    apply(control, &state).await
}

/// `DELETE /adtag`: clears the global tag (also when none is set). Users with their own tag
/// keep it.
pub async fn delete_ad_tag(control: &Control) -> Result<(), ApiError> {
    let _serialised = control.manage_lock().await;
    let mut state = State::current(control);
    state.tags.global = None;
    apply(control, &state).await
}

/// `POST /secrets/{name}/reset-quota`.
pub async fn reset_quota(control: &Control, name: &str) -> Result<(), ApiError> {
    let _serialised = control.manage_lock().await;
    let users = control.data.users();
    let index = users
        .names()
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| ApiError::new(404, format!("no user {name}")))?;
    let period = crate::users::limits::quota_period(users.all_limits()[index].quota_reset, unix_ms());
    if let Some(cluster) = control.cluster() {
        cluster.reset_usage(name, period).await.map_err(|e| {
            ApiError::new(503, format!("cannot reset the fleet's usage (nothing changed): {e}"))
        })?;
    }
    users.all_stats()[index].restore_quota(0, period);
    Ok(())
}

/// Writes the new state to the file (with `api-persist`), then swaps it in. The caller holds
/// the management lock. A write failure changes nothing.
async fn apply(control: &Control, state: &State) -> Result<(), ApiError> {
    if let Some(cluster) = control.cluster() {
        let change = fleet_change(&State::current(control), state);
        cluster.write_users(change).await.map_err(|e| {
            ApiError::new(503, format!("cannot change the fleet's users (nothing changed): {e}"))
        })?;
    }
    if control.config().api_persist
        && let Some(path) = &control.config_path
    {
        persist(path, &state.users, &state.limits, &state.tags)
            .map_err(|e| ApiError::new(500, format!("cannot write {}: {e}", path.display())))?;
    }
    let default_limits = control.data.users().default_limits().clone();
    let summary = control.data.reload_users(&state.users, &state.limits, &default_limits, &state.tags);
    tracing::info!(
        added = ?summary.added, removed = ?summary.removed, rekeyed = ?summary.rekeyed,
        relimited = ?summary.relimited, retagged = ?summary.retagged, "users changed through the API"
    );
    Ok(())
}

/// The user as the fleet's Redis keeps it: the `PUT /secrets` entry fields (`secret`,
/// `ad_tag`, the limits).
fn stored_json(secret: &Secret, limits: Option<&SecretLimits>, own_tag: Option<AdTag>) -> String {
    let none = SecretLimits::default();
    let view = UserView::new(secret, limits.unwrap_or(&none), own_tag, None);
    let mut value = serde_json::to_value(&view).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        map.remove("base64");
        map.remove("host");
        // Sizes above i64::MAX read back only as size strings (as in the config file).
        for key in ["quota", "rate_limit"] {
            if let Some(n) = map.get(key).and_then(Value::as_u64).filter(|&n| i64::try_from(n).is_err()) {
                map.insert(key.to_owned(), Value::String(format!("{n}b")));
            }
        }
    }
    value.to_string()
}

impl State {
    /// The users as the fleet's Redis keeps them.
    fn stored(&self) -> crate::cluster::StoredUsers {
        let users = self
            .users
            .iter()
            .map(|(name, secret)| {
                (
                    name.clone(),
                    stored_json(secret, self.limits.get(name), self.tags.per_user.get(name).copied()),
                )
            })
            .collect();
        crate::cluster::StoredUsers { users, ad_tag: self.tags.global.map(|t| t.to_hex()) }
    }

    /// Users read from the fleet's Redis; a user that does not parse is skipped with a
    /// warning naming it (never its secret).
    fn from_stored(control: &Control, stored: &crate::cluster::StoredUsers) -> Self {
        let global = stored.ad_tag.as_deref().and_then(|t| match AdTag::parse(t) {
            Ok(tag) => Some(tag),
            Err(e) => {
                tracing::warn!(error = %e, "the fleet's global ad tag is invalid; ignored");
                None
            }
        });
        let mut state = Self {
            users: Vec::new(),
            limits: BTreeMap::new(),
            tags: AdTags { global, per_user: BTreeMap::new() },
        };
        for (name, json) in &stored.users {
            let parsed = serde_json::from_str::<Entry>(json)
                .map_err(|e| ApiError::bad(format!("bad JSON: {e}")))
                .and_then(|entry| entry.parse(control, ""));
            match parsed {
                Ok((secret, limits, tag)) if valid_name(name) => {
                    state.set_limits(name, limits);
                    state.set_own_ad_tag(name, tag);
                    state.users.push((name.clone(), secret));
                }
                Ok(_) => {
                    tracing::warn!(user = %name.chars().take(64).collect::<String>(), "the fleet has a user with an invalid name; skipped");
                }
                Err(e) => {
                    tracing::warn!(user = %name, error = %e.message, "the fleet has a user that does not parse; skipped");
                }
            }
        }
        state
    }
}

/// The users served now, as the fleet's Redis keeps them (what the first instance seeds).
pub(crate) fn stored_users(control: &Control) -> crate::cluster::StoredUsers {
    State::current(control).stored()
}

/// Serves users read from the fleet's Redis (or its cache) when they differ from the served
/// ones; the caller holds the management lock. An empty set is not applied.
pub(crate) fn apply_stored(control: &Control, stored: &crate::cluster::StoredUsers) {
    let state = State::from_stored(control, stored);
    if state.users.is_empty() || state == State::current(control) {
        return;
    }
    let default_limits = control.data.users().default_limits().clone();
    let summary = control.data.reload_users(&state.users, &state.limits, &default_limits, &state.tags);
    tracing::info!(
        added = ?summary.added, removed = ?summary.removed, rekeyed = ?summary.rekeyed,
        relimited = ?summary.relimited, retagged = ?summary.retagged, "users changed by the fleet"
    );
}

/// What to write to the fleet's Redis to go from `old` to `new`.
fn fleet_change(old: &State, new: &State) -> crate::cluster::UsersChange {
    let (old, new) = (old.stored(), new.stored());
    crate::cluster::UsersChange {
        put: new
            .users
            .iter()
            .filter(|(n, j)| old.users.get(*n) != Some(j))
            .map(|(n, j)| (n.clone(), j.clone()))
            .collect(),
        delete: old.users.keys().filter(|n| !new.users.contains_key(*n)).cloned().collect(),
        ad_tag: (old.ad_tag != new.ad_tag).then_some(new.ad_tag),
    }
}

/// Tables keyed by user name: an entry for a user that is gone is removed with the user, so
/// the file keeps loading. (`[secret-limits]` entries are also rewritten from the limits.)
const PER_USER_TABLES: &[&str] = &["secret-limits", "secret-ad-tags"];

/// Rewrites the users of the config file, keeping everything else (comments, order, other
/// settings): `[secrets]` becomes `users` (the single top-level `secret` goes), every
/// `[secret-limits.NAME]` becomes `limits` (tables of users whose limits did not change are
/// left as written), `ad-tag` and `[secret-ad-tags]` become `tags` (entries that did not change
/// are left as written), entries of per-user tables naming removed users go. The new text is
/// checked to load back to exactly these users, limits and tags before it replaces the file
/// atomically ([`crate::atomic_file`], mode and owner kept).
pub fn persist(
    path: &Path,
    users: &[(String, Secret)],
    limits: &BTreeMap<String, SecretLimits>,
    tags: &AdTags,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let new_text = rewrite(&text, users, limits, tags)?;
    crate::atomic_file::write(path, new_text.as_bytes()).map_err(|e| e.to_string())
}

/// The config text with these users, limits and tags (see [`persist`]).
fn rewrite(
    text: &str,
    users: &[(String, Secret)],
    limits: &BTreeMap<String, SecretLimits>,
    tags: &AdTags,
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| format!("the file is not valid TOML now: {e}"))?;
    let on_file = Config::from_toml_str(text).ok().map(|l| l.config);
    doc.remove("secret");

    // [secrets]: kept entries keep their text (hex or base64) and place.
    if !doc.get("secrets").is_some_and(toml_edit::Item::is_table) {
        doc.insert("secrets", toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let secrets = doc.get_mut("secrets").and_then(toml_edit::Item::as_table_mut).ok_or("no [secrets]")?;
    let gone: Vec<String> =
        secrets.iter().map(|(k, _)| k.to_owned()).filter(|k| !users.iter().any(|(n, _)| n == k)).collect();
    for key in gone {
        secrets.remove(&key);
    }
    for (name, secret) in users {
        let unchanged = on_file.as_ref().and_then(|c| c.users.get(name)) == Some(secret)
            && secrets.get(name).is_some_and(|i| i.as_str().is_some());
        if !unchanged {
            secrets.insert(name, toml_edit::value(secret.to_hex()));
        }
    }

    // Per-user tables lose the entries of users that are gone.
    for table in PER_USER_TABLES {
        if let Some(entries) = doc.get_mut(table).and_then(toml_edit::Item::as_table_like_mut) {
            let gone: Vec<String> = entries
                .iter()
                .map(|(k, _)| k.to_owned())
                .filter(|k| !users.iter().any(|(n, _)| n == k))
                .collect();
            for key in gone {
                entries.remove(&key);
            }
        }
    }

    // [secret-limits.NAME]: rewritten for users whose limits changed.
    let standard = doc.get("secret-limits").is_none_or(toml_edit::Item::is_table);
    if !standard {
        doc.remove("secret-limits");
    }
    if doc.get("secret-limits").is_none() {
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        doc.insert("secret-limits", toml_edit::Item::Table(table));
    }
    let table = doc.get_mut("secret-limits").and_then(toml_edit::Item::as_table_mut).ok_or("no limits")?;
    for (name, _) in users {
        let want = limits.get(name).filter(|l| !l.is_unlimited());
        let had = on_file.as_ref().and_then(|c| c.secret_limits.get(name)).filter(|l| !l.is_unlimited());
        if standard && want == had && (want.is_none() || table.contains_key(name)) {
            continue;
        }
        match want {
            None => {
                table.remove(name);
            }
            Some(l) => {
                let entry = l.to_table().ok_or_else(|| format!("user {name}: `expires` out of range"))?;
                table.insert(name, toml_edit::Item::Table(entry));
            }
        }
    }

    rewrite_ad_tags(&mut doc, on_file.as_ref(), tags)?;

    let new_text = doc.to_string();
    // The file must load back to exactly what is served.
    let loaded = Config::from_toml_str(&new_text)
        .map_err(|e| format!("the rewritten file would not load ({e}); nothing written"))?
        .config;
    let want_users: BTreeMap<&String, &Secret> = users.iter().map(|(n, s)| (n, s)).collect();
    let got_users: BTreeMap<&String, &Secret> = loaded.users.iter().collect();
    let want_limits: BTreeMap<&String, &SecretLimits> =
        limits.iter().filter(|(_, l)| !l.is_unlimited()).collect();
    let got_limits: BTreeMap<&String, &SecretLimits> =
        loaded.secret_limits.iter().filter(|(_, l)| !l.is_unlimited()).collect();
    if want_users != got_users || want_limits != got_limits || loaded.ad_tags() != *tags {
        return Err("the rewritten file would not read back the same users; nothing written".into());
    }
    Ok(new_text)
}

/// `ad-tag` and `[secret-ad-tags]` of the document become `tags`; what did not change stays as
/// written. An empty `[secret-ad-tags]` goes.
fn rewrite_ad_tags(
    doc: &mut toml_edit::DocumentMut,
    on_file: Option<&Config>,
    tags: &AdTags,
) -> Result<(), String> {
    let had_global = on_file.and_then(|c| c.ad_tag);
    if tags.global != had_global || doc.get("ad-tag").is_some() != tags.global.is_some() {
        match tags.global {
            // A new top-level key is written before the first table.
            Some(tag) => doc["ad-tag"] = toml_edit::value(tag.to_hex()),
            None => {
                doc.remove("ad-tag");
            }
        }
    }
    let standard = doc.get("secret-ad-tags").is_none_or(toml_edit::Item::is_table);
    if !standard {
        doc.remove("secret-ad-tags");
    }
    if tags.per_user.is_empty() {
        doc.remove("secret-ad-tags");
        return Ok(());
    }
    if doc.get("secret-ad-tags").is_none() {
        doc.insert("secret-ad-tags", toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let table =
        doc.get_mut("secret-ad-tags").and_then(toml_edit::Item::as_table_mut).ok_or("no [secret-ad-tags]")?;
    let gone: Vec<String> =
        table.iter().map(|(k, _)| k.to_owned()).filter(|k| !tags.per_user.contains_key(k)).collect();
    for key in gone {
        table.remove(&key);
    }
    for (name, tag) in &tags.per_user {
        let had = on_file.and_then(|c| c.secret_ad_tags.get(name));
        if standard && had == Some(tag) && table.get(name).is_some_and(|i| i.as_str().is_some()) {
            continue;
        }
        table.insert(name, toml_edit::value(tag.to_hex()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> Secret {
        Secret::fake_tls([n; 16], "a.example").unwrap()
    }

    fn config(users: &[(&str, &Secret)], tail: &str) -> String {
        let mut text = "# top comment\nbind-to = \"127.0.0.1:1\"\n[secrets]\n".to_owned();
        for (name, secret) in users {
            text.push_str(&format!("{name} = \"{}\" # {name}'s\n", secret.to_hex()));
        }
        text + tail
    }

    fn state(users: &[(&str, &Secret)], limits: &[(&str, SecretLimits)]) -> State {
        State {
            users: users.iter().map(|(n, s)| ((*n).to_owned(), (*s).clone())).collect(),
            limits: limits.iter().map(|(n, l)| ((*n).to_owned(), l.clone())).collect(),
            tags: AdTags::default(),
        }
    }

    fn control(text: &str) -> std::sync::Arc<Control> {
        let config = Config::from_toml_str(text).unwrap().config;
        let settings = crate::engine::Settings::from_config(&config);
        Control::new(crate::run::build_shared(&config, settings), None)
    }

    proptest::proptest! {
        /// Users as the fleet's Redis keeps them read back as the same users, limits and tags.
        #[test]
        fn stored_users_read_back(
            max_connections in 0u32..100,
            quota in proptest::option::of(1u64..=u64::MAX),
            monthly in proptest::bool::ANY,
            expires in proptest::option::of(0i64..253_402_300_799),
            disabled in proptest::bool::ANY,
            max_ips in 0u32..10,
            rate_limit in proptest::option::of(1u64..=u64::MAX),
            cluster_wide in proptest::bool::ANY,
            cluster_wide_ips in proptest::bool::ANY,
            own_tag in proptest::option::of(proptest::array::uniform16(1u8..)),
            global_tag in proptest::option::of(proptest::array::uniform16(1u8..)),
        ) {
            let control = control(&config(&[("alice", &user(1))], ""));
            let limits = SecretLimits {
                max_connections,
                quota,
                quota_reset: if monthly { QuotaReset::Monthly } else { QuotaReset::None },
                expires,
                disabled,
                max_ips,
                rate_limit,
                cluster_wide_connections: cluster_wide,
                cluster_wide_ips,
            };
            let hex = |bytes: [u8; 16]| AdTag::parse(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()).unwrap();
            let mut want = state(&[("alice", &user(1)), ("bob", &user(2))], &[("bob", limits)]);
            want.limits.retain(|_, l| !l.is_unlimited());
            want.tags.global = global_tag.map(hex);
            want.set_own_ad_tag("bob", own_tag.map(hex));
            let stored = want.stored();
            proptest::prop_assert_eq!(State::from_stored(&control, &stored), want);
        }
    }

    fn reread(text: &str) -> State {
        let c = Config::from_toml_str(text).unwrap().config;
        let tags = c.ad_tags();
        State {
            users: c.users.into_iter().collect(),
            tags,
            limits: c.secret_limits.into_iter().filter(|(_, l)| !l.is_unlimited()).collect(),
        }
    }

    #[test]
    fn the_default_limits_table_is_kept() {
        let (a, b) = (user(1), user(2));
        let text =
            config(&[("alice", &a)], "[secret-limits-default] # everyone\nmax-ips = 3\nquota = \"20gib\"\n");
        let bob = SecretLimits { max_ips: 1, ..SecretLimits::default() };
        let want = state(&[("alice", &a), ("bob", &b)], &[("bob", bob)]);
        let out = rewrite(&text, &want.users, &want.limits, &want.tags).unwrap();
        assert!(
            out.contains("[secret-limits-default] # everyone\nmax-ips = 3\nquota = \"20gib\"\n"),
            "{out}"
        );
        assert_eq!(reread(&out), want, "{out}");
        let c = Config::from_toml_str(&out).unwrap().config;
        assert_eq!(c.effective_limits("alice").max_ips, 3);
        assert_eq!(c.effective_limits("bob").max_ips, 1);
        assert_eq!(c.effective_limits("bob").quota, None, "own table only, nothing merged");
    }

    #[test]
    fn removing_a_user_removes_its_tables() {
        let (a, b) = (user(1), user(2));
        let text = config(
            &[("alice", &a), ("bob", &b)],
            "[secret-limits.bob]\nquota = \"1gib\"\n[secret-limits.alice] # hers\nquota = \"2kib\"\n\
             [secret-ad-tags]\nbob = \"abababababababababababababababab\"\n",
        );
        let alice = SecretLimits { quota: Some(2048), ..SecretLimits::default() };
        let want = state(&[("alice", &a)], &[("alice", alice)]);
        let out = rewrite(&text, &want.users, &want.limits, &want.tags).unwrap();
        assert!(!out.contains("bob"), "{out}");
        assert!(out.contains("[secret-limits.alice] # hers\nquota = \"2kib\""), "{out}");
        assert!(out.starts_with("# top comment\n"), "{out}");
        assert!(out.contains("# alice's"), "{out}");
        assert_eq!(reread(&out), want);
    }

    #[test]
    fn every_limit_round_trips_through_the_file() {
        let (a, b, c) = (user(1), user(2), user(3));
        let text = config(&[("alice", &a)], "");
        let full = SecretLimits {
            max_connections: 3,
            quota: Some(u64::MAX),
            quota_reset: QuotaReset::Monthly,
            expires: Some(1_798_761_599),
            disabled: true,
            max_ips: 2,
            rate_limit: Some(2_500_000),
            cluster_wide_connections: true,
            cluster_wide_ips: true,
        };
        let some = SecretLimits { quota: Some(5), ..SecretLimits::default() };
        let want = state(&[("alice", &a), ("bob", &b), ("carol", &c)], &[("bob", full), ("carol", some)]);
        let out = rewrite(&text, &want.users, &want.limits, &want.tags).unwrap();
        assert_eq!(reread(&out), want, "{out}");
        // Limits dropped again: the tables go, the single secret form becomes [secrets].
        let want = state(&[("bob", &b)], &[]);
        let out = rewrite(&out, &want.users, &want.limits, &want.tags).unwrap();
        assert!(!out.contains("secret-limits"), "{out}");
        assert_eq!(reread(&out), want);
        let single = format!("bind-to = \"127.0.0.1:1\"\nsecret = \"{}\"\n", a.to_hex());
        let want = state(&[("default", &a), ("x", &b)], &[]);
        let out = rewrite(&single, &want.users, &want.limits, &want.tags).unwrap();
        assert_eq!(reread(&out), want, "{out}");
    }

    #[test]
    fn ad_tags_round_trip_through_the_file() {
        let (a, b) = (user(1), user(2));
        let (t1, t2) = (AdTag::new([0xab; 16]), AdTag::new([0xcd; 16]));
        let text = config(&[("alice", &a), ("bob", &b)], "[secret-limits.bob]\nquota = 5\n");
        let mut want = state(
            &[("alice", &a), ("bob", &b)],
            &[("bob", SecretLimits { quota: Some(5), ..Default::default() })],
        );
        want.tags = AdTags { global: Some(t1), per_user: BTreeMap::from([("bob".to_owned(), t2)]) };
        let out = rewrite(&text, &want.users, &want.limits, &want.tags).unwrap();
        assert_eq!(reread(&out), want, "{out}");
        // The top-level key lands before the first table, where TOML needs it.
        assert!(out.find("ad-tag =").unwrap() < out.find("[secrets]").unwrap(), "{out}");
        assert!(out.contains(&format!("[secret-ad-tags]\nbob = \"{}\"", "cd".repeat(16))), "{out}");
        // Unchanged tags stay as written (upper case here); a cleared global tag goes.
        let upper =
            out.replace(&"ab".repeat(16), &"AB".repeat(16)).replace(&"cd".repeat(16), &"CD".repeat(16));
        want.tags.global = None;
        let out = rewrite(&upper, &want.users, &want.limits, &want.tags).unwrap();
        assert!(!out.contains("ad-tag ="), "{out}");
        assert!(out.contains(&"CD".repeat(16)), "{out}");
        assert_eq!(reread(&out), want, "{out}");
        // No per-user tag left: the table goes; removing bob removes his tag too.
        want.tags.per_user.clear();
        let out = rewrite(&out, &want.users, &want.limits, &want.tags).unwrap();
        assert!(!out.contains("secret-ad-tags"), "{out}");
        assert_eq!(reread(&out), want, "{out}");
        let inline = config(&[("alice", &a), ("bob", &b)], "").replace(
            "[secrets]",
            &format!("secret-ad-tags = {{ bob = \"{}\" }}\n[secrets]", "cd".repeat(16)),
        );
        let want = state(&[("alice", &a)], &[]);
        let out = rewrite(&inline, &want.users, &want.limits, &want.tags).unwrap();
        assert!(!out.contains("secret-ad-tags"), "{out}");
        assert_eq!(reread(&out), want, "{out}");
    }

    #[test]
    fn ad_tag_fields_name_the_field_and_the_rule() {
        assert_eq!(parse_ad_tag(None, "ad_tag"), Ok(None));
        assert_eq!(parse_ad_tag(Some(Value::Null), "ad_tag"), Ok(None));
        assert_eq!(parse_ad_tag(Some(Value::String(String::new())), "ad_tag"), Ok(None));
        assert_eq!(
            parse_ad_tag(Some(Value::String("AB".repeat(16))), "ad_tag"),
            Ok(Some(AdTag::new([0xab; 16])))
        );
        for (value, message) in [
            (
                serde_json::json!("abc"),
                "field `ad_tag`: it has 3 characters; @MTProxybot's proxy tag is 32 hex characters",
            ),
            (
                serde_json::json!(5),
                "field `ad_tag`: expected a string, found a number; @MTProxybot's proxy tag is 32 hex characters",
            ),
            (
                serde_json::json!("ee367a189aee18fa31c190054efd4a8e95"),
                "field `ad_tag`: this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with; @MTProxybot's proxy tag is 32 hex characters",
            ),
        ] {
            assert_eq!(parse_ad_tag(Some(value), "ad_tag"), Err(ApiError::bad(message)));
        }
    }

    #[test]
    fn dotted_and_inline_limit_tables_are_rewritten() {
        let (a, b) = (user(1), user(2));
        let want =
            state(&[("alice", &a)], &[("alice", SecretLimits { disabled: true, ..Default::default() })]);
        let dotted =
            config(&[("alice", &a), ("bob", &b)], "[secret-limits]\nbob.quota = 5\nalice.disabled = true\n");
        let out = rewrite(&dotted, &want.users, &want.limits, &want.tags).unwrap();
        assert_eq!(reread(&out), want, "{out}");
        let inline = config(&[("alice", &a), ("bob", &b)], "").replace(
            "[secrets]",
            "secret-limits = { bob = { quota = 5 }, alice = { quota = 7 } }\n[secrets]",
        );
        let out = rewrite(&inline, &want.users, &want.limits, &want.tags).unwrap();
        assert_eq!(reread(&out), want, "{out}");
    }

    #[test]
    fn limit_fields_use_the_config_formats_and_name_the_field() {
        let fields = |v: Value| -> Result<SecretLimits, ApiError> {
            let get = |k: &str| v.get(k).cloned();
            LimitFields {
                max_connections: get("max_connections"),
                quota: get("quota"),
                quota_reset: get("quota_reset"),
                expires: get("expires"),
                disabled: get("disabled"),
                max_ips: get("max_ips"),
                rate_limit: get("rate_limit"),
                cluster_wide: get("cluster_wide"),
            }
            .parse("")
        };
        let ok = fields(serde_json::json!({
            "quota": "10GB", "quota_reset": "Monthly", "expires": "2026-12-31",
            "disabled": true, "max_connections": 2, "max_ips": 3, "rate_limit": "20mbit",
            "cluster_wide": ["max-connections", "max-ips"]
        }))
        .unwrap();
        assert_eq!(
            ok,
            SecretLimits {
                max_connections: 2,
                quota: Some(10 << 30),
                quota_reset: QuotaReset::Monthly,
                expires: Some(1_798_675_200),
                disabled: true,
                max_ips: 3,
                rate_limit: Some(2_500_000),
                cluster_wide_connections: true,
                cluster_wide_ips: true,
            }
        );
        let both = fields(serde_json::json!({"cluster_wide": true})).unwrap();
        assert!(both.cluster_wide_connections && both.cluster_wide_ips);
        let wrong = fields(serde_json::json!({"cluster_wide": ["quota"]})).unwrap_err().message;
        assert!(wrong.contains("field `cluster_wide`") && wrong.contains("max-connections"), "{wrong}");
        assert_eq!(fields(serde_json::json!({"quota": 1024})).unwrap().quota, Some(1024));
        assert_eq!(fields(serde_json::json!({"rate_limit": 4096})).unwrap().rate_limit, Some(4096));
        assert_eq!(fields(serde_json::json!({"rate_limit": "1mib"})).unwrap().rate_limit, Some(1 << 20));
        assert!(
            fields(serde_json::json!({"quota": "", "disabled": false, "expires": null}))
                .unwrap()
                .is_unlimited()
        );
        for (body, field) in [
            (serde_json::json!({"quota": "lots"}), "field `quota`"),
            (serde_json::json!({"quota": -1}), "field `quota`"),
            (serde_json::json!({"quota": 1.5}), "field `quota`"),
            (serde_json::json!({"quota": 1e300}), "field `quota`"),
            (serde_json::json!({"quota": [1]}), "field `quota`"),
            (serde_json::json!({"quota_reset": "weekly"}), "field `quota_reset`"),
            (serde_json::json!({"expires": "tomorrow"}), "field `expires`"),
            (serde_json::json!({"expires": 5}), "field `expires`"),
            (serde_json::json!({"expires": "9999-12-31T23:59:59-01:00"}), "field `expires`"),
            (serde_json::json!({"disabled": "yes"}), "field `disabled`"),
            (serde_json::json!({"max_connections": -2}), "field `max_connections`"),
            (serde_json::json!({"max_connections": {"a": 1}}), "field `max_connections`"),
            (serde_json::json!({"max_ips": -1}), "field `max_ips`"),
            (serde_json::json!({"max_ips": "two"}), "field `max_ips`"),
            (serde_json::json!({"rate_limit": "fast"}), "field `rate_limit`"),
            (serde_json::json!({"rate_limit": -5}), "field `rate_limit`"),
        ] {
            let e = fields(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
        }
    }
}
