//! Every key the config knows, as a static tree: what unknown keys are checked against, where
//! misplaced top-level keys are looked for, and what the example config must document.

/// One level of the key tree.
#[derive(Debug, Clone, Copy)]
pub(super) enum Node {
    /// A value.
    Leaf,
    /// A table with these keys.
    Table(&'static [(&'static str, Self)]),
    /// A table whose keys are free (user names, DC numbers), each holding this node.
    Map(&'static Self),
}

const TIMEOUT: &[(&str, Node)] =
    &[("tcp", Node::Leaf), ("http", Node::Leaf), ("idle", Node::Leaf), ("handshake", Node::Leaf)];
const KEEP_ALIVE: &[(&str, Node)] =
    &[("disabled", Node::Leaf), ("idle", Node::Leaf), ("interval", Node::Leaf), ("count", Node::Leaf)];
const NETWORK: &[(&str, Node)] = &[
    ("doh-ip", Node::Leaf),
    ("dns", Node::Leaf),
    ("proxies", Node::Leaf),
    ("tcp-not-sent-lowat", Node::Leaf),
    ("client-mss", Node::Leaf),
    ("client-mss-bulk", Node::Leaf),
    ("zero-copy", Node::Leaf),
    ("timeout", Node::Table(TIMEOUT)),
    ("keep-alive", Node::Table(KEEP_ALIVE)),
    ("dc-overrides", Node::Map(&Node::Leaf)),
];
const ANTI_REPLAY: &[(&str, Node)] =
    &[("enabled", Node::Leaf), ("max-size", Node::Leaf), ("error-rate", Node::Leaf)];
const IP_LIST: &[(&str, Node)] = &[
    ("enabled", Node::Leaf),
    ("download-concurrency", Node::Leaf),
    ("urls", Node::Leaf),
    ("update-each", Node::Leaf),
];
const DOPPELGANGER: &[(&str, Node)] = &[
    ("urls", Node::Leaf),
    ("repeats-per-raid", Node::Leaf),
    ("raid-each", Node::Leaf),
    ("drs", Node::Leaf),
    ("pacing", Node::Leaf),
    ("learn-from-fronting", Node::Leaf),
];
const DEFENSE: &[(&str, Node)] = &[
    ("anti-replay", Node::Table(ANTI_REPLAY)),
    ("blocklist", Node::Table(IP_LIST)),
    ("allowlist", Node::Table(IP_LIST)),
    ("doppelganger", Node::Table(DOPPELGANGER)),
];
const STATSD: &[(&str, Node)] = &[
    ("enabled", Node::Leaf),
    ("address", Node::Leaf),
    ("metric-prefix", Node::Leaf),
    ("tag-format", Node::Leaf),
];
const PROMETHEUS: &[(&str, Node)] = &[
    ("enabled", Node::Leaf),
    ("bind-to", Node::Leaf),
    ("http-path", Node::Leaf),
    ("metric-prefix", Node::Leaf),
];
const STATS: &[(&str, Node)] = &[("statsd", Node::Table(STATSD)), ("prometheus", Node::Table(PROMETHEUS))];
const THROTTLE: &[(&str, Node)] = &[("max-connections", Node::Leaf), ("check-interval", Node::Leaf)];
const FRONTING: &[(&str, Node)] =
    &[("host", Node::Leaf), ("ip", Node::Leaf), ("port", Node::Leaf), ("proxy-protocol", Node::Leaf)];
const LIMITS: &[(&str, Node)] = &[
    ("max-connections", Node::Leaf),
    ("quota", Node::Leaf),
    ("quota-reset", Node::Leaf),
    ("expires", Node::Leaf),
    ("disabled", Node::Leaf),
    ("max-ips", Node::Leaf),
    ("rate-limit", Node::Leaf),
];
const SECURED: &[(&str, Node)] = &[("enabled", Node::Leaf)];
const MIDDLE_PROXY: &[(&str, Node)] = &[
    ("secret-url", Node::Leaf),
    ("config-url", Node::Leaf),
    ("config-url-v6", Node::Leaf),
    ("update-each", Node::Leaf),
    ("cache-dir", Node::Leaf),
];

/// Every key of the config file.
pub(super) const ROOT: &[(&str, Node)] = &[
    ("debug", Node::Leaf),
    ("log-format", Node::Leaf),
    ("secret", Node::Leaf),
    ("bind-to", Node::Leaf),
    ("proxy-protocol-listener", Node::Leaf),
    ("concurrency", Node::Leaf),
    ("prefer-ip", Node::Leaf),
    ("public-ipv4", Node::Leaf),
    ("public-ipv6", Node::Leaf),
    ("auto-update", Node::Leaf),
    ("domain-fronting-port", Node::Leaf),
    ("domain-fronting-ip", Node::Leaf),
    ("domain-fronting-proxy-protocol", Node::Leaf),
    ("tolerate-time-skewness", Node::Leaf),
    ("allow-fallback-on-unknown-dc", Node::Leaf),
    ("fast-mode", Node::Leaf),
    ("api-bind-to", Node::Leaf),
    ("api-token", Node::Leaf),
    ("api-persist", Node::Leaf),
    ("usage-state-file", Node::Leaf),
    ("ad-tag", Node::Leaf),
    ("secrets", Node::Map(&Node::Leaf)),
    ("secret-limits", Node::Map(&Node::Table(LIMITS))),
    ("secret-limits-default", Node::Table(LIMITS)),
    ("secret-ad-tags", Node::Map(&Node::Leaf)),
    ("middle-proxy", Node::Table(MIDDLE_PROXY)),
    ("throttle", Node::Table(THROTTLE)),
    ("domain-fronting", Node::Table(FRONTING)),
    ("network", Node::Table(NETWORK)),
    ("defense", Node::Table(DEFENSE)),
    ("stats", Node::Table(STATS)),
    ("secured", Node::Table(SECURED)),
];

