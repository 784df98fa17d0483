//! Config errors and warnings: one line each, naming the key, the value as written and what is
//! allowed. Secret values never appear in them (only secret names do).

use std::fmt;
use std::path::PathBuf;

use mtg_proto::SecretError;

/// The advice given when a top-level key ended up inside a table.
pub(super) const TOP_LEVEL_FIRST: &str = "top-level keys must come before every [table]";

/// Why a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error text.
        error: String,
    },
    /// The file is not valid TOML.
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A value has the wrong type or syntax.
    Invalid {
        /// Dotted key path.
        key: String,
        /// The value as written (strings quoted), shortened if long.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// A secret is unusable; its value is never shown.
    Secret {
        /// Dotted key path (`secret` or `secrets.NAME`).
        key: String,
        /// What is wrong with it.
        problem: SecretProblem,
        /// A likely cause, e.g. a top-level key written after `[secrets]`.
        hint: Option<String>,
    },
    /// An ad tag is unusable; its value is never shown (it may be a pasted secret).
    AdTag {
        /// Dotted key path (`ad-tag` or `secret-ad-tags.NAME`).
        key: String,
        /// What is wrong with it.
        problem: super::AdTagProblem,
    },
    /// A required key is missing.
    Missing {
        /// Dotted key path.
        key: String,
        /// Why it is required, or a likely cause.
        hint: Option<String>,
    },
}

/// What is wrong with a configured secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretProblem {
    /// The text does not decode to a usable secret.
    Parse(SecretError),
    /// The value is not a string; the TOML type it has instead.
    NotAString(&'static str),
    /// A `dd` secret while `[secured] enabled` is not true.
    SecuredDisabled,
}

impl fmt::Display for SecretProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => e.fmt(f),
            Self::NotAString(found) => {
                write!(f, "expected a secret string (hex or base64url), found {found}")
            }
            Self::SecuredDisabled => f.write_str("dd (secured) secrets need [secured] enabled = true"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read config {}: {error}", path.display()),
            Self::Syntax { line, column, message } => {
                write!(f, "config is not valid TOML: line {line}, column {column}: {message}")
            }
            Self::Invalid { key, value, expected } => {
                write!(f, "invalid value for {key}: {value}: expected {expected}")
            }
            Self::Secret { key, problem, hint } => {
                write!(f, "invalid secret {key}: {problem}")?;
                write_hint(f, hint.as_deref())
            }
            Self::AdTag { key, problem } => {
                write!(f, "invalid ad tag {key}: {problem}; {}", super::ad_tag::AD_TAG_RULE)
            }
            Self::Missing { key, hint } => {
                write!(f, "{key} is required")?;
                write_hint(f, hint.as_deref())
            }
        }
    }
}

fn write_hint(f: &mut fmt::Formatter<'_>, hint: Option<&str>) -> fmt::Result {
    match hint {
        Some(hint) => write!(f, " ({hint})"),
        None => Ok(()),
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A TOML parse error as one line with its position. The offending source line is not
    /// quoted, as toml's own `Display` does: it may hold a secret.
    pub(super) fn syntax(text: &str, error: &toml::de::Error) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, column)
            }
            None => (1, 1),
        };
        let message = error.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
        let message = message.join(": ");
        Self::Syntax { line, column, message }
    }
}

impl ConfigError {
    /// A missing key whose name was mistyped gets the typo pointed out: the warning that would
    /// have said so is never logged when loading fails.
    pub(super) fn with_typo_hint(self, warnings: &[ConfigWarning]) -> Self {
        let Self::Missing { key, hint } = self else {
            return self;
        };
        let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", &key));
        let typo = warnings.iter().find_map(|w| match w {
            ConfigWarning::UnknownKey { key: unknown, suggestion: Some(Suggestion::Similar(s)) }
                if *s == leaf && unknown.rsplit_once('.').map_or("", |(p, _)| p) == parent =>
            {
                Some(format!("{unknown} is unknown: did you mean `{leaf}`?"))
            }
            _ => None,
        });
        let hint = match (hint, typo) {
            (Some(hint), Some(typo)) => Some(format!("{hint}; {typo}")),
            (hint, typo) => hint.or(typo),
        };
        Self::Missing { key, hint }
    }
}

