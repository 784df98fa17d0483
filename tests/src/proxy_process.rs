//! The real proxy as a child process (the `mtg-proxy-process` binary of this crate, which
//! serves like `mtg-multi run`), so a test can account for the proxy alone: its RSS, open
//! descriptors and CPU time from `/proc/PID`, and everything it logs on stderr.
//!
//! ```text
//! config text ─► temp file ─► [prlimit --nofile=N:N] mtg-proxy-process FILE ─► stderr reader
//!                                         │                                      (log lines)
//!                            /proc/PID/{status,fd,stat} ◄─ rss_kib, fds, cpu_seconds
//! ```
//! The binary's path is only known to integration tests: pass
//! `env!("CARGO_BIN_EXE_mtg-proxy-process")`. The child is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::temp_file::TempFile;

/// How to start the child.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Run it under `prlimit --nofile=N:N` (soft and hard descriptor limit).
    pub nofile: Option<u64>,
    /// `RUST_LOG` for the child (unset: the config's level).
    pub rust_log: Option<String>,
    /// More environment variables for the child (e.g. `SSL_CERT_FILE`).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Log {
    /// The lines so far, and whether stderr has closed (the child exited).
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

impl Log {
    fn text(&self) -> std::sync::MutexGuard<'_, (String, bool)> {
        self.text.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running proxy process.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    api: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    config_path: PathBuf,
    /// The temp directory of a config this handle wrote (removed with it on drop).
    own_config: Option<TempFile>,
    log: Arc<Log>,
    reader: Option<JoinHandle<()>>,
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, 100 if unknown).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Takes `name=[...]`'s first quoted address, or `name=Some(...)`'s address, from a log line
/// (a text line, or a JSON line (`log-format = "json"`) whose field `name` holds that text).
fn logged_addr(line: &str, name: &str) -> Option<SocketAddr> {
    if line.trim_start().starts_with('{') {
        let object: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let field = object.get(name)?.as_str()?;
        return logged_addr(&format!("{name}={field}"), name);
    }
    let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
    let rest = rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("Some("))?;
    let end = rest.find(['"', ')'])?;
    rest[..end].parse().ok()
}

/// The soft and hard `RLIMIT_NOFILE` of this process (`/proc/self/limits`).
pub fn fd_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    let soft = numbers.next().expect("soft limit");
    (soft, numbers.next().unwrap_or(soft))
}

/// Raises this process's soft descriptor limit to at least `want` with `prlimit --pid`
/// (children such as the proxy process inherit it): past the hard limit as root, else up to
/// it. Returns the soft limit now.
pub fn raise_fd_limit(want: u64) -> u64 {
    let set = |soft: u64, hard: u64| {
        let _ = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={soft}:{hard}"))
            .stderr(Stdio::null())
            .status();
    };
    let (soft, hard) = fd_limits();
    if soft < want {
        set(want, hard.max(want));
        let (soft, hard) = fd_limits();
        if soft < want {
            set(hard, hard);
        }
    }
    fd_limits().0
}

static CONFIGS: AtomicUsize = AtomicUsize::new(0);

/// `config` with `learn-from-fronting = false` unless it sets the key itself.
pub fn without_flight_learning(config: &str) -> String {
    const TABLE: &str = "[defense.doppelganger]";
    if config.contains("learn-from-fronting") {
        config.to_owned()
    } else if config.contains(TABLE) {
        config.replacen(TABLE, "[defense.doppelganger]\nlearn-from-fronting = false", 1)
    } else {
        format!("{config}\n{TABLE}\nlearn-from-fronting = false\n")
    }
}

impl ProxyProcess {
    /// Writes `config` (its `bind-to` should be `127.0.0.1:0`) to a temp file, starts
    /// `binary` on it and waits until it logs `serving` (up to 20 s). Panics with the log if
    /// it does not.
    ///
    /// Learning the fronting site's flight is turned off unless `config` names
    /// `learn-from-fronting` (its probes would count as connections to the test's site).
    pub fn start(binary: &str, config: &str, launch: &Launch) -> Self {
        let name = format!("config-{}.toml", CONFIGS.fetch_add(1, Ordering::Relaxed));
        let file = TempFile::new("mtg-proxy-process-", &name, &without_flight_learning(config));
        Self::spawn(binary, file.to_path_buf(), Some(file), launch)
    }

