//! What the fleet keeps in Redis and the commands that read and write it. Every key starts
//! with `[cluster] key-prefix` (`P` below):
//!
//! - `P:users` (hash): user name → the user as JSON (the `PUT /secrets` entry fields:
//!   `secret`, `ad_tag`, the limits); `P:ad-tag` (string): the global ad tag;
//!   `P:users-version` (counter): bumped by every change; `P:seeded`: the instance that seeded
//!   the store; `P:events` (pub/sub channel): a message after every change.
//! - `P:usage:USER:PERIOD` (counter): the fleet's quota bytes of a user in a quota period;
//!   `P:seq:INSTANCE:RUN`: the last usage batch of one run of an instance applied (batches
//!   are idempotent; `RUN` is random per process, so two processes given the same name never
//!   drop each other's batches; the key expires 7 days after its last batch).
//! - `P:instance:INSTANCE` (JSON, expires after [`BEAT_TTL`]): an instance's heartbeat with
//!   its counters; `P:instances` (sorted set): the names, scored by the last beat.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Connection, RedisResult};
use serde::{Deserialize, Serialize};

/// How long a heartbeat lives without a refresh: a stopped or dead instance (and its counts)
/// leaves the fleet after this.
pub(super) const BEAT_TTL: Duration = Duration::from_secs(5);
/// Connect, read and write timeout of the agent's connection.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The users as the store holds them (also the cache file's content).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUsers {
    /// User name → the user as JSON.
    pub users: BTreeMap<String, String>,
    /// The global ad tag, 32 hex.
    pub ad_tag: Option<String>,
}

/// A change of the users written through one instance's API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersChange {
    /// Users added or changed: name → JSON.
    pub put: Vec<(String, String)>,
    /// Users removed.
    pub delete: Vec<String>,
    /// `Some(tag)` when the global ad tag changes (`Some(None)`: cleared).
    pub ad_tag: Option<Option<String>>,
}

impl UsersChange {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty() && self.ad_tag.is_none()
    }
}

/// The key names under a prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys(String);

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self(prefix.to_owned())
    }
    fn users(&self) -> String {
        format!("{}:users", self.0)
    }
    fn version(&self) -> String {
        format!("{}:users-version", self.0)
    }
    fn ad_tag(&self) -> String {
        format!("{}:ad-tag", self.0)
    }
    fn seeded(&self) -> String {
        format!("{}:seeded", self.0)
    }
    pub(super) fn events(&self) -> String {
        format!("{}:events", self.0)
    }
    fn seq(&self, writer: &str) -> String {
        format!("{}:seq:{writer}", self.0)
    }
    pub(super) fn usage(&self, user: &str, period: u64) -> String {
        format!("{}:usage:{user}:{period}", self.0)
    }
    fn instance(&self, name: &str) -> String {
        format!("{}:instance:{name}", self.0)
    }
    fn instances(&self) -> String {
        format!("{}:instances", self.0)
    }
}

/// Seeds the users unless the store was seeded already (atomic: of instances starting at once,
/// one seeds). Returns whether this call seeded.
const SEED: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2]) end
  redis.call('INCR', KEYS[4])
  return 1
end
return 0
";

/// Applies a usage batch once: the INCRBYs run only when the batch's sequence number (ARGV[1])
/// is above the instance's last applied one (KEYS[1]); KEYS[2..n+1] get ARGV[3..n+2] added
/// (n = ARGV[2]). Returns every counter named after KEYS[1].
const FLUSH: &str = r"
local n = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > last then
  for i = 1, n do redis.call('INCRBY', KEYS[i + 1], ARGV[i + 2]) end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 604800)
end
local out = {}
for i = 2, #KEYS do out[i - 1] = redis.call('GET', KEYS[i]) or '0' end
return out
";

/// The agent's view of the store: the client and, while it works, one connection.
pub(super) struct Store {
    client: redis::Client,
    con: Option<Connection>,
    pub(super) keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("connected", &self.con.is_some()).finish_non_exhaustive()
    }
}

impl Store {
    pub(super) fn new(client: redis::Client, prefix: &str) -> Self {
        Self { client, con: None, keys: Keys::new(prefix) }
    }

    /// Runs `f` on the connection (opened first if needed); a failure drops the connection
    /// so the next call reconnects.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Keys) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if self.con.is_none() {
            let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
            con.set_read_timeout(Some(IO_TIMEOUT))?;
            con.set_write_timeout(Some(IO_TIMEOUT))?;
            self.con = Some(con);
        }
        let Some(con) = self.con.as_mut() else { unreachable!("set above") };
        let result = f(con, &self.keys);
        if result.is_err() {
            self.con = None;
        }
        result
    }
}

