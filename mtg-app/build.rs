//! Sets `MTG_MULTI_VERSION` for `--version`: the crate version, plus the git commit when
//! `MTG_MULTI_COMMIT` is set or `git` can tell (no network involved); just the version when
//! neither works (e.g. a source tarball).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MTG_MULTI_COMMIT");
    let version = env!("CARGO_PKG_VERSION");
    let commit = std::env::var("MTG_MULTI_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Rebuild when HEAD moves: the HEAD file, the branch it points to, packed refs (only
        // files that exist: a missing one would rerun this script on every build).
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            if let Some(p) = git(&["rev-parse", "--git-path", name]).filter(|p| Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    match commit {
        Some(commit) => println!("cargo:rustc-env=MTG_MULTI_VERSION={version} (commit {commit})"),
        None => println!("cargo:rustc-env=MTG_MULTI_VERSION={version}"),
    }
}
