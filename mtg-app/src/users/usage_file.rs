//! The usage state file: per-user quota usage persisted across restarts, written atomically
//! through [`crate::atomic_file`] (mode and owner kept, 0600 when new). A file that does not
//! parse is an error naming it — never a silent reset.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One user's persisted usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes used against the quota in `period`.
    pub quota_used: u64,
    /// The quota period (months since year 0 for monthly resets, 0 otherwise).
    pub period: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    users: BTreeMap<String, Usage>,
}

/// Reads the file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<BTreeMap<String, Usage>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read usage state file {}: {e}", path.display())),
    };
    let file: File = serde_json::from_str(&text)
        .map_err(|e| format!("usage state file {} is corrupt: {e} (fix or remove it)", path.display()))?;
    Ok(file.users)
}

/// Writes the file atomically.
pub fn save(path: &Path, users: &BTreeMap<String, Usage>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&File { version: 1, users: users.clone() })
        .map_err(std::io::Error::other)?;
    crate::atomic_file::write(path, format!("{text}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = std::env::temp_dir().join(format!("mtg-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("usage.json");
        assert_eq!(load(&path).unwrap(), BTreeMap::new());
        let users: BTreeMap<String, Usage> =
            [("alice".to_owned(), Usage { quota_used: 42, period: 24_322 })].into();
        save(&path, &users).unwrap();
        assert_eq!(load(&path).unwrap(), users);
        std::fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.starts_with(&format!("usage state file {} is corrupt: ", path.display())), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