/// Something in the config that works but deserves attention; logged at start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// A key the proxy does not know (ignored).
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// What the key was probably meant to be.
        suggestion: Option<Suggestion>,
    },
    /// A deprecated key (still read as mtg reads it).
    Deprecated {
        /// Dotted key path.
        key: &'static str,
        /// What to use instead, or that it is ignored.
        advice: &'static str,
    },
    /// `secret` is set as well as a non-empty `[secrets]`, which wins.
    SecretIgnored,
    /// Two users have the same secret (same key and hostname); only the first can match.
    SameSecret {
        /// The user that matches.
        kept: String,
        /// The user that never matches.
        shadowed: String,
    },
    /// An environment variable the overlay ignores, or one that replaced part of the file.
    Environment {
        /// The variable.
        name: &'static str,
        /// What was done with it.
        note: &'static str,
    },
}

/// The likely intent behind an unknown key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suggestion {
    /// A known key at the same level, one edit away (or differing only in case or `_`/`-`).
    Similar(&'static str),
    /// The name of a top-level key, written inside a table.
    TopLevel(&'static str),
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey { key, suggestion } => {
                write!(f, "unknown config key {key} (ignored)")?;
                match suggestion {
                    Some(Suggestion::Similar(s)) => write!(f, "; did you mean `{s}`?"),
                    Some(Suggestion::TopLevel(s)) => {
                        write!(f, "; `{s}` is a top-level key: {TOP_LEVEL_FIRST}")
                    }
                    None => Ok(()),
                }
            }
            Self::Deprecated { key, advice } => write!(f, "config key {key} is deprecated: {advice}"),
            Self::SecretIgnored => f.write_str("secret is ignored because [secrets] is not empty"),
            Self::SameSecret { kept, shadowed } => {
                write!(f, "secrets.{shadowed} has the same secret as secrets.{kept}; only {kept} can match")
            }
            Self::Environment { name, note } => write!(f, "environment variable {name} {note}"),
        }
    }
}

/// Longest rendering of a value in an error before it is cut.
const SHOWN_MAX: usize = 80;

/// A value as the user wrote it, on one line: strings quoted and escaped, arrays and tables
/// inline, cut after [`SHOWN_MAX`] characters.
pub(super) fn shown(value: &toml::Value) -> String {
    let mut out = String::new();
    render(value, &mut out);
    if out.chars().count() > SHOWN_MAX {
        out = out.chars().take(SHOWN_MAX - 1).collect();
        out.push('…');
    }
    out
}

/// A string as written (quoted, escaped, cut if long).
pub(super) fn shown_str(text: &str) -> String {
    shown(&toml::Value::String(text.to_owned()))
}

fn render(value: &toml::Value, out: &mut String) {
    match value {
        toml::Value::String(s) => out.push_str(&format!("{s:?}")),
        toml::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, out);
            }
            out.push(']');
        }
        toml::Value::Table(t) => {
            out.push('{');
            for (i, (k, v)) in t.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                out.push_str(k);
                out.push_str(" = ");
                render(v, out);
            }
            out.push_str(if t.is_empty() { "}" } else { " }" });
        }
        toml::Value::Datetime(dt) => out.push_str(&dt.to_string()),
        other => out.push_str(&other.to_string()),
    }
}

/// The TOML type of a value with an article, for "found ..." messages.
pub(super) fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_on_one_line() {
        let v: toml::Table =
            "a = [1, \"x\\ny\", { b = true }]\nt = {}\nd = 2026-01-01\nf = 1.0".parse().expect("valid TOML");
        assert_eq!(shown(&v["d"]), "2026-01-01");
        assert_eq!(shown(&v["f"]), "1.0");
        assert_eq!(shown(&v["a"]), "[1, \"x\\ny\", { b = true }]");
        assert_eq!(shown(&v["t"]), "{}");
        let long = toml::Value::String("x".repeat(200));
        assert_eq!(shown(&long).chars().count(), SHOWN_MAX);
        assert!(shown(&long).ends_with('…'));
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let text = "a = 1\nb = = 2\n";
        let e = text.parse::<toml::Table>().expect_err("invalid TOML");
        assert_eq!(
            ConfigError::syntax(text, &e).to_string(),
            "config is not valid TOML: line 2, column 5: invalid string: expected `\"`, `'`"
        );
    }
}
