//! Running tests inside a network namespace that has only loopback, so that nothing a test
//! starts (TDLib, Telethon, the proxy) can reach any other address.
//!
//! The pattern: a test that needs it re-executes its own test binary, filtered to itself,
//! under `unshare -n` (root is needed; the CI machine runs as root), brings `lo` up and runs
//! its body there. Everything (fake DC, fronting site, proxy, client) is started inside.
//!
//! ```text
//! #[test]
//! fn tdlib_pings_through_the_proxy() {
//!     if !mtg_tests::netns::enter("tdlib_pings_through_the_proxy") {
//!         return; // the body ran (and was checked) in the namespace
//!     }
//!     // From here on: a fresh namespace with only `lo`.
//! }
//! ```

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// Set in the environment of a test re-executed inside the namespace.
pub const ENV_INSIDE: &str = "MTG_TESTS_IN_NETNS";

/// Interface names of the current network namespace (from `/proc/self/net/dev`, which, unlike
/// `/sys/class/net`, follows the namespace of the reading process).
pub fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    text.lines().skip(2).filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned())).collect()
}

/// Whether the current namespace has no interface but `lo`.
pub fn loopback_only() -> bool {
    interfaces().iter().all(|i| i == "lo")
}

/// Panics unless the current namespace has only `lo`.
pub fn assert_loopback_only() {
    let ifaces = interfaces();
    assert!(
        ifaces.iter().all(|i| i == "lo"),
        "expected a loopback-only network namespace, found interfaces {ifaces:?}"
    );
}

/// Whether this process runs as a test re-executed in a loopback-only namespace.
pub fn inside() -> bool {
    std::env::var_os(ENV_INSIDE).is_some() && loopback_only()
}

fn ip_binary() -> PathBuf {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

/// A command that runs `program args…` in a new network namespace with `lo` up, with
/// [`ENV_INSIDE`] set.
pub fn command<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: impl IntoIterator<Item = S>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(format!("{} link set lo up && exec \"$0\" \"$@\"", ip_binary().display()))
        .arg(program)
        .args(args)
        .env(ENV_INSIDE, "1");
    cmd
}

/// Whether a loopback-only namespace can be made here (`unshare -n` works: needs root).
pub fn available() -> bool {
    command("true", std::iter::empty::<&str>()).output().is_ok_and(|o| o.status.success())
}

/// In a test: returns `true` when already inside the namespace (checking it is
/// loopback-only); otherwise re-runs the test named `test_name` (its full path in the test
/// binary, as `cargo test` prints it) inside a new namespace, forwards its output (each line
/// prefixed `netns| `), panics if it failed, and returns `false`.
pub fn enter(test_name: &str) -> bool {
    if std::env::var_os(ENV_INSIDE).is_some() {
        assert_loopback_only();
        return true;
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let args = [test_name, "--exact", "--nocapture", "--test-threads=1"];
    let output = command(&exe, args).output().expect("run unshare (is util-linux installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Prefixed, so that the inner run's summary is not read as one of the outer binary.
    for line in stdout.lines() {
        println!("netns| {line}");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        eprintln!("netns| {line}");
    }
    assert!(output.status.success(), "{test_name} failed inside the network namespace ({})", output.status);
    assert!(
        stdout.contains("1 passed"),
        "{test_name} did not run inside the network namespace (is the name exact?)"
    );
    false
}
