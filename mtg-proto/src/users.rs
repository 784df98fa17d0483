//! The user table: secrets decoded once into numeric ids with pre-keyed HMAC state and an index
//! by hostname, and the ClientHello digest search over it.

use core::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::secret::{KEY_LEN, Secret, SecretKind};
use crate::tls::client_hello::{ClientHello, HelloRecords, RANDOM_LEN};

/// A user's numeric id: its position in the list the table was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u32);

/// A configured fronting hostname's id: its rank among the table's hostnames sorted bytewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u32);

struct UserEntry {
    kind: SecretKind,
    key: [u8; KEY_LEN],
    mac: KeyedMac,
    host: Option<HostId>,
}

/// A user's HMAC-SHA256 state pre-keyed with its secret (so a handshake costs no key
/// schedule), wiped when dropped: `hmac` 0.12 has no zeroize support, so the state is
/// overwritten in place with one keyed by zeros.
struct KeyedMac(Hmac<Sha256>);

impl KeyedMac {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(keyed(key))
    }

    /// Overwrites the keyed state with one keyed by zeros.
    fn wipe(&mut self) {
        self.0 = keyed(&[0; KEY_LEN]);
        // The store must not be dropped as dead: the memory may be freed right after.
        core::hint::black_box(&mut self.0);
    }
}

/// An HMAC-SHA256 state keyed with `key`.
fn keyed(key: &[u8; KEY_LEN]) -> Hmac<Sha256> {
    // Any key length is valid for HMAC; a 16-byte key cannot fail.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

impl Drop for KeyedMac {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Drop for UserEntry {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

struct HostEntry {
    name: Box<str>,
    users: Vec<UserId>,
}

/// All users of one proxy, built once from (name order) secrets. Read-only afterwards, so one
/// instance can be shared by every connection.
pub struct UserTable {
    users: Vec<UserEntry>,
    hosts: Vec<HostEntry>,
    secured: Vec<UserId>,
}

impl core::fmt::Debug for UserTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.users.len())
            .field("hosts", &self.hosts.iter().map(|h| &*h.name).collect::<Vec<_>>())
            .field("secured", &self.secured.len())
            .finish()
    }
}

/// What the digest search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchOutcome {
    /// This user's key signed the hello and its timestamp is within the tolerance.
    Matched(UserId),
    /// A key signed the hello but the timestamp is outside the tolerance.
    TimeSkew,
    /// No candidate's key signed the hello.
    NoMatch,
    /// The hinted user (if any) did not match and the full search was not allowed.
    Skipped,
}

