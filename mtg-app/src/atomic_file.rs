//! The one way the proxy replaces a file it owns (the config under `api-persist`, the usage
//! state file): write a temporary file with a unique name in the same directory (created with
//! `create_new`, so two writers never share one), give it the mode and owner of the file it
//! replaces (0600 for a new file: these files hold secrets), fsync it, rename it over the
//! target and fsync the directory. A reader sees the old file or the new one, never a mix, and
//! a crash leaves at worst a stray temporary file, never a truncated target.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of a file that did not exist before.
pub const NEW_FILE_MODE: u32 = 0o600;

/// How many temporary names are tried before giving up.
const ATTEMPTS: u32 = 16;

/// Replaces `path` with `contents` atomically (see the module docs). A symbolic link is
/// followed: the file it points to is replaced and the link stays.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let target = resolve(path)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy()
        .into_owned();
    // The mode (with setuid/setgid/sticky bits) and owner to keep; a new file gets 0600.
    let existing = match std::fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mode = existing.as_ref().map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
    let (tmp_path, mut file) = create_temp(&dir, &file_name)?;
    let result = (|| {
        file.write_all(contents)?;
        if let Some(meta) = &existing {
            let made = file.metadata()?;
            if (made.uid(), made.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot give the new file the owner {}:{} of {}: {e}",
                            meta.uid(),
                            meta.gid(),
                            target.display()
                        ),
                    )
                })?;
            }
        }
        // Set after the owner: chown may clear setuid/setgid bits. Exact, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp_path, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    File::open(&dir)?.sync_all()
}

/// The file to replace: `path`, or what it links to.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
}

/// A new, empty temporary file next to the target: `.NAME.PID.N.tmp`, created exclusively with
/// mode 0600 (the final mode is set once the content is in).
fn create_temp(dir: &Path, file_name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let salt: u32 = rand::random();
        let tmp = dir.join(format!(".{file_name}.{}.{n}.{salt:08x}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).mode(NEW_FILE_MODE).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mtg-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn new_files_are_0600_and_modes_are_kept() {
        let dir = scratch("mode");
        let path = dir.join("config.toml");
        write(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o640);
        // A fixed `.tmp` name in the way does not matter (and is left alone).
        std::fs::write(path.with_extension("tmp"), b"someone else's").unwrap();
        write(&path, b"three").unwrap();
        assert_eq!(std::fs::read(path.with_extension("tmp")).unwrap(), b"someone else's");
        std::fs::remove_file(path.with_extension("tmp")).unwrap();
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_symlink_is_followed_and_kept() {
        let dir = scratch("link");
        let real = dir.join("real.toml");
        let link = dir.join("link.toml");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(mode(&real), 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn concurrent_writers_never_collide() {
        let dir = scratch("race");
        let path = dir.join("state.json");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write(path, &[b'a' + i; 64]).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(text.iter().all(|&b| b == text[0]), "one writer's content, whole");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_directory_is_an_error_and_leaves_nothing() {
        let dir = scratch("missing");
        let e = write(&dir.join("no/such/dir/file"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).ok();
    }
}
