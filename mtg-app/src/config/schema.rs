//! The set of keys mtg-multi knows, for unknown-key warnings with a did-you-mean.

/// One level of the key tree.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
    /// A value.
    Leaf,
    /// A table with these keys.
    Table(&'static [(&'static str, Self)]),
    /// A table whose keys are free (user names, DC numbers), each holding `Node`.
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
const DOPPELGANGER: &[(&str, Node)] =
    &[("urls", Node::Leaf), ("repeats-per-raid", Node::Leaf), ("raid-each", Node::Leaf), ("drs", Node::Leaf)];
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
];
const SECURED: &[(&str, Node)] = &[("enabled", Node::Leaf), ("shape", Node::Leaf)];

/// Every key of the config file.
pub(crate) const ROOT: &[(&str, Node)] = &[
    ("debug", Node::Leaf),
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
    ("api-bind-to", Node::Leaf),
    ("api-token", Node::Leaf),
    ("api-persist", Node::Leaf),
    ("usage-state-file", Node::Leaf),
    ("secrets", Node::Map(&Node::Leaf)),
    ("secret-limits", Node::Map(&Node::Table(LIMITS))),
    ("throttle", Node::Table(THROTTLE)),
    ("domain-fronting", Node::Table(FRONTING)),
    ("network", Node::Table(NETWORK)),
    ("defense", Node::Table(DEFENSE)),
    ("stats", Node::Table(STATS)),
    ("secured", Node::Table(SECURED)),
];

/// Dotted paths of keys in `table` that the schema does not know, each with a suggestion when
/// a known key at that level is one edit away.
pub(crate) fn unknown_keys(table: &toml::Table) -> Vec<(String, Option<&'static str>)> {
    let mut out = Vec::new();
    walk(table, ROOT, "", &mut out);
    out
}

fn walk(
    table: &toml::Table,
    known: &'static [(&'static str, Node)],
    prefix: &str,
    out: &mut Vec<(String, Option<&'static str>)>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match known.iter().find(|(k, _)| k == key) {
            Some((_, node)) => descend(value, *node, &path, out),
            None => {
                let suggestion = known.iter().map(|(k, _)| *k).find(|k| edit_distance(k, key) <= 1);
                out.push((path, suggestion));
            }
        }
    }
}

fn descend(value: &toml::Value, node: Node, path: &str, out: &mut Vec<(String, Option<&'static str>)>) {
    match (node, value) {
        (Node::Table(keys), toml::Value::Table(t)) => walk(t, keys, path, out),
        (Node::Map(inner), toml::Value::Table(t)) => {
            for (k, v) in t {
                descend(v, *inner, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Every leaf key path of the schema (free tables shown as `NAME`), for documentation checks.
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