impl UserTable {
    /// Builds the table. User ids are positions in `secrets`.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let secrets: Vec<&Secret> = secrets.into_iter().collect();
        let mut names: Vec<&str> =
            secrets.iter().filter(|s| s.kind() == SecretKind::FakeTls).map(|s| s.host()).collect();
        names.sort_unstable();
        names.dedup();
        let mut hosts: Vec<HostEntry> =
            names.iter().map(|&n| HostEntry { name: n.into(), users: Vec::new() }).collect();
        let mut users = Vec::with_capacity(secrets.len());
        let mut secured = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            let id = UserId(i as u32);
            let host = match secret.kind() {
                SecretKind::FakeTls => {
                    let idx = names.binary_search(&secret.host()).ok();
                    if let Some(idx) = idx {
                        hosts[idx].users.push(id);
                    }
                    idx.map(|i| HostId(i as u32))
                }
                SecretKind::Secured => {
                    secured.push(id);
                    None
                }
            };
            users.push(UserEntry {
                kind: secret.kind(),
                key: *secret.key(),
                mac: KeyedMac::new(secret.key()),
                host,
            });
        }
        Self { users, hosts, secured }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The host id of a hostname, if some FakeTLS user has it.
    pub fn host_id(&self, name: &[u8]) -> Option<HostId> {
        self.hosts.binary_search_by(|h| h.name.as_bytes().cmp(name)).ok().map(|i| HostId(i as u32))
    }

    /// The hostname of a host id.
    pub fn host_name(&self, host: HostId) -> Option<&str> {
        self.hosts.get(host.0 as usize).map(|h| &*h.name)
    }

    /// The fronting host of a user (`None` for `dd` users or unknown ids).
    pub fn user_host(&self, user: UserId) -> Option<HostId> {
        self.users.get(user.0 as usize).and_then(|u| u.host)
    }

    /// The secret kind of a user.
    pub fn user_kind(&self, user: UserId) -> Option<SecretKind> {
        self.users.get(user.0 as usize).map(|u| u.kind)
    }

    /// Users with `dd` secrets.
    pub fn secured_users(&self) -> &[UserId] {
        &self.secured
    }

    pub(crate) fn key(&self, user: UserId) -> Option<&[u8; KEY_LEN]> {
        self.users.get(user.0 as usize).map(|u| &u.key)
    }

    pub(crate) fn mac(&self, user: UserId) -> Option<&Hmac<Sha256>> {
        self.users.get(user.0 as usize).map(|u| &u.mac.0)
    }

    /// Tries the users of the hello's SNI hosts: the hinted user first (if it is one of them),
    /// then, when `full_search`, the rest in id order. One HMAC per user tried.
    pub(crate) fn match_hello(
        &self,
        records: &HelloRecords<'_>,
        hello: &ClientHello,
        now: Duration,
        tolerance: Duration,
        hint: Option<UserId>,
        full_search: bool,
    ) -> MatchOutcome {
        let mut outcome = MatchOutcome::NoMatch;
        let hint = hint.filter(|&h| self.user_host(h).is_some_and(|host| hello.hosts().contains(&host.0)));
        if let Some(user) = hint {
            match self.check(user, records, hello, now, tolerance) {
                MatchOutcome::Matched(u) => return MatchOutcome::Matched(u),
                MatchOutcome::TimeSkew => outcome = MatchOutcome::TimeSkew,
                MatchOutcome::NoMatch | MatchOutcome::Skipped => {}
            }
        }
        if !full_search {
            return MatchOutcome::Skipped;
        }
        for &host in hello.hosts() {
            let Some(entry) = self.hosts.get(host as usize) else {
                continue;
            };
            for &user in &entry.users {
                if Some(user) == hint {
                    continue;
                }
                match self.check(user, records, hello, now, tolerance) {
                    MatchOutcome::Matched(u) => return MatchOutcome::Matched(u),
                    MatchOutcome::TimeSkew => outcome = MatchOutcome::TimeSkew,
                    MatchOutcome::NoMatch | MatchOutcome::Skipped => {}
                }
            }
        }
        outcome
    }

    fn check(
        &self,
        user: UserId,
        records: &HelloRecords<'_>,
        hello: &ClientHello,
        now: Duration,
        tolerance: Duration,
    ) -> MatchOutcome {
        let Some(entry) = self.users.get(user.0 as usize) else {
            return MatchOutcome::NoMatch;
        };
        let mut mac = entry.mac.0.clone();
        records.feed_canonical(&mut mac);
        let digest = mac.finalize().into_bytes();
        let mut x = [0u8; RANDOM_LEN];
        for (out, (d, r)) in x.iter_mut().zip(digest.iter().zip(hello.random.iter())) {
            *out = d ^ r;
        }
        // Constant time over the 28 bytes: fold every byte, branch once.
        let folded = x[..28].iter().fold(0u8, |acc, b| acc | b);
        if core::hint::black_box(folded) != 0 {
            return MatchOutcome::NoMatch;
        }
        let timestamp = u32::from_le_bytes([x[28], x[29], x[30], x[31]]);
        if within(now, timestamp, tolerance) { MatchOutcome::Matched(user) } else { MatchOutcome::TimeSkew }
    }
}

/// `|now − timestamp| ≤ tolerance`, in milliseconds.
fn within(now: Duration, timestamp: u32, tolerance: Duration) -> bool {
    let now_ms = now.as_millis() as i128;
    let ts_ms = i128::from(timestamp) * 1000;
    (now_ms - ts_ms).unsigned_abs() <= tolerance.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(mac: &Hmac<Sha256>) -> [u8; 32] {
        mac.clone().chain_update(b"message").finalize().into_bytes().into()
    }

    #[test]
    fn a_wiped_mac_holds_a_state_keyed_by_zeros() {
        let key = [0x5a; KEY_LEN];
        let mut mac = KeyedMac::new(&key);
        assert_eq!(tag(&mac.0), tag(&keyed(&key)), "the precomputed state is the user's key");
        mac.wipe();
        assert_eq!(tag(&mac.0), tag(&keyed(&[0; KEY_LEN])));
        assert_ne!(tag(&mac.0), tag(&keyed(&key)), "nothing of the key is left in the state");
    }
}
