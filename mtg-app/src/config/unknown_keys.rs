//! Unknown keys: walk the raw TOML table against the schema and report every key the proxy
//! does not know, with what it was probably meant to be. mtg ignores typos silently; we warn.

use super::error::{ConfigWarning, Suggestion};
use super::schema::{self, Node, ROOT};

/// Warnings for every unknown key in `root`, sorted by key path. Free-form tables (user names,
/// DC numbers) are not checked here; their readers validate them.
pub(super) fn unknown_keys(root: &toml::Table) -> Vec<ConfigWarning> {
    let mut found = Vec::new();
    walk(root, ROOT, "", &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(key, suggestion)| ConfigWarning::UnknownKey { key, suggestion }).collect()
}

type Found = Vec<(String, Option<Suggestion>)>;

fn walk(table: &toml::Table, known: &'static [(&'static str, Node)], prefix: &str, out: &mut Found) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match known.iter().find(|(k, _)| k == key) {
            Some((_, node)) => descend(value, *node, &path, out),
            None => {
                let top_level = || schema::top_level_leaf(key).filter(|_| !prefix.is_empty());
                let suggestion = similar(key, known)
                    .map(Suggestion::Similar)
                    .or_else(|| top_level().map(Suggestion::TopLevel));
                out.push((path, suggestion));
            }
        }
    }
}

fn descend(value: &toml::Value, node: Node, path: &str, out: &mut Found) {
    match (node, value) {
        (Node::Table(keys), toml::Value::Table(t)) => walk(t, keys, path, out),
        (Node::Map(inner), toml::Value::Table(t)) => {
            for (k, v) in t {
                descend(v, *inner, &format!("{path}.{k}"), out);
            }
        }
        // Leaves, and values of the wrong type (their readers report those).
        _ => {}
    }
}

/// The known key `key` was most likely meant to be: the same up to case and `_`/`-`, else at
/// most one edit (insertion, deletion, substitution or adjacent swap) away.
fn similar(key: &str, known: &'static [(&'static str, Node)]) -> Option<&'static str> {
    let folded = key.to_lowercase().replace('_', "-");
    let names = || known.iter().map(|(k, _)| *k);
    names().find(|k| *k == folded).or_else(|| names().find(|k| edit_distance(&folded, k) <= 1))
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions (Damerau).
fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(text: &str) -> Vec<String> {
        let table: toml::Table = text.parse().expect("valid TOML");
        unknown_keys(&table).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("idle", "idle"), 0);
        assert_eq!(edit_distance("idel", "idle"), 1);
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("bind-too", "bind-to"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn unknown_keys_with_suggestions() {
        let got = warnings(
            "Bind_To = 1\nfoo = 2\n[secrets]\nanything = 1\n[network.timeout]\nidel = 1\n\
             [network.dc-overrides]\n7 = 1\n[secret-limits.bob]\nquotas = 1\n[stats.statsd]\ndebug = true\n\
             [defense]\nantireplay = {}\n",
        );
        assert_eq!(
            got,
            [
                "unknown config key Bind_To (ignored); did you mean `bind-to`?",
                "unknown config key defense.antireplay (ignored); did you mean `anti-replay`?",
                "unknown config key foo (ignored)",
                "unknown config key network.timeout.idel (ignored); did you mean `idle`?",
                "unknown config key secret-limits.bob.quotas (ignored); did you mean `quota`?",
                "unknown config key stats.statsd.debug (ignored); `debug` is a top-level key: \
                 top-level keys must come before every [table]",
            ]
        );
    }

    #[test]
    fn every_schema_key_is_known() {
        for path in schema::all_key_paths() {
            let parts: Vec<&str> = path.split('.').collect();
            let mut value = toml::Value::Integer(1);
            for part in parts.iter().rev() {
                let mut table = toml::Table::new();
                table.insert((*part).to_owned(), value);
                value = toml::Value::Table(table);
            }
            let toml::Value::Table(root) = value else { unreachable!("built as a table above") };
            assert_eq!(unknown_keys(&root), vec![], "{path}");
        }
    }
}
