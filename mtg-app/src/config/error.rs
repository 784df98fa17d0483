//! Config errors and warnings: one line each, naming the key, the value and what is allowed.
//! Secret values never appear in them.

use std::fmt;
use std::path::PathBuf;

use mtg_proto::SecretError;

/// Why a config cannot be used.
#[derive(Debug, Clone, PartialEq)]
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
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value has the wrong type or syntax.
    Invalid {
        /// Dotted key path.
        key: String,
        /// The value as written.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// A secret does not parse (its value is not shown).
    Secret {
        /// Dotted key path.
        key: String,
        /// Why.
        reason: SecretError,
        /// A likely cause, e.g. a top-level key written after `[secrets]`.
        hint: Option<String>,
    },
    /// A required key is missing.
    Missing {
        /// Dotted key path.
        key: String,
        /// A likely cause.
        hint: Option<String>,
    },
    /// Keys that contradict each other.
    Conflict {
        /// The explanation.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read config {}: {error}", path.display()),
            Self::Syntax { message } => write!(f, "config is not valid TOML: {message}"),
            Self::Invalid { key, value, expected } => {
                write!(f, "invalid value for {key}: {value}: expected {expected}")
            }
            Self::Secret { key, reason, hint } => {
                write!(f, "invalid secret {key}: {reason}")?;
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            Self::Missing { key, hint } => {
                write!(f, "{key} is required")?;
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            Self::Conflict { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Something in the config that works but deserves attention.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// A key the proxy does not know (ignored).
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// A known key one edit away.
        suggestion: Option<&'static str>,
    },
    /// A deprecated key.
    Deprecated {
        /// Dotted key path.
        key: String,
        /// What to use instead, or that it is ignored.
        advice: &'static str,
    },
    /// Two users share a key (the first name wins the match).
    DuplicateKey {
        /// The user that keeps matching.
        kept: String,
        /// The user that never matches.
        shadowed: String,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey { key, suggestion: Some(s) } => {
                write!(f, "unknown config key {key} (ignored); did you mean `{s}`?")
            }
            Self::UnknownKey { key, suggestion: None } => write!(f, "unknown config key {key} (ignored)"),
            Self::Deprecated { key, advice } => write!(f, "config key {key} is deprecated: {advice}"),
            Self::DuplicateKey { kept, shadowed } => {
                write!(
                    f,
                    "secrets.{shadowed} has the same key and host as secrets.{kept}; only {kept} can match"
                )
            }
        }
    }
}
