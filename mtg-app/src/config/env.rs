//! Environment overlays, as MHSanaei/mtg-multi and the official `telegrammessenger/proxy`
//! image read them: `SECRET` (a full secret, or a bare 16-byte hex key with `SECRET_HOST`),
//! `TAG` (the ad tag; empty clears the file's), `MTG_BIND_TO` (comma-separated `IP:port`s).
//! An `MTG_`-prefixed variant (`MTG_SECRET`, `MTG_SECRET_HOST`, `MTG_TAG`) wins over the bare
//! name, and the environment wins over the file. `WORKERS` and `SECRET_COUNT` of the official
//! image are ignored with a warning.
//!
//! The overlay rewrites the raw table before it is read, so every other rule (secured `dd`
//! secrets, an ad tag that is a user's key, listen addresses) applies as to the file; a
//! value the overlay cannot use is an error naming the variable (never showing a secret).

use mtg_proto::{Secret, SecretKind};

use super::error::{ConfigError, ConfigWarning, SecretProblem, shown_str};
use super::{AdTag, values};

/// Bytes of a secret's key (a bare `SECRET` is twice as many hex digits).
const KEY_LEN: usize = 16;

/// The variables read, in the order they are documented.
pub const VARIABLES: &[&str] =
    &["MTG_SECRET", "SECRET", "MTG_SECRET_HOST", "SECRET_HOST", "MTG_TAG", "TAG", "MTG_BIND_TO"];

/// Reads one environment variable: its value, `None` when unset.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

/// The process environment as a [`Lookup`].
pub(super) fn process_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// `(name, value)` of `MTG_{name}` if set, else of `name`.
fn prefixed(env: Lookup<'_>, name: &'static str) -> Result<Option<(String, String)>, ConfigError> {
    let long = format!("MTG_{name}");
    for candidate in [long, name.to_owned()] {
        if let Some(value) = env(&candidate) {
            let Some(text) = value.to_str() else {
                return Err(ConfigError::Invalid {
                    key: variable(&candidate),
                    value: "(not UTF-8)".into(),
                    expected: "UTF-8 text".into(),
                });
            };
            return Ok(Some((candidate, text.trim().to_owned())));
        }
    }
    Ok(None)
}

/// How an environment variable is named in errors.
fn variable(name: &str) -> String {
    format!("environment variable {name}")
}

/// Applies the overlay to the raw config table; warnings for ignored variables and for file
/// keys the environment replaced.
pub(super) fn overlay(
    root: &mut toml::Table,
    env: Lookup<'_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    for (name, note) in [
        ("WORKERS", "ignored (one process uses every CPU core)"),
        ("SECRET_COUNT", "ignored (name users in [secrets] or add them through the API)"),
    ] {
        if env(name).is_some() {
            warnings.push(ConfigWarning::Environment { name, note });
        }
    }
    if let Some((name, text)) = prefixed(env, "SECRET")? {
        let secured = root
            .get("secured")
            .and_then(|s| s.get("enabled"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        let secret = env_secret(env, &name, &text, secured)?;
        let replaced = ["secrets", "secret-limits", "secret-ad-tags"]
            .iter()
            .any(|k| root.get(*k).and_then(toml::Value::as_table).is_some_and(|t| !t.is_empty()));
        if replaced {
            warnings.push(ConfigWarning::Environment {
                name: if name.starts_with("MTG_") { "MTG_SECRET" } else { "SECRET" },
                note: "replaces the file's users ([secrets], [secret-limits.NAME], [secret-ad-tags]) with \
                       one user called default",
            });
        }
        for key in ["secrets", "secret-limits", "secret-ad-tags"] {
            root.remove(key);
        }
        root.insert("secret".into(), toml::Value::String(secret.to_hex()));
    }
    if let Some((name, text)) = prefixed(env, "TAG")? {
        if text.is_empty() {
            root.remove("ad-tag");
        } else {
            let tag = AdTag::parse(&text)
                .map_err(|problem| ConfigError::AdTag { key: variable(&name), problem })?;
            root.insert("ad-tag".into(), toml::Value::String(tag.to_hex()));
        }
    }
    if let Some(value) = env("MTG_BIND_TO") {
        let key = variable("MTG_BIND_TO");
        let Some(text) = value.to_str() else {
            return Err(ConfigError::Invalid {
                key,
                value: "(not UTF-8)".into(),
                expected: "UTF-8 text".into(),
            });
        };
        let mut addrs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let addr = values::socket_addr(part).map_err(|expected| ConfigError::Invalid {
                key: key.clone(),
                value: shown_str(part),
                expected: expected.to_owned(),
            })?;
            if addrs.contains(&addr) {
                return Err(ConfigError::Invalid {
                    key,
                    value: shown_str(part),
                    expected: "each address once (this one is listed twice)".into(),
                });
            }
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(ConfigError::Invalid {
                key,
                value: shown_str(text),
                expected: "one or more IP:port addresses separated by commas".into(),
            });
        }
        root.insert(
            "bind-to".into(),
            toml::Value::Array(addrs.iter().map(|a| toml::Value::String(a.to_string())).collect()),
        );
    }
    Ok(())
}

