//! The management API: list, add and remove users and reset quotas at run time. Changes apply
//! at once (through the same path as a reload) and are written back to the config file only
//! with `api-persist = true` (an atomic rewrite of `[secrets]` that keeps the rest of the file).

use std::collections::BTreeMap;
use std::path::Path;

use mtg_proto::{Secret, SecretKind};
use serde::{Deserialize, Serialize};

use super::{Shared, unix_ms};

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
}

/// One user as `GET /secrets` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The secret in hex.
    pub secret: String,
    /// The same secret in base64url.
    pub base64: String,
    /// The fronting hostname (empty for `dd`).
    pub host: String,
}

/// The body of `POST /secrets`: a name with a secret, or a name with a host to generate one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    secret: Option<String>,
    host: Option<String>,
}

/// `GET /secrets`.
pub fn list(shared: &Shared) -> BTreeMap<String, UserView> {
    let users = shared.users();
    users
        .names
        .iter()
        .zip(&users.secrets)
        .map(|(n, s)| {
            (n.clone(), UserView { secret: s.to_hex(), base64: s.to_base64url(), host: s.host().to_owned() })
        })
        .collect()
}

fn current(shared: &Shared) -> (Vec<(String, Secret)>, BTreeMap<String, crate::config::SecretLimits>) {
    let users = shared.users();
    let pairs = users.names.iter().cloned().zip(users.secrets.iter().cloned()).collect();
    let limits = users
        .names
        .iter()
        .zip(&users.limits)
        .filter(|(_, l)| **l != crate::config::SecretLimits::default())
        .map(|(n, l)| (n.clone(), l.clone()))
        .collect();
    (pairs, limits)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `POST /secrets` with a JSON body; returns the added user.
pub fn add(shared: &Shared, body: &[u8]) -> Result<(String, UserView), ApiError> {
    let request: AddUser =
        serde_json::from_slice(body).map_err(|e| ApiError::new(400, format!("bad JSON body: {e}")))?;
    if !valid_name(&request.name) {
        return Err(ApiError::new(400, "field `name`: 1-64 letters, digits, '-', '_' or '.'"));
    }
    let secret = match (&request.secret, &request.host) {
        (Some(text), None) => {
            Secret::parse(text).map_err(|e| ApiError::new(400, format!("field `secret`: {e}")))?
        }
        (None, Some(host)) => crate::secrets::generate(host, &mut rand::rng())
            .map_err(|e| ApiError::new(400, format!("field `host`: {e}")))?,
        _ => return Err(ApiError::new(400, "give exactly one of the fields `secret` or `host`")),
    };
    if secret.kind() == SecretKind::Secured && !shared.settings.handshake.secured {
        return Err(ApiError::new(400, "field `secret`: dd secrets need [secured] enabled = true"));
    }
    let (mut users, limits) = current(shared);
    if users.iter().any(|(n, _)| *n == request.name) {
        return Err(ApiError::new(409, format!("user {} already exists", request.name)));
    }
    users.push((request.name.clone(), secret.clone()));
    users.sort_by(|a, b| a.0.cmp(&b.0));
    apply(shared, &users, &limits)?;
    let view =
        UserView { secret: secret.to_hex(), base64: secret.to_base64url(), host: secret.host().to_owned() };
    Ok((request.name, view))
}

/// `DELETE /secrets/{name}`.
pub fn remove(shared: &Shared, name: &str) -> Result<(), ApiError> {
    let (mut users, mut limits) = current(shared);
    let before = users.len();
    users.retain(|(n, _)| n != name);
    if users.len() == before {
        return Err(ApiError::new(404, format!("no user {name}")));
    }
    if users.is_empty() {
        return Err(ApiError::new(409, "cannot remove the last user"));
    }
    limits.remove(name);
    apply(shared, &users, &limits)
}

/// `POST /secrets/{name}/reset-quota`.
pub fn reset_quota(shared: &Shared, name: &str) -> Result<(), ApiError> {
    let users = shared.users();
    let index = users
        .names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| ApiError::new(404, format!("no user {name}")))?;
    let period = crate::users::limits::quota_period(users.limits[index].quota_reset, unix_ms());
    users.stats[index].restore_quota(0, period);
    Ok(())
}

fn apply(
    shared: &Shared,
    users: &[(String, Secret)],
    limits: &BTreeMap<String, crate::config::SecretLimits>,
) -> Result<(), ApiError> {
    if shared.settings.api_persist
        && let Some(path) = &shared.settings.config_path
    {
        persist(path, users)
            .map_err(|e| ApiError::new(500, format!("cannot write {}: {e}", path.display())))?;
    }
    shared.reload_users(users, limits);
    Ok(())
}

/// Rewrites `[secrets]` of the config file (keeping everything else) atomically.
pub fn persist(path: &Path, users: &[(String, Secret)]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(std::io::Error::other)?;
    let mut table = toml_edit::Table::new();
    for (name, secret) in users {
        table.insert(name, toml_edit::value(secret.to_hex()));
    }
    doc.remove("secret");
    doc.insert("secrets", toml_edit::Item::Table(table));
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(doc.to_string().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}