/// Seeds the store with `users` unless it was seeded; `true` when this call did.
pub(super) fn seed(
    con: &mut Connection,
    keys: &Keys,
    instance: &str,
    users: &StoredUsers,
) -> RedisResult<bool> {
    let script = redis::Script::new(SEED);
    let mut call = script.key(keys.seeded());
    call.key(keys.users()).key(keys.ad_tag()).key(keys.version());
    call.arg(instance).arg(users.ad_tag.as_deref().unwrap_or(""));
    for (name, json) in &users.users {
        call.arg(name).arg(json);
    }
    call.invoke::<i64>(con).map(|n| n == 1)
}

/// Drops the "seeded" mark when the store holds no users (so [`seed`] can seed it again).
pub(super) fn unseed_if_empty(con: &mut Connection, keys: &Keys) -> RedisResult<()> {
    let script = redis::Script::new(
        "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end return 0",
    );
    script.key(keys.users()).key(keys.seeded()).invoke::<i64>(con).map(drop)
}

/// The users and their version.
pub(super) fn load(con: &mut Connection, keys: &Keys) -> RedisResult<(u64, StoredUsers)> {
    let (version, users, ad_tag): (Option<u64>, BTreeMap<String, String>, Option<String>) =
        redis::pipe().atomic().get(keys.version()).hgetall(keys.users()).get(keys.ad_tag()).query(con)?;
    Ok((version.unwrap_or(0), StoredUsers { users, ad_tag }))
}

/// The version of the users only (cheap: compared before a full read).
pub(super) fn version(con: &mut Connection, keys: &Keys) -> RedisResult<u64> {
    redis::cmd("GET").arg(keys.version()).query::<Option<u64>>(con).map(Option::unwrap_or_default)
}

/// Writes a change of the users in one transaction, then tells every instance.
pub(super) fn write(con: &mut Connection, keys: &Keys, change: &UsersChange) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (name, json) in &change.put {
        pipe.hset(keys.users(), name, json).ignore();
    }
    for name in &change.delete {
        pipe.hdel(keys.users(), name).ignore();
    }
    match &change.ad_tag {
        Some(Some(tag)) => {
            pipe.set(keys.ad_tag(), tag).ignore();
        }
        Some(None) => {
            pipe.del(keys.ad_tag()).ignore();
        }
        None => {}
    }
    pipe.incr(keys.version(), 1).ignore();
    pipe.query::<()>(con)?;
    redis::cmd("PUBLISH").arg(keys.events()).arg("users").query::<i64>(con).map(drop)
}

/// Applies the batch `seq` of `writer` (`INSTANCE:RUN`) of `deltas` (counter key, bytes) once,
/// and reads back the counters of `deltas` then `read`.
pub(super) fn flush(
    con: &mut Connection,
    keys: &Keys,
    writer: &str,
    seq: u64,
    deltas: &[(String, u64)],
    read: &[String],
) -> RedisResult<Vec<u64>> {
    let script = redis::Script::new(FLUSH);
    let mut call = script.key(keys.seq(writer));
    call.arg(seq).arg(deltas.len());
    for (key, delta) in deltas {
        call.key(key).arg(delta);
    }
    for key in read {
        call.key(key);
    }
    let values: Vec<String> = call.invoke(con)?;
    Ok(values.iter().map(|v| v.parse().unwrap_or(0)).collect())
}

/// Forgets a user's usage in a period (`reset-quota`).
pub(super) fn reset_usage(con: &mut Connection, keys: &Keys, user: &str, period: u64) -> RedisResult<()> {
    redis::cmd("DEL").arg(keys.usage(user, period)).query::<i64>(con).map(drop)
}

/// Refreshes this instance's heartbeat (`beat`, JSON) and reads every live instance's.
pub(super) fn beat(
    con: &mut Connection,
    keys: &Keys,
    instance: &str,
    beat: &str,
    now_ms: i64,
) -> RedisResult<Vec<String>> {
    let ttl_ms = u64::try_from(BEAT_TTL.as_millis()).unwrap_or(5000);
    let stale = now_ms - 10 * i64::try_from(ttl_ms).unwrap_or(5000);
    let (names,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(keys.instance(instance))
        .arg(beat)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .zadd(keys.instances(), instance, now_ms)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys.instances())
        .arg("-inf")
        .arg(stale)
        .ignore()
        .zrange(keys.instances(), 0, -1)
        .query(con)?;
    let keys: Vec<String> = names.iter().map(|n| keys.instance(n)).collect();
    let beats: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
    Ok(beats.into_iter().flatten().collect())
}

