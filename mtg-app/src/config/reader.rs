//! Typed access to dotted key paths of the raw TOML table, with mtg's "omit if empty" rule:
//! `0`, `""` and `false` read as absent, so the caller's default applies. Every failure is a
//! [`ConfigError::Invalid`] naming the key, the value as written and what is allowed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{ConfigError, shown, shown_str};
use super::values::{self, Expected};

/// What a count must be (mtg's u16 counts, lifted to u32).
const COUNT: Expected = "a whole number from 1 to 4294967295 (0 means the default)";

/// What a port must be.
const PORT: Expected = "a port from 1 to 65535";

/// The raw config being read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a>(pub(super) &'a toml::Table);

impl<'a> Reader<'a> {
    /// The whole raw table.
    pub(super) fn root(&self) -> &'a toml::Table {
        self.0
    }

    /// The value at a dotted path (`network.timeout.idle`), if present.
    pub(super) fn value(&self, path: &str) -> Option<&'a toml::Value> {
        let mut parts = path.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = current.as_table()?.get(part)?;
        }
        Some(current)
    }

    /// An error for `key` holding `value`.
    pub(super) fn invalid(key: &str, value: &toml::Value, expected: &str) -> ConfigError {
        ConfigError::Invalid { key: key.to_owned(), value: shown(value), expected: expected.to_owned() }
    }

    /// A non-empty string (empty = absent).
    pub(super) fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Self::invalid(key, other, "a string")),
        }
    }

    /// A non-empty string run through `parse` (empty = absent).
    pub(super) fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, Expected>,
    ) -> Result<Option<T>, ConfigError> {
        match self.value(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(v @ toml::Value::String(s)) => parse(s).map(Some).map_err(|e| Self::invalid(key, v, e)),
            // Every value parser refuses "", which yields what it expects.
            Some(other) => Err(Self::invalid(key, other, parse("").err().unwrap_or("a string"))),
        }
    }

    /// A boolean; absent = `false` (mtg reads every boolean as "value OR false").
    pub(super) fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        match self.value(key) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(Self::invalid(key, other, "true or false")),
        }
    }

    /// A boolean that defaults to `default` when absent.
    pub(super) fn flag_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        if self.value(key).is_none() { Ok(default) } else { self.flag(key) }
    }

    /// A count from 1 to `u32::MAX`; 0 = absent.
    pub(super) fn count(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.value(key) {
            None | Some(toml::Value::Integer(0)) => Ok(None),
            Some(v @ toml::Value::Integer(n)) => {
                u32::try_from(*n).map(Some).map_err(|_| Self::invalid(key, v, COUNT))
            }
            Some(other) => Err(Self::invalid(key, other, COUNT)),
        }
    }

    /// A port; 0 = absent.
    pub(super) fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.value(key) {
            None | Some(toml::Value::Integer(0)) => Ok(None),
            Some(v @ toml::Value::Integer(n)) => {
                u16::try_from(*n).map(Some).map_err(|_| Self::invalid(key, v, PORT))
            }
            Some(other) => Err(Self::invalid(key, other, PORT)),
        }
    }

    /// A Go duration; zero = absent.
    pub(super) fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.parsed(key, values::duration)?.filter(|d| !d.is_zero()))
    }

    /// A byte size (a string with a unit, or an integer number of bytes); zero = absent.
    pub(super) fn bytes(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.value(key) {
            Some(v @ toml::Value::Integer(n)) => u64::try_from(*n)
                .map(|b| Some(b).filter(|&b| b > 0))
                .map_err(|_| Self::invalid(key, v, values::BYTES)),
            _ => Ok(self.parsed(key, values::bytes)?.filter(|&b| b > 0)),
        }
    }

    /// A TCP segment size: an integer in `values::MSS_RANGE` or a preset string; 0 = absent.
    pub(super) fn mss(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.value(key) {
            None | Some(toml::Value::Integer(0)) => Ok(None),
            Some(v @ toml::Value::Integer(n)) => values::MSS_RANGE
                .contains(n)
                .then(|| u16::try_from(*n).ok())
                .flatten()
                .map(Some)
                .ok_or_else(|| Self::invalid(key, v, values::MSS)),
            _ => self.parsed(key, values::mss),
        }
    }

    /// A rate in bytes per second (an integer or a rate string, see `values::rate`); 0 = absent.
    pub(super) fn rate(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.value(key) {
            Some(v @ toml::Value::Integer(n)) => u64::try_from(*n)
                .map(|b| Some(b).filter(|&b| b > 0))
                .map_err(|_| Self::invalid(key, v, values::RATE)),
            _ => Ok(self.parsed(key, values::rate)?.filter(|&b| b > 0)),
        }
    }

    /// A literal IP.
    pub(super) fn ip(&self, key: &str) -> Result<Option<IpAddr>, ConfigError> {
        self.parsed(key, values::ip)
    }

    /// A literal `IP:port`.
    pub(super) fn socket_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.parsed(key, values::socket_addr)
    }

    /// A number in `(0, 100)`; below 1e-8 = absent (mtg's `error-rate` rule).
    pub(super) fn error_rate(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        const EXPECTED: Expected = "a number greater than 0 and less than 100";
        let (value, rate) = match self.value(key) {
            None => return Ok(None),
            Some(v @ toml::Value::Float(f)) => (v, *f),
            // Only compared with the bounds: rounding of huge integers does not matter.
            Some(v @ toml::Value::Integer(n)) => (v, *n as f64),
            Some(other) => return Err(Self::invalid(key, other, EXPECTED)),
        };
        if (0.0..1e-8).contains(&rate) {
            return Ok(None);
        }
        if !(rate > 0.0 && rate < 100.0) {
            return Err(Self::invalid(key, value, EXPECTED));
        }
        Ok(Some(rate))
    }

    /// An array of strings, each run through `parse`; `show` renders a bad entry for the error
    /// (e.g. hiding a password). Absent = empty.
    pub(super) fn list<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, Expected>,
        show: impl Fn(&str) -> String,
    ) -> Result<Vec<T>, ConfigError> {
        let items = match self.value(key) {
            None => return Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items,
            Some(other) => return Err(Self::invalid(key, other, "an array of strings")),
        };
        items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => parse(s).map_err(|expected| ConfigError::Invalid {
                    key: key.to_owned(),
                    value: shown_str(&show(s)),
                    expected: expected.to_owned(),
                }),
                other => Err(Self::invalid(key, other, "strings")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: std::fmt::Debug>(text: &str, f: impl FnOnce(Reader<'_>) -> T) -> String {
        let table: toml::Table = text.parse().expect("valid TOML");
        format!("{:?}", f(Reader(&table)))
    }

    #[test]
    fn empty_values_are_absent() {
        let text = "s = \"\"\nn = 0\nb = false\nd = \"0s\"\nz = \"0kib\"\n";
        assert_eq!(read(text, |r| r.string("s").map(|s| s.map(str::to_owned))), "Ok(None)");
        assert_eq!(read(text, |r| r.count("n")), "Ok(None)");
        assert_eq!(read(text, |r| r.port("n")), "Ok(None)");
        assert_eq!(read(text, |r| r.flag("b")), "Ok(false)");
        assert_eq!(read(text, |r| r.duration("d")), "Ok(None)");
        assert_eq!(read(text, |r| r.bytes("z")), "Ok(None)");
        assert_eq!(read(text, |r| r.bytes("n")), "Ok(None)");
        assert_eq!(read(text, |r| r.ip("s")), "Ok(None)");
        assert_eq!(read(text, |r| r.string("missing.deep").map(|s| s.map(str::to_owned))), "Ok(None)");
        assert_eq!(read(text, |r| r.string("s.deeper").map(|s| s.map(str::to_owned))), "Ok(None)");
    }

    #[test]
    fn error_rates() {
        let text = "tiny = 1e-9\nzero = 0\nok = 0.5\nint = 1\nneg = -0.1\nbig = 100.0\n";
        assert_eq!(read(text, |r| r.error_rate("tiny")), "Ok(None)");
        assert_eq!(read(text, |r| r.error_rate("zero")), "Ok(None)");
        assert_eq!(read(text, |r| r.error_rate("ok")), "Ok(Some(0.5))");
        assert_eq!(read(text, |r| r.error_rate("int")), "Ok(Some(1.0))");
        assert!(read(text, |r| r.error_rate("neg")).starts_with("Err"));
        assert!(read(text, |r| r.error_rate("big")).starts_with("Err"));
    }
}
