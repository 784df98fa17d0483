//! The API's bearer token.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// `api-token`: the bearer token the API requires. `Debug` shows `<redacted>`, the text is
/// wiped from memory when dropped, and [`matches`](Self::matches) compares in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text, for a client of the API (`mtg-multi healthcheck`); never log it.
    pub(crate) fn text(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token. The SHA-256 digests of both are compared in constant
    /// time, so neither the time taken nor an early exit tells how much of a guess was right
    /// or how long the token is.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mut expected = Sha256::digest(self.0.as_bytes());
        let mut presented = Sha256::digest(given);
        let equal = expected.as_slice().ct_eq(presented.as_slice()).into();
        expected.as_mut_slice().zeroize();
        presented.as_mut_slice().zeroize();
        equal
    }
}

impl From<&str> for ApiToken {
    fn from(token: &str) -> Self {
        Self::new(token)
    }
}

impl From<String> for ApiToken {
    fn from(token: String) -> Self {
        Self::new(token)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl Drop for ApiToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = ApiToken::from("tok-7f3a9c1e5b");
        assert!(token.matches(b"tok-7f3a9c1e5b"));
        for wrong in
            [&b""[..], b"tok", b"tok-7f3a9c1e5", b"tok-7f3a9c1e5bX", b"TOK-7F3A9C1E5B", b"tok-7f3a9c1e5c"]
        {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(ApiToken::from("").matches(b""));
    }

    #[test]
    fn no_settings_or_config_debug_shows_the_token() {
        let text = "secret = \"ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d\"\n\
            bind-to = \"127.0.0.1:3128\"\napi-bind-to = \"0.0.0.0:9090\"\napi-token = \"zx-Tok3n-9f81c2\"\n";
        let loaded = crate::config::Config::from_toml_str(text).expect("a valid config");
        assert_eq!(loaded.config.api_token, Some(ApiToken::from("zx-Tok3n-9f81c2")));
        let settings = crate::engine::Settings::from_config(&loaded.config);
        assert!(settings.config.api_token.as_ref().is_some_and(|t| t.matches(b"zx-Tok3n-9f81c2")));
        for shown in [
            format!("{loaded:?}"),
            format!("{:#?}", loaded.config),
            format!("{settings:?}"),
            format!("{settings:#?}"),
        ] {
            assert!(!shown.contains("zx-Tok3n"), "the token is in {shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn debug_does_not_show_it() {
        let shown =
            format!("{:?} {:#?}", ApiToken::from("s3cr3t-t0k3n"), Some(ApiToken::from("s3cr3t-t0k3n")));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
