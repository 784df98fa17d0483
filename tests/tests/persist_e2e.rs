//! `api-persist` end to end (both runtimes, the proxy as a child process): every management
//! operation (add with a secret, add by host, update, re-key, delete, reset-quota, replace
//! the whole set, the ad tags) survives a restart of the proxy exactly (`GET /secrets` before and after are
//! equal), the file keeps mode 0600 and always loads; and concurrent changes through the API
//! (with reloads among them) are serialised: none fails, none is lost, file and memory agree.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mtg_proto::Secret;
use mtg_tests::api_client;
use mtg_tests::config_text::{OFFLINE_MIDDLE_PROXY, Timeouts, closed_port, proxy_config};
use mtg_tests::proxy_process::{Launch, ProxyProcess};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-proxy-process");
const HOST: &str = "persist.example";
const AUTH: Option<&str> = Some("Bearer persist-token");

fn user(n: u8) -> Secret {
    Secret::fake_tls([n; 16], HOST).unwrap()
}

/// A fresh directory with a 0600 config file for `users` (alice = 1, bob = 2, …) and `tables`.
fn config_file(tag: &str, users: &[(&str, &Secret)], tables: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mtg-persist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    let top = format!(
        "api-bind-to = \"{}\"\napi-token = \"persist-token\"\napi-persist = true\n# keep this comment",
        closed_port()
    );
    let front = closed_port();
    let text = proxy_config(users, &[(2, closed_port())], front, Timeouts::default(), &top, tables);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

fn call(proxy: &ProxyProcess, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let (status, text) = api_client::request(proxy.api().unwrap(), method, path, AUTH, &body);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text:?}"));
    (status, value)
}

fn listing(proxy: &ProxyProcess) -> Value {
    let (status, value) = call(proxy, "GET", "/secrets", &Value::Null);
    assert_eq!(status, 200, "{value}");
    value
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Stops the proxy, checks the file, starts a new one on it and checks it serves exactly the
/// same users and limits.
fn restart(proxy: ProxyProcess, path: &Path, after: &str) -> ProxyProcess {
    let before = listing(&proxy);
    let tag_before = call(&proxy, "GET", "/adtag", &Value::Null);
    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "after {after}: exit {status}\n{log}");
    assert_eq!(mode(path), 0o600, "after {after}: the file's mode");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("# keep this comment"), "after {after}: the rest of the file is kept:\n{text}");
    let dir = path.parent().unwrap();
    let strays: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "config.toml")
        .collect();
    assert!(strays.is_empty(), "after {after}: stray files {strays:?}");
    let proxy = ProxyProcess::start_file(BIN, path, &Launch::default());
    assert_eq!(listing(&proxy), before, "after {after}: the restarted proxy serves other users\n{text}");
    assert_eq!(
        call(&proxy, "GET", "/adtag", &Value::Null),
        tag_before,
        "after {after}: another ad tag\n{text}"
    );
    let (status, summary) = call(&proxy, "POST", "/reload", &Value::Null);
    assert_eq!(status, 200, "after {after}: reload of the written file: {summary}");
    assert_eq!(
        summary,
        json!({"added": [], "removed": [], "rekeyed": [], "relimited": [], "retagged": []}),
        "after {after}"
    );
    proxy
}