/// The top-level key (a value, not a table) called `name`, if there is one.
pub(super) fn top_level_leaf(name: &str) -> Option<&'static str> {
    ROOT.iter().find(|(k, node)| *k == name && matches!(node, Node::Leaf)).map(|(k, _)| *k)
}

/// The first table (as `[dotted.path]`) in `root` that holds `key` although the schema does
/// not put it there: where a misplaced top-level key ended up.
pub(super) fn misplaced(root: &toml::Table, key: &str) -> Option<String> {
    fn search(table: &toml::Table, node: Node, path: &str, key: &str) -> Option<String> {
        match node {
            Node::Leaf => None,
            Node::Map(Node::Leaf) => table.contains_key(key).then(|| format!("[{path}]")),
            Node::Map(inner) => table
                .iter()
                .find_map(|(name, value)| search(value.as_table()?, *inner, &format!("{path}.{name}"), key)),
            Node::Table(known) => {
                if table.contains_key(key) && !known.iter().any(|(k, _)| *k == key) {
                    return Some(format!("[{path}]"));
                }
                known.iter().find_map(|(name, child)| {
                    search(table.get(*name)?.as_table()?, *child, &format!("{path}.{name}"), key)
                })
            }
        }
    }
    ROOT.iter().find_map(|(name, node)| search(root.get(*name)?.as_table()?, *node, name, key))
}

/// The first key the schema says is a table but whose value is not one (`network = 5`,
/// `[[network]]`), with that value. Without this check its keys would silently be defaults.
pub(super) fn not_a_table(root: &toml::Table) -> Option<(String, &toml::Value)> {
    fn search<'a>(
        table: &'a toml::Table,
        known: &'static [(&'static str, Node)],
        prefix: &str,
    ) -> Option<(String, &'a toml::Value)> {
        known.iter().find_map(|(name, node)| {
            let value = table.get(*name)?;
            let path = if prefix.is_empty() { (*name).to_owned() } else { format!("{prefix}.{name}") };
            match (node, value) {
                (Node::Leaf, _) => None,
                (Node::Table(inner), toml::Value::Table(t)) => search(t, inner, &path),
                (Node::Map(Node::Table(inner)), toml::Value::Table(t)) => {
                    t.iter().find_map(|(k, v)| match v {
                        toml::Value::Table(child) => search(child, inner, &format!("{path}.{k}")),
                        other => Some((format!("{path}.{k}"), other)),
                    })
                }
                (Node::Map(_), toml::Value::Table(_)) => None,
                (_, other) => Some((path, other)),
            }
        })
    }
    search(root, ROOT, "")
}

/// Every leaf key path of the schema, dotted, with free-form names shown as `NAME`
/// (e.g. `network.timeout.idle`, `secret-limits.NAME.quota`, `secrets.NAME`).
pub fn all_key_paths() -> Vec<String> {
    let mut out = Vec::new();
    collect(ROOT, "", &mut out);
    out
}

fn collect(keys: &'static [(&'static str, Node)], prefix: &str, out: &mut Vec<String>) {
    for (key, node) in keys {
        let path = if prefix.is_empty() { (*key).to_owned() } else { format!("{prefix}.{key}") };
        match node {
            Node::Leaf => out.push(path),
            Node::Table(inner) => collect(inner, &path, out),
            Node::Map(Node::Table(inner)) => collect(inner, &format!("{path}.NAME"), out),
            Node::Map(_) => out.push(format!("{path}.NAME")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misplaced_keys_are_found_where_they_landed() {
        let find = |text: &str, key: &str| misplaced(&text.parse().expect("valid TOML"), key);
        assert_eq!(find("[secrets]\nbind-to = 1", "bind-to"), Some("[secrets]".into()));
        assert_eq!(find("[network.timeout]\nbind-to = 1", "bind-to"), Some("[network.timeout]".into()));
        assert_eq!(find("[secret-limits.a]\nsecret = 1", "secret"), Some("[secret-limits.a]".into()));
        assert_eq!(find("[stats.prometheus]\nbind-to = 1", "bind-to"), None);
        assert_eq!(find("bind-to = 1\n[network]\ndns = 1", "bind-to"), None);
    }

    #[test]
    fn tables_of_the_wrong_type_are_found() {
        let find = |text: &str| {
            let root: toml::Table = text.parse().expect("valid TOML");
            not_a_table(&root).map(|(path, value)| format!("{path} = {value}"))
        };
        assert_eq!(find("network = 5"), Some("network = 5".into()));
        assert_eq!(find("[network]\ntimeout = \"1s\""), Some("network.timeout = \"1s\"".into()));
        assert_eq!(
            find("[[throttle]]\nmax-connections = 1").map(|s| s.starts_with("throttle = ")),
            Some(true)
        );
        assert_eq!(find("secret-limits = { a = 1 }"), Some("secret-limits.a = 1".into()));
        assert_eq!(find("[secrets]\na = \"x\"\n[network.timeout]\nidle = \"1s\"\n[secret-limits.a]"), None);
    }

    #[test]
    fn key_paths() {
        let paths = all_key_paths();
        for p in ["debug", "secrets.NAME", "secret-limits.NAME.expires", "network.dc-overrides.NAME"] {
            assert!(paths.iter().any(|k| k == p), "{p}");
        }
        assert_eq!(top_level_leaf("bind-to"), Some("bind-to"));
        assert_eq!(top_level_leaf("network"), None);
    }
}
