//! The management API: list, add, update, replace and remove users and reset quotas at run
//! time (the request shapes of MHSanaei/mtg-multi). Changes apply at once through the same path
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
use crate::config::{Config, ConfigError, QuotaReset, SecretLimits};
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
}

impl UserView {
    fn new(secret: &Secret, limits: &SecretLimits) -> Self {
        Self {
            secret: secret.to_hex(),
            base64: secret.to_base64url(),
            host: secret.host().to_owned(),
            max_connections: Some(limits.max_connections).filter(|&n| n > 0),
            quota: limits.quota,
            quota_reset: (limits.quota_reset == QuotaReset::Monthly).then_some("monthly"),
            expires: limits.expires.map(|at| crate::users::stats_json::rfc3339_ms(at.saturating_mul(1000))),
            disabled: limits.disabled.then_some(true),
        }
    }
}

/// The limit fields both `POST /secrets` and `PUT /secrets` entries take: the values of the
/// `[secret-limits.NAME]` keys, in the same formats (`quota`: bytes or a size string;
/// `quota_reset`: `none`/`monthly`; `expires`: RFC 3339 or `YYYY-MM-DD`; `disabled`: bool;
/// `max_connections`: a count). Absent, `null`, `""`, `0` and `false` mean "no limit".
#[derive(Debug, Default)]
struct LimitFields {
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
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

/// The body of `POST /secrets`: a name with a secret, or a host to generate one, and limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    secret: Option<String>,
    host: Option<String>,
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
}

/// One user in the body of `PUT /secrets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    secret: String,
    max_connections: Option<Value>,
    quota: Option<Value>,
    quota_reset: Option<Value>,
    expires: Option<Value>,
    disabled: Option<Value>,
}

/// The body of `PUT /secrets`: the whole new set of users.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceAll {
    secrets: BTreeMap<String, Entry>,
}

/// The users as the API changes them: (name, secret) sorted by name, and the limits of the
/// users that have any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    users: Vec<(String, Secret)>,
    limits: BTreeMap<String, SecretLimits>,
}

impl State {
    fn current(control: &Control) -> Self {
        let directory = control.data.users();
        let users = directory.names().iter().cloned().zip(directory.secrets().iter().cloned()).collect();
        let limits = directory
            .names()
            .iter()
            .zip(directory.all_limits())
            .filter(|(_, l)| !l.is_unlimited())
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        Self { users, limits }
    }

    fn set_limits(&mut self, name: &str, limits: SecretLimits) {
        if limits.is_unlimited() {
            self.limits.remove(name);
        } else {
            self.limits.insert(name.to_owned(), limits);
        }
    }
}