#[test]
fn every_management_operation_survives_a_restart() {
    let (alice, bob) = (user(1), user(2));
    let (dir, path) =
        config_file("ops", &[("alice", &alice), ("bob", &bob)], "[secret-limits.bob]\nquota = \"1gib\"\n");
    let mut proxy = ProxyProcess::start_file(BIN, &path, &Launch::default());
    assert_eq!(listing(&proxy)["bob"]["quota"], json!(1u64 << 30));

    // Add with a secret and every limit.
    let carol = user(3);
    let (status, body) = call(
        &proxy,
        "POST",
        "/secrets",
        &json!({"name": "carol", "secret": carol.to_hex(), "quota": "10GB", "quota_reset": "monthly",
                "expires": "2027-01-31", "disabled": false, "max_connections": 3}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["carol"],
        json!({"secret": carol.to_hex(), "base64": carol.to_base64url(), "host": HOST,
               "max_connections": 3, "quota": 10u64 << 30, "quota_reset": "monthly",
               "expires": "2027-01-31T00:00:00.000Z"})
    );
    proxy = restart(proxy, &path, "an add with a secret and limits");

    // Add by host: the generated secret is what the restarted proxy serves.
    let (status, body) = call(&proxy, "POST", "/secrets", &json!({"name": "dave", "host": "dave.example"}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["dave"]["host"], "dave.example");
    proxy = restart(proxy, &path, "an add by host");

    // Update without a secret: bob keeps his key, his limits become the ones given.
    let (status, body) = call(&proxy, "POST", "/secrets", &json!({"name": "bob", "disabled": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bob"]["secret"], bob.to_hex());
    assert_eq!(body["bob"]["disabled"], true);
    assert!(body["bob"].get("quota").is_none(), "{body}");
    proxy = restart(proxy, &path, "an update of limits");

    // Re-key carol, limits cleared.
    let carol2 = user(4);
    let (status, body) =
        call(&proxy, "POST", "/secrets", &json!({"name": "carol", "secret": carol2.to_base64url()}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["carol"],
        json!({"secret": carol2.to_hex(), "base64": carol2.to_base64url(), "host": HOST})
    );
    proxy = restart(proxy, &path, "a re-key");

    // Delete bob, who has a [secret-limits.bob] table: nothing of him stays in the file.
    assert_eq!(call(&proxy, "DELETE", "/secrets/bob", &Value::Null).0, 200);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("bob"), "{text}");
    proxy = restart(proxy, &path, "a delete of a user with limits");

    // Reset a quota (no change of the file).
    assert_eq!(call(&proxy, "POST", "/secrets/carol/reset-quota", &Value::Null).0, 200);
    proxy = restart(proxy, &path, "a quota reset");

    // Replace the whole set.
    let erin = Secret::fake_tls([5; 16], "erin.example").unwrap();
    let (status, body) = call(
        &proxy,
        "PUT",
        "/secrets",
        &json!({"secrets": {
            "alice": {"secret": alice.to_hex(), "quota": 5000},
            "erin": {"secret": erin.to_hex(), "expires": "2030-01-01T00:00:00+02:00", "quota_reset": "monthly"},
        }}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["alice", "erin"]);
    assert_eq!(body["alice"]["quota"], 5000);
    assert_eq!(body["erin"]["expires"], "2029-12-31T22:00:00.000Z");
    assert_eq!(body, listing(&proxy));
    proxy = restart(proxy, &path, "a replacement of the whole set");

    // Back to no limits at all: the tables go, the file still loads.
    let (status, body) = call(&proxy, "POST", "/secrets", &json!({"name": "alice"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&proxy, "DELETE", "/secrets/erin", &Value::Null).0, 200);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("[secret-limits."), "{text}");
    proxy = restart(proxy, &path, "the last limits removed");
    assert_eq!(listing(&proxy).as_object().unwrap().len(), 1);

    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ad_tags_survive_a_restart() {
    const TAG_A: &str = "0123456789abcdef0123456789abcdef";
    const TAG_B: &str = "fedcba9876543210fedcba9876543210";
    let (alice, bob) = (user(1), user(2));
    let (dir, path) = config_file(
        "tags",
        &[("alice", &alice), ("bob", &bob)],
        &format!("[secret-limits.bob]\nquota = 5\n{OFFLINE_MIDDLE_PROXY}"),
    );
    let mut proxy = ProxyProcess::start_file(BIN, &path, &Launch::default());

    // The global tag: written as a top-level key, before the first table.
    assert_eq!(call(&proxy, "PUT", "/adtag", &json!({"ad_tag": TAG_A})), (200, json!({"status": "ok"})));
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find(&format!("ad-tag = \"{TAG_A}\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(at < text.find('[').unwrap(), "{text}");
    proxy = restart(proxy, &path, "PUT /adtag");
    assert_eq!(call(&proxy, "GET", "/adtag", &Value::Null).1, json!({"ad_tag": TAG_A}));

    // A user's own tag, with his limits kept as given.
    let (status, body) =
        call(&proxy, "POST", "/secrets", &json!({"name": "bob", "ad_tag": TAG_B, "quota": 5}));
    assert_eq!(status, 200, "{body}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("[secret-ad-tags]\nbob = \"{TAG_B}\"")), "{text}");
    proxy = restart(proxy, &path, "POST /secrets with ad_tag");
    let listed = listing(&proxy);
    assert_eq!(
        (&listed["bob"]["ad_tag"], &listed["bob"]["effective_ad_tag"]),
        (&json!(TAG_B), &json!(TAG_B))
    );
    assert_eq!(listed["alice"]["effective_ad_tag"], json!(TAG_A));

    // The global tag cleared; bob's stays.
    assert_eq!(call(&proxy, "DELETE", "/adtag", &Value::Null).0, 200);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("ad-tag ="));
    proxy = restart(proxy, &path, "DELETE /adtag");
    assert_eq!(listing(&proxy)["bob"]["effective_ad_tag"], json!(TAG_B));

    // Deleting bob removes his tag from the file.
    assert_eq!(call(&proxy, "DELETE", "/secrets/bob", &Value::Null).0, 200);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret-ad-tags") && !text.contains("bob"), "{text}");
    proxy = restart(proxy, &path, "a delete of a user with a tag");

    // PUT /secrets with both kinds of tag.
    let (status, body) = call(
        &proxy,
        "PUT",
        "/secrets",
        &json!({"secrets": {"alice": {"secret": alice.to_hex(), "ad_tag": TAG_A}, "carol": {"secret": user(3).to_hex()}},
                "ad_tag": TAG_B}),
    );
    assert_eq!(status, 200, "{body}");
    proxy = restart(proxy, &path, "PUT /secrets with ad tags");
    let listed = listing(&proxy);
    assert_eq!(listed["alice"]["effective_ad_tag"], json!(TAG_A));
    assert_eq!(listed["carol"]["effective_ad_tag"], json!(TAG_B));

    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `work(i)` for `0..n` on `n` threads released together; returns the results in order.
fn all_at_once<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    work(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a request thread panicked")).collect()
    })
}

/// The users of the config file, as the proxy would load them, by name (hex secrets).
fn file_users(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = mtg_app::config::Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    loaded.config.users.iter().map(|(n, s)| (n.clone(), s.to_hex())).collect()
}

fn served_users(listing: &Value) -> BTreeMap<String, String> {
    listing
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v["secret"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn concurrent_changes_are_serialised_and_none_is_lost() {
    let alice = user(1);
    let (dir, path) = config_file("race", &[("alice", &alice)], "");
    let proxy = ProxyProcess::start_file(BIN, &path, &Launch::default());
    let api = proxy.api().unwrap();
    let name = |i: usize| format!("u{i:02}");

    // 50 adds by host, with 5 reloads among them.
    let answers = all_at_once(55, |i| {
        if i >= 50 {
            return api_client::request(api, "POST", "/reload", AUTH, "");
        }
        let body = json!({"name": name(i), "host": HOST}).to_string();
        api_client::request(api, "POST", "/secrets", AUTH, &body)
    });
    for (i, (status, body)) in answers.iter().enumerate() {
        let want = if i >= 50 { 200 } else { 201 };
        assert_eq!(*status, want, "request {i}: {body}");
    }
    let served = served_users(&listing(&proxy));
    let mut expected: BTreeSet<String> = (0..50).map(name).collect();
    expected.insert("alice".to_owned());
    assert_eq!(served.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(file_users(&path), served, "the file and the proxy agree after the adds");
    // Each add answered with the secret that is served.
    for (i, (_, body)) in answers.iter().take(50).enumerate() {
        let answered: Value = serde_json::from_str(body).unwrap();
        assert_eq!(answered[name(i)]["secret"].as_str(), served.get(&name(i)).map(String::as_str));
    }

    // 25 deletes at once.
    let answers =
        all_at_once(25, |i| api_client::request(api, "DELETE", &format!("/secrets/{}", name(i)), AUTH, ""));
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "delete {i}: {body}");
    }
    let served = served_users(&listing(&proxy));
    for i in 0..25 {
        expected.remove(&name(i));
    }
    assert_eq!(served.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(file_users(&path), served, "the file and the proxy agree after the deletes");
    assert_eq!(mode(&path), 0o600);

    let (status, log) = proxy.stop(Duration::from_secs(10));
    assert!(status.success(), "exit {status}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}