/// The secret `SECRET` (named `name`) stands for: a full secret, or a bare 16-byte hex key made
/// a FakeTLS secret for `SECRET_HOST`.
fn env_secret(env: Lookup<'_>, name: &str, text: &str, secured: bool) -> Result<Secret, ConfigError> {
    let error = |key: &str, problem| ConfigError::Secret { key: variable(key), problem, hint: None };
    if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            // Two ASCII hex digits always parse.
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        let Some((host_name, host)) = prefixed(env, "SECRET_HOST")?.filter(|(_, h)| !h.is_empty()) else {
            return Err(ConfigError::Missing {
                key: variable("SECRET_HOST"),
                hint: Some(format!(
                    "{name} is a bare 16-byte key (the official image's format); this proxy serves FakeTLS \
                     secrets, so set SECRET_HOST to the fronting hostname, or give a full ee secret \
                     (mtg-multi generate-secret HOSTNAME)"
                )),
            });
        };
        return Secret::fake_tls(key, &host).map_err(|e| error(&host_name, SecretProblem::Parse(e)));
    }
    let secret = Secret::parse(text).map_err(|e| error(name, SecretProblem::Parse(e)))?;
    if secret.kind() == SecretKind::Secured && !secured {
        return Err(error(name, SecretProblem::SecuredDisabled));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    use super::*;

    const FILE: &str = "bind-to = \"127.0.0.1:3128\"\nad-tag = \"0123456789abcdef0123456789abcdef\"\n\
                        [secrets]\nalice = \"ee000102030405060708090a0b0c0d0e0f6578616d706c652e636f6d\"\n\
                        [secret-limits.alice]\nquota = \"1gib\"\n";

    fn load(vars: &[(&str, &str)]) -> Result<super::super::Loaded, ConfigError> {
        let vars: BTreeMap<String, OsString> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        super::super::Config::from_toml_str_with_env(FILE, &|name: &str| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_change_nothing() {
        assert_eq!(load(&[]).unwrap(), super::super::Config::from_toml_str(FILE).unwrap());
    }

    #[test]
    fn secret_replaces_the_users_and_the_prefixed_name_wins() {
        let full = Secret::fake_tls([7; 16], "a.example").unwrap();
        let other = Secret::fake_tls([8; 16], "b.example").unwrap();
        let loaded = load(&[("SECRET", &other.to_hex()), ("MTG_SECRET", &full.to_base64url())]).unwrap();
        let users: Vec<(&String, &Secret)> = loaded.config.users.iter().collect();
        assert_eq!(users, [(&"default".to_owned(), &full)]);
        assert!(loaded.config.secret_limits.is_empty());
        assert!(
            loaded.warnings.iter().any(|w| w.to_string().contains("MTG_SECRET")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_bare_key_needs_secret_host() {
        let key = "000102030405060708090a0b0c0d0e0f";
        let e = load(&[("SECRET", key)]).unwrap_err().to_string();
        assert!(e.contains("SECRET_HOST") && !e.contains(key), "{e}");
        let loaded = load(&[("SECRET", key), ("SECRET_HOST", "c.example")]).unwrap();
        let expected = Secret::fake_tls(std::array::from_fn(|i| i as u8), "c.example").unwrap();
        assert_eq!(loaded.config.users["default"], expected);
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let e = load(&[("MTG_SECRET", "zz-not-a-secret")]).unwrap_err().to_string();
        assert!(e.contains("environment variable MTG_SECRET") && !e.contains("zz-not"), "{e}");
        let e = load(&[("TAG", "123")]).unwrap_err().to_string();
        assert!(e.contains("environment variable TAG"), "{e}");
        let e = load(&[("MTG_BIND_TO", "example.com:443")]).unwrap_err().to_string();
        assert!(e.contains("environment variable MTG_BIND_TO") && e.contains("example.com:443"), "{e}");
        let e = load(&[("MTG_BIND_TO", " , ")]).unwrap_err().to_string();
        assert!(e.contains("MTG_BIND_TO"), "{e}");
        let e = load(&[("MTG_BIND_TO", "127.0.0.1:1,127.0.0.1:1")]).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn tag_and_bind_to_win_over_the_file() {
        let loaded = load(&[("TAG", ""), ("MTG_BIND_TO", "127.0.0.1:443, [::1]:443")]).unwrap();
        assert_eq!(loaded.config.ad_tag, None);
        assert_eq!(loaded.config.bind_to, ["127.0.0.1:443".parse().unwrap(), "[::1]:443".parse().unwrap()]);
        let tag = "fedcba9876543210fedcba9876543210";
        let loaded = load(&[("MTG_TAG", tag), ("TAG", "")]).unwrap();
        assert_eq!(loaded.config.ad_tag.map(|t| t.to_hex()), Some(tag.to_owned()));
    }

    #[test]
    fn workers_and_secret_count_are_ignored_with_a_warning() {
        let loaded = load(&[("WORKERS", "4"), ("SECRET_COUNT", "2")]).unwrap();
        let text: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|w| w.contains("WORKERS")) && text.iter().any(|w| w.contains("SECRET_COUNT"))
        );
    }
}