/// Removes this instance's heartbeat (a clean stop).
pub(super) fn leave(con: &mut Connection, keys: &Keys, instance: &str) -> RedisResult<()> {
    redis::pipe().del(keys.instance(instance)).ignore().zrem(keys.instances(), instance).ignore().query(con)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A throwaway `redis-server` (Debian package `redis-server`) on a free loopback port.
    struct Server(Child, u16);

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server) runs");
            Self(child, port)
        }

        fn connect(&self) -> Connection {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.1)).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match client.get_connection_with_timeout(IO_TIMEOUT) {
                    Ok(con) => return con,
                    Err(e) => {
                        assert!(std::time::Instant::now() < deadline, "redis-server never answered: {e}");
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_batch_counts_once_however_often_it_is_sent() {
        let server = Server::start();
        let mut con = server.connect();
        let keys = Keys::new("t");
        let (alice, bob) = (keys.usage("alice", 0), keys.usage("bob", 7));
        let batch = [(alice.clone(), 100), (bob.clone(), 5)];
        assert_eq!(flush(&mut con, &keys, "a:1", 1, &batch, &[]).unwrap(), [100, 5]);
        // Sent again after an unknown outcome: not counted again.
        assert_eq!(flush(&mut con, &keys, "a:1", 1, &batch, &[]).unwrap(), [100, 5]);
        // Another run of the same instance, and the next batch, count.
        assert_eq!(
            flush(&mut con, &keys, "a:2", 1, &batch[..1], std::slice::from_ref(&bob)).unwrap(),
            [200, 5]
        );
        assert_eq!(
            flush(&mut con, &keys, "a:1", 2, &batch[1..], std::slice::from_ref(&alice)).unwrap(),
            [10, 200]
        );
        // An older batch never comes back in.
        assert_eq!(flush(&mut con, &keys, "a:1", 1, &batch, &[]).unwrap(), [200, 10]);
        // Reading only.
        assert_eq!(
            flush(&mut con, &keys, "a:1", 0, &[], &[alice.clone(), keys.usage("carol", 0)]).unwrap(),
            [200, 0]
        );
        reset_usage(&mut con, &keys, "alice", 0).unwrap();
        assert_eq!(flush(&mut con, &keys, "a:1", 0, &[], &[alice]).unwrap(), [0]);
    }

    #[test]
    fn one_seed_then_changes() {
        let server = Server::start();
        let mut con = server.connect();
        let keys = Keys::new("t");
        let mut first = StoredUsers::default();
        first.users.insert("alice".into(), "{\"secret\":\"a\"}".into());
        first.ad_tag = Some("00112233445566778899aabbccddeeff".into());
        let mut second = StoredUsers::default();
        second.users.insert("zed".into(), "{}".into());
        assert!(seed(&mut con, &keys, "a", &first).unwrap());
        assert!(!seed(&mut con, &keys, "b", &second).unwrap(), "seeded once");
        assert_eq!(load(&mut con, &keys).unwrap(), (1, first.clone()));
        let change = UsersChange {
            put: vec![("bob".into(), "{}".into())],
            delete: vec!["alice".into()],
            ad_tag: Some(None),
        };
        write(&mut con, &keys, &change).unwrap();
        let (version, users) = load(&mut con, &keys).unwrap();
        assert_eq!(version, 2);
        assert_eq!(users.users.keys().collect::<Vec<_>>(), ["bob"]);
        assert_eq!(users.ad_tag, None);
        // A store that lost its users can be seeded again; one that has users cannot.
        unseed_if_empty(&mut con, &keys).unwrap();
        assert!(!seed(&mut con, &keys, "b", &second).unwrap());
        redis::cmd("DEL").arg("t:users").query::<i64>(&mut con).unwrap();
        unseed_if_empty(&mut con, &keys).unwrap();
        assert!(seed(&mut con, &keys, "b", &second).unwrap());
        assert_eq!(load(&mut con, &keys).unwrap().1.users.keys().collect::<Vec<_>>(), ["zed"]);
    }

    #[test]
    fn heartbeats_list_the_live_instances() {
        let server = Server::start();
        let mut con = server.connect();
        let keys = Keys::new("t");
        assert_eq!(beat(&mut con, &keys, "a", "A", 1_000).unwrap(), ["A"]);
        assert_eq!(beat(&mut con, &keys, "b", "B", 1_500).unwrap(), ["A", "B"]);
        leave(&mut con, &keys, "a").unwrap();
        assert_eq!(beat(&mut con, &keys, "b", "B2", 2_000).unwrap(), ["B2"]);
    }
}