    /// Starts `binary` on an existing config file (kept on drop: a test can restart the proxy
    /// on what an earlier one wrote) and waits until it logs `serving`, like [`Self::start`].
    pub fn start_file(binary: &str, config_path: &std::path::Path, launch: &Launch) -> Self {
        Self::spawn(binary, config_path.to_owned(), None, launch)
    }

    fn spawn(binary: &str, config_path: PathBuf, own_config: Option<TempFile>, launch: &Launch) -> Self {
        let mut command = match launch.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command.arg(&config_path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        match &launch.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        // The environment overlays would replace the test's users, tag or address.
        for overlay in
            ["SECRET", "MTG_SECRET", "SECRET_HOST", "MTG_SECRET_HOST", "TAG", "MTG_TAG", "MTG_BIND_TO"]
        {
            command.env_remove(overlay);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut text = log.text();
                    text.0.push_str(&line);
                    text.0.push('\n');
                    log.grew.notify_all();
                }
                log.text().1 = true;
                log.grew.notify_all();
            })
        };
        let mut process = Self {
            child,
            addr: "0.0.0.0:0".parse().expect("literal"),
            api: None,
            metrics: None,
            config_path,
            own_config,
            log,
            reader: Some(reader),
        };
        let Some(line) = process.wait_for_line("serving", Duration::from_secs(20)) else {
            panic!("the proxy did not start serving:\n{}", process.log());
        };
        process.addr = logged_addr(&line, "listen").unwrap_or_else(|| panic!("no address in {line:?}"));
        process.api = logged_addr(&line, "api");
        process.metrics = logged_addr(&line, "metrics");
        process
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the API listens (when configured).
    pub fn api(&self) -> Option<SocketAddr> {
        self.api
    }

    /// Where the Prometheus endpoint listens (when enabled).
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The config file the child reads (rewrite it, then reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.text().0.clone()
    }

    /// Waits up to `timeout` for a log line containing `needle`; returns the first such line
    /// (`None` also when the child closed stderr first).
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_lines(needle, 1, timeout)
    }

    /// Lines containing `needle` logged so far.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.log.text().0.lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits up to `timeout` until `count` log lines contain `needle`; returns the last of
    /// them (`None` also when the child closed stderr first).
    pub fn wait_for_lines(&self, needle: &str, count: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut text = self.log.text();
        loop {
            if let Some(line) = text.0.lines().filter(|l| l.contains(needle)).nth(count.saturating_sub(1)) {
                return Some(line.to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || text.1 {
                return None;
            }
            text = self.log.grew.wait_timeout(text, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc/{}/{name}: {e}", self.pid()))
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.proc_file("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(Iterator::count).expect("list /proc/PID/fd")
    }

    /// The descriptor count once it has held still for 300 ms (at most 5 s of waiting): a
    /// baseline that lazily opened runtime descriptors do not skew.
    pub fn settled_fds(&self) -> usize {
        let until = Instant::now() + Duration::from_secs(5);
        let mut last = self.fds();
        let mut since = Instant::now();
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.fds();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(300) {
                break;
            }
        }
        last
    }

    /// User plus system CPU time of every thread so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = self.proc_file("stat");
        // The command name (field 2) may hold spaces; fields after its ')' are plain.
        let after = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / clock_ticks()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the status and the whole
    /// log. Panics if it does not exit in time.
    pub fn stop(mut self, timeout: Duration) -> (ExitStatus, String) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the proxy") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the proxy did not stop within {timeout:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The config's temp directory goes with `own_config`, after the process is gone.
        drop(self.own_config.take());
    }
}

#[cfg(test)]
mod tests {
    use super::logged_addr;

    #[test]
    fn addresses_come_from_the_serving_line() {
        let line = "INFO mtg_app::run: serving users=1 hosts={\"a\"} listen=[\"127.0.0.1:4321\", \"[::1]:5\"] \
                    api=Some(127.0.0.1:999)";
        assert_eq!(logged_addr(line, "listen"), Some("127.0.0.1:4321".parse().unwrap()));
        assert_eq!(logged_addr(line, "api"), Some("127.0.0.1:999".parse().unwrap()));
        assert_eq!(logged_addr("serving listen=[\"x\"] api=None", "api"), None);
        let json = r#"{"timestamp":"t","level":"INFO","message":"serving","listen":"[\"127.0.0.1:4321\"]","api":"Some(127.0.0.1:9)","metrics":"None"}"#;
        assert_eq!(logged_addr(json, "listen"), Some("127.0.0.1:4321".parse().unwrap()));
        assert_eq!(logged_addr(json, "api"), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(logged_addr(json, "metrics"), None);
    }
}
