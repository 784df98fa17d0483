//! The ad tag ("proxy tag" of @MTProxybot, `ad_tag` of mtg-multi): 16 bytes written as 32 hex
//! characters. A user whose effective tag is set is meant to be routed through Telegram's
//! middle proxies, which show the promoted channel. Tags are not secret, but a value pasted by
//! mistake may be a proxy secret, so errors never echo the value.

use std::collections::BTreeMap;
use std::fmt;

use mtg_proto::Secret;

/// Length of an ad tag in bytes.
pub const AD_TAG_LEN: usize = 16;

/// What every ad tag error ends with.
pub const AD_TAG_RULE: &str = "@MTProxybot's proxy tag is 32 hex characters";

/// A 16-byte ad tag. `Debug` and `Display` show it as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdTag([u8; AD_TAG_LEN]);

/// Why a text is not an ad tag. The value itself is never part of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdTagProblem {
    /// Not a string; the TOML or JSON type it has instead.
    NotAString(&'static str),
    /// A proxy secret (`ee…`/`dd…` hex, or base64) was pasted instead of the tag.
    SecretPasted,
    /// Characters other than hex digits.
    NotHex,
    /// Hex, but not 32 characters; how many there are.
    WrongLength(usize),
    /// The tag is the bare key of this user's secret (what @MTProxybot is given, not what it
    /// answers with).
    SecretKey(String),
}

impl fmt::Display for AdTagProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAString(found) => write!(f, "expected a string, found {found}"),
            Self::SecretPasted => f.write_str(
                "this is a proxy secret (ee…/dd… or base64), not the tag @MTProxybot answers with",
            ),
            Self::NotHex => f.write_str("it holds characters other than 0-9 and a-f"),
            Self::WrongLength(n) => write!(f, "it has {n} characters"),
            Self::SecretKey(user) => write!(
                f,
                "it is the secret key of user {user}: give @MTProxybot that key, then use the tag it answers with"
            ),
        }
    }
}

impl AdTag {
    /// The tag with these bytes.
    pub const fn new(bytes: [u8; AD_TAG_LEN]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; AD_TAG_LEN] {
        &self.0
    }

    /// 32 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex characters (either case, surrounding whitespace ignored). A proxy secret
    /// pasted by mistake (hex with an `ee`/`dd` prefix, or base64) is named as such.
    pub fn parse(text: &str) -> Result<Self, AdTagProblem> {
        let t = text.trim();
        let hex_len = 2 * AD_TAG_LEN;
        if t.len() != hex_len {
            let prefixed = t.len() > hex_len
                && t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("ee") || p.eq_ignore_ascii_case("dd"));
            if prefixed || Secret::parse(t).is_ok() {
                return Err(AdTagProblem::SecretPasted);
            }
        }
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AdTagProblem::NotHex);
        }
        if t.len() != hex_len {
            return Err(AdTagProblem::WrongLength(t.chars().count()));
        }
        let mut bytes = [0u8; AD_TAG_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // Checked above: 32 ASCII hex digits.
            *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| AdTagProblem::NotHex)?;
        }
        Ok(Self(bytes))
    }

    /// Refuses a tag equal to the bare key of one of `users`' secrets (the value @MTProxybot
    /// is given, pasted back as the tag).
    pub fn check_not_a_key<'a>(
        &self,
        users: impl IntoIterator<Item = (&'a String, &'a Secret)>,
    ) -> Result<(), AdTagProblem> {
        let hex = self.to_hex();
        match users.into_iter().find(|(_, s)| s.key_hex() == hex) {
            Some((name, _)) => Err(AdTagProblem::SecretKey(name.clone())),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for AdTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdTag({})", self.to_hex())
    }
}

impl fmt::Display for AdTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::str::FromStr for AdTag {
    type Err = AdTagProblem;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The ad tags of a set of users: the global `ad-tag` and the per-user `[secret-ad-tags]`
/// overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdTags {
    /// `ad-tag`: every user's tag unless overridden.
    pub global: Option<AdTag>,
    /// `[secret-ad-tags]`: per-user tags, winning over the global one.
    pub per_user: BTreeMap<String, AdTag>,
}

impl AdTags {
    /// The tag `user` gets: its own, else the global one.
    pub fn effective(&self, user: &str) -> Option<AdTag> {
        self.per_user.get(user).copied().or(self.global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "0123456789abcdef0123456789ABCDEF";

    #[test]
    fn parses_32_hex_in_either_case() {
        let tag = AdTag::parse(TAG).unwrap();
        assert_eq!(tag.to_hex(), TAG.to_ascii_lowercase());
        assert_eq!(tag.as_bytes()[..2], [0x01, 0x23]);
        assert_eq!(AdTag::parse(&format!(" {TAG}\n")), Ok(tag));
        assert_eq!(format!("{tag:?}"), "AdTag(0123456789abcdef0123456789abcdef)");
        assert_eq!(tag.to_string().parse::<AdTag>(), Ok(tag));
        // A tag may start with ee or dd: only longer values are secrets.
        assert!(AdTag::parse("ee23456789abcdef0123456789abcdef").is_ok());
        assert!(AdTag::parse("dd23456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("0123", AdTagProblem::WrongLength(4)),
            (&"ab".repeat(17), AdTagProblem::WrongLength(34)),
            ("0123456789abcdef0123456789abcdeg", AdTagProblem::NotHex),
            ("my tag", AdTagProblem::NotHex),
            (
                "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d",
                AdTagProblem::SecretPasted,
            ),
            ("ee367a189aee18fa31c190054efd4a8e95", AdTagProblem::SecretPasted),
            ("dd367a189aee18fa31c190054efd4a8e95", AdTagProblem::SecretPasted),
            ("DD367A189AEE18FA31C190054EFD4A8E95", AdTagProblem::SecretPasted),
            ("7jZ6GJruGPoxwZAFTv1KjpVzdG9yYWdlLmdvb2dsZWFwaXMuY29t", AdTagProblem::SecretPasted),
        ];
        for (text, problem) in cases {
            assert_eq!(AdTag::parse(text), Err(problem), "{text}");
        }
        assert_eq!(AdTagProblem::WrongLength(4).to_string(), "it has 4 characters");
    }

    #[test]
    fn a_secret_key_is_not_a_tag() {
        let secret =
            Secret::parse("ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d")
                .unwrap();
        let users = BTreeMap::from([("alice".to_owned(), secret)]);
        let key = AdTag::parse("367a189aee18fa31c190054efd4a8e95").unwrap();
        assert_eq!(key.check_not_a_key(&users), Err(AdTagProblem::SecretKey("alice".into())));
        assert_eq!(AdTag::parse(TAG).unwrap().check_not_a_key(&users), Ok(()));
    }

    #[test]
    fn per_user_tags_win() {
        let (a, b) = (AdTag::new([1; 16]), AdTag::new([2; 16]));
        let tags = AdTags { global: Some(a), per_user: BTreeMap::from([("bob".to_owned(), b)]) };
        assert_eq!(tags.effective("bob"), Some(b));
        assert_eq!(tags.effective("alice"), Some(a));
        assert_eq!(AdTags::default().effective("alice"), None);
    }
}
