//! A file in a directory of its own that is removed, with the directory, when the value is
//! dropped: tests leave nothing behind in the temp directory.

use std::ops::Deref;
use std::path::PathBuf;

/// A file named `name` holding the given text, in a fresh temp directory owned by this value.
#[derive(Debug)]
pub struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempFile {
    /// Writes `body` to `name` in a new directory whose name starts with `prefix`.
    pub fn new(prefix: &str, name: &str, body: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write the temp file");
        Self { _dir: dir, path }
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl AsRef<std::path::Path> for TempFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl Deref for TempFile {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.path
    }
}