/// `GET /secrets`: every user by name.
pub fn list(control: &Control) -> BTreeMap<String, UserView> {
    let users = control.data.users();
    users
        .names()
        .iter()
        .zip(users.secrets().iter().zip(users.all_limits()))
        .map(|(n, (s, l))| (n.clone(), UserView::new(s, l)))
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
/// cases the user's limits become exactly the limit fields given (absent = no limit), as in
/// mtg-multi.
pub async fn add(control: &Control, body: &[u8]) -> Result<Added, ApiError> {
    let request: AddUser = parse_json(body)?;
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
    apply(control, &state)?;
    Ok(Added { view: UserView::new(&secret, &limits), name, created })
}

/// `PUT /secrets` with `{"secrets": {NAME: {secret, ...limits}}}`: replaces every user and all
/// limits in one step. Everything is validated first; any error changes nothing.
pub async fn replace(control: &Control, body: &[u8]) -> Result<BTreeMap<String, UserView>, ApiError> {
    let request: ReplaceAll = parse_json(body)?;
    if request.secrets.is_empty() {
        return Err(ApiError::bad("field `secrets`: at least one user is needed"));
    }
    let mut state = State { users: Vec::new(), limits: BTreeMap::new() };
    for (name, entry) in request.secrets {
        if !valid_name(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(ApiError::bad(format!("field `secrets`: user name {shown:?}: {NAME_RULE}")));
        }
        let secret = parse_secret(control, &entry.secret, &format!("secrets.{name}.secret"))?;
        let limits = LimitFields {
            max_connections: entry.max_connections,
            quota: entry.quota,
            quota_reset: entry.quota_reset,
            expires: entry.expires,
            disabled: entry.disabled,
        }
        .parse(&format!("secrets.{name}."))?;
        state.set_limits(&name, limits);
        state.users.push((name, secret));
    }
    // BTreeMap order: already sorted by name.
    let _serialised = control.manage_lock().await;
    apply(control, &state)?;
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
    apply(control, &state)
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
    users.all_stats()[index].restore_quota(0, period);
    Ok(())
}

/// Writes the new state to the file (with `api-persist`), then swaps it in. The caller holds
/// the management lock. A write failure changes nothing.
fn apply(control: &Control, state: &State) -> Result<(), ApiError> {
    if control.config().api_persist
        && let Some(path) = &control.config_path
    {
        persist(path, &state.users, &state.limits)
            .map_err(|e| ApiError::new(500, format!("cannot write {}: {e}", path.display())))?;
    }
    let summary = control.data.reload_users(&state.users, &state.limits);
    tracing::info!(
        added = ?summary.added, removed = ?summary.removed, rekeyed = ?summary.rekeyed,
        relimited = ?summary.relimited, "users changed through the API"
    );
    Ok(())
}

/// Tables keyed by user name: an entry for a user that is gone is removed with the user, so
/// the file keeps loading. (`[secret-limits]` entries are also rewritten from the limits.)
const PER_USER_TABLES: &[&str] = &["secret-limits", "secret-ad-tags"];

/// Rewrites the users of the config file, keeping everything else (comments, order, other
/// settings): `[secrets]` becomes `users` (the single top-level `secret` goes), every
/// `[secret-limits.NAME]` becomes `limits` (tables of users whose limits did not change are
/// left as written), entries of per-user tables naming removed users go. The new text is
/// checked to load back to exactly these users and limits before it replaces the file
/// atomically ([`crate::atomic_file`], mode and owner kept).
pub fn persist(
    path: &Path,
    users: &[(String, Secret)],
    limits: &BTreeMap<String, SecretLimits>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let new_text = rewrite(&text, users, limits)?;
    crate::atomic_file::write(path, new_text.as_bytes()).map_err(|e| e.to_string())
}

/// The config text with these users and limits (see [`persist`]).
fn rewrite(
    text: &str,
    users: &[(String, Secret)],
    limits: &BTreeMap<String, SecretLimits>,
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
    if want_users != got_users || want_limits != got_limits {
        return Err("the rewritten file would not read back the same users; nothing written".into());
    }
    Ok(new_text)
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
        }
    }

    fn reread(text: &str) -> State {
        let c = Config::from_toml_str(text).unwrap().config;
        State {
            users: c.users.into_iter().collect(),
            limits: c.secret_limits.into_iter().filter(|(_, l)| !l.is_unlimited()).collect(),
        }
    }

    #[test]
    fn removing_a_user_removes_its_tables() {
        let (a, b) = (user(1), user(2));
        let text = config(
            &[("alice", &a), ("bob", &b)],
            "[secret-limits.bob]\nquota = \"1gib\"\n[secret-limits.alice] # hers\nquota = \"2kib\"\n\
             [secret-ad-tags]\nbob = \"00\"\n",
        );
        let alice = SecretLimits { quota: Some(2048), ..SecretLimits::default() };
        let want = state(&[("alice", &a)], &[("alice", alice)]);
        let out = rewrite(&text, &want.users, &want.limits).unwrap();
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
        };
        let some = SecretLimits { quota: Some(5), ..SecretLimits::default() };
        let want = state(&[("alice", &a), ("bob", &b), ("carol", &c)], &[("bob", full), ("carol", some)]);
        let out = rewrite(&text, &want.users, &want.limits).unwrap();
        assert_eq!(reread(&out), want, "{out}");
        // Limits dropped again: the tables go, the single secret form becomes [secrets].
        let want = state(&[("bob", &b)], &[]);
        let out = rewrite(&out, &want.users, &want.limits).unwrap();
        assert!(!out.contains("secret-limits"), "{out}");
        assert_eq!(reread(&out), want);
        let single = format!("bind-to = \"127.0.0.1:1\"\nsecret = \"{}\"\n", a.to_hex());
        let want = state(&[("default", &a), ("x", &b)], &[]);
        let out = rewrite(&single, &want.users, &want.limits).unwrap();
        assert_eq!(reread(&out), want, "{out}");
    }

    #[test]
    fn dotted_and_inline_limit_tables_are_rewritten() {
        let (a, b) = (user(1), user(2));
        let want =
            state(&[("alice", &a)], &[("alice", SecretLimits { disabled: true, ..Default::default() })]);
        let dotted =
            config(&[("alice", &a), ("bob", &b)], "[secret-limits]\nbob.quota = 5\nalice.disabled = true\n");
        let out = rewrite(&dotted, &want.users, &want.limits).unwrap();
        assert_eq!(reread(&out), want, "{out}");
        let inline = config(&[("alice", &a), ("bob", &b)], "").replace(
            "[secrets]",
            "secret-limits = { bob = { quota = 5 }, alice = { quota = 7 } }\n[secrets]",
        );
        let out = rewrite(&inline, &want.users, &want.limits).unwrap();
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
            }
            .parse("")
        };
        let ok = fields(serde_json::json!({
            "quota": "10GB", "quota_reset": "Monthly", "expires": "2026-12-31",
            "disabled": true, "max_connections": 2
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
            }
        );
        assert_eq!(fields(serde_json::json!({"quota": 1024})).unwrap().quota, Some(1024));
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
        ] {
            let e = fields(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
        }
    }
}
