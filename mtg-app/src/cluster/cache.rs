//! `[cluster] cache-file`: the last users read from Redis, so a start while Redis is
//! unreachable serves them. Written atomically ([`crate::atomic_file`], 0600: it holds
//! secrets) each time the users read from Redis change.

use std::path::Path;

use super::store::StoredUsers;

/// Writes the cache.
pub(super) fn save(path: &Path, users: &StoredUsers) -> Result<(), String> {
    let text = serde_json::to_vec(users).map_err(|e| e.to_string())?;
    crate::atomic_file::write(path, &text).map_err(|e| e.to_string())
}

/// Reads the cache; `Ok(None)` when there is no file.
pub(super) fn load(path: &Path) -> Result<Option<StoredUsers>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the users cache {} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the users cache {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        assert_eq!(load(&path), Ok(None));
        let mut users = StoredUsers::default();
        users.users.insert("alice".into(), r#"{"secret":"ee00"}"#.into());
        users.ad_tag = Some("0123456789abcdef0123456789abcdef".into());
        save(&path, &users).unwrap();
        assert_eq!(load(&path), Ok(Some(users)));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, b"{").unwrap();
        assert!(load(&path).unwrap_err().contains("corrupt"));
    }
}
