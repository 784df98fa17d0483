//! Running the real third-party clients (`tests/clients/*.py`: TDLib through PyPI `tdjson`,
//! Telethon) and reading their one-line JSON results.
//!
//! The scripts refuse to run outside a loopback-only network namespace, so call these from a
//! test body that went through [`crate::netns::enter`]. Install the clients with
//! `pip install -r tests/clients/requirements.txt`.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mtg_proto::Secret;

/// The directory of the scripts (`tests/clients`).
pub fn clients_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The Python interpreter: `$MTG_TESTS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("MTG_TESTS_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// `Ok` if the Python modules the scripts need import, else what to install.
pub fn check_installed() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import tdjson, telethon"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}; install with: pip install -r {}/requirements.txt",
            String::from_utf8_lossy(&out.stderr).trim(),
            clients_dir().display()
        ))
    }
}

/// A script's result.
#[derive(Debug, Clone)]
pub struct ClientResult {
    /// The JSON result line (`Null` if none was printed).
    pub json: serde_json::Value,
    /// Everything the script wrote to stdout.
    pub stdout: String,
    /// Everything the script wrote to stderr.
    pub stderr: String,
    /// The exit code (`None` if killed after the timeout).
    pub code: Option<i32>,
}

impl ClientResult {
    /// The `ok` field of the result.
    pub fn ok(&self) -> bool {
        self.json.get("ok").and_then(serde_json::Value::as_bool).unwrap_or(false)
    }
}

/// Runs `tests/clients/<script>` with `args`, killing it after `timeout`.
pub fn run_script(script: &str, args: &[String], timeout: Duration) -> ClientResult {
    let mut child = Command::new(python())
        .arg(clients_dir().join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client script");
    let mut stdout_pipe = child.stdout.take().expect("stdout pipe");
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for the client script") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    ClientResult { json, stdout, stderr, code }
}

/// TDLib `pingProxy` through the proxy at `proxy` with `secret` (hex form), waiting up to
/// `timeout` for TDLib's answer.
pub fn tdlib_ping(proxy: SocketAddr, secret: &Secret, timeout: Duration) -> ClientResult {
    let args = vec![
        "--server".to_owned(),
        proxy.ip().to_string(),
        "--port".to_owned(),
        proxy.port().to_string(),
        "--secret".to_owned(),
        secret.to_hex(),
        "--timeout".to_owned(),
        timeout.as_secs_f64().to_string(),
    ];
    run_script("tdlib_ping.py", &args, timeout + Duration::from_secs(20))
}

/// Telethon connecting through the proxy at `proxy` with a `dd` `secret` to DC `dc`.
pub fn telethon_dd(proxy: SocketAddr, secret: &Secret, dc: i16, timeout: Duration) -> ClientResult {
    let args = vec![
        "--server".to_owned(),
        proxy.ip().to_string(),
        "--port".to_owned(),
        proxy.port().to_string(),
        "--secret".to_owned(),
        secret.to_hex(),
        "--dc".to_owned(),
        dc.to_string(),
        "--timeout".to_owned(),
        timeout.as_secs_f64().to_string(),
    ];
    run_script("telethon_dd.py", &args, timeout + Duration::from_secs(20))
}
