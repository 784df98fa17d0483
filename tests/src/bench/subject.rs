//! What gets measured: the proxy (a release binary run as a child process with a generated
//! config, or in this process for the smoke test) and the baseline plain-copy relay (a child
//! process: `mtg-bench plain-relay LISTEN TARGET`).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mtg_proto::Secret;

use super::proc_stats::{self, ProcSample};
use super::wire::Framing;
use crate::proxy_under_test::ProxyUnderTest;

/// How long a started subject may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The hostname of every benchmark secret (fronting goes to the configured site, not here).
pub const HOST: &str = "localhost";

/// Where the proxy comes from.
#[derive(Debug, Clone)]
pub enum ProxySource {
    /// A built `mtg-multi` binary, run as a child process.
    Binary(PathBuf),
    /// The proxy engine inside this process (CPU and memory figures then include the load
    /// generator: for the smoke test only).
    InProcess,
}

/// What the proxy under benchmark is configured with.
#[derive(Debug, Clone)]
pub struct ProxySetup {
    /// The users, in order (`u00000`, `u00001`, ...).
    pub users: Vec<Secret>,
    /// Every DC is overridden to this address.
    pub dc: SocketAddr,
    /// The fronting site (`[domain-fronting]` host and port).
    pub site: SocketAddr,
    /// A `[middle-proxy]` table: set, every user gets [`AD_TAG`] and is routed through a
    /// middle proxy.
    pub middle_proxy: Option<String>,
    /// Every user's `rate-limit` (`[secret-limits-default]`), when set.
    pub rate_limit: Option<String>,
    /// `fast-mode = true`: DC→client bytes pass without cryptography.
    pub fast_mode: bool,
    /// `[network] zero-copy` (the proxy's default, on, when true).
    pub zero_copy: bool,
}

/// The ad tag of the middle-proxy modes.
pub const AD_TAG: &str = "0123456789abcdef0123456789abcdef";

impl ProxySetup {
    /// `count` users with random keys on [`HOST`].
    pub fn with_users(count: usize, dc: SocketAddr, site: SocketAddr) -> Self {
        let users =
            (0..count).map(|_| Secret::fake_tls(rand::random(), HOST).expect("a valid ee secret")).collect();
        Self { users, dc, site, middle_proxy: None, rate_limit: None, fast_mode: false, zero_copy: true }
    }

    /// The config text, listening on `bind`.
    pub fn config(&self, bind: SocketAddr) -> String {
        let mut text = format!("bind-to = \"{bind}\"\nconcurrency = 65000\n");
        if self.middle_proxy.is_some() {
            text.push_str(&format!("ad-tag = \"{AD_TAG}\"\n"));
        }
        if self.fast_mode {
            text.push_str("fast-mode = true\n");
        }
        text.push_str("\n[secrets]\n");
        for (i, user) in self.users.iter().enumerate() {
            text.push_str(&format!("u{i:05} = \"{}\"\n", user.to_hex()));
        }
        text.push_str(&format!(
            "\n[domain-fronting]\nhost = \"{}\"\nport = {}\n\n[network.timeout]\nidle = \"30m\"\n\n\
             [network.dc-overrides]\n",
            self.site.ip(),
            self.site.port()
        ));
        for dc in [1, 2, 3, 4, 5] {
            text.push_str(&format!("{dc} = [\"{}\"]\n", self.dc));
        }
        if let Some(section) = &self.middle_proxy {
            text.push('\n');
            text.push_str(section);
        }
        if !self.zero_copy {
            text.push_str("\n[network]\nzero-copy = false\n");
        }
        if let Some(rate) = &self.rate_limit {
            text.push_str(&format!("\n[secret-limits-default]\nrate-limit = {rate:?}\n"));
        }
        text
    }
}

enum Holder {
    Child {
        child: Child,
        dir: Option<PathBuf>,
    },
    /// Kept alive (stopped on drop) for as long as the subject.
    InProcess(#[allow(dead_code)] Box<ProxyUnderTest>),
}

/// A started subject: where clients connect, how it frames, which process to watch.
pub struct Subject {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// How the client must count what it receives.
    pub framing: Framing,
    /// The process whose CPU and memory are reported.
    pub pid: u32,
    holder: Holder,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").field("addr", &self.addr).field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Holder::Child { child, dir } = &mut self.holder {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Waits until `addr` accepts a TCP connection (the probe connection is closed at once).
async fn wait_listening(addr: SocketAddr, child: &mut Child) -> io::Result<()> {
    let until = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("the subject exited before listening: {status}")));
        }
        if Instant::now() >= until {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("nothing listens on {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Subject {
    /// Starts the proxy for `setup`.
    pub async fn proxy(source: &ProxySource, setup: &ProxySetup) -> io::Result<Self> {
        match source {
            ProxySource::InProcess => {
                let proxy = ProxyUnderTest::start(&setup.config("127.0.0.1:1".parse().expect("literal")));
                Ok(Self {
                    addr: proxy.addr(),
                    framing: Framing::Tls,
                    pid: std::process::id(),
                    holder: Holder::InProcess(Box::new(proxy)),
                })
            }
            ProxySource::Binary(binary) => {
                let addr = free_port()?;
                let dir = unique_dir("mtg-bench")?;
                let config = dir.join("config.toml");
                std::fs::write(&config, setup.config(addr))?;
                let log = std::fs::File::create(dir.join("proxy.log"))?;
                let mut command = Command::new(binary);
                command.arg("run").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
                Self::spawn(command, addr, Framing::Tls, Some(dir)).await
            }
        }
    }

    /// Starts the plain-copy relay (`bench` = the `mtg-bench` binary) in front of `target`.
    pub async fn plain_relay(bench: &Path, target: SocketAddr) -> io::Result<Self> {
        let addr = free_port()?;
        let mut command = Command::new(bench);
        command
            .arg("plain-relay")
            .arg(addr.to_string())
            .arg(target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Self::spawn(command, addr, Framing::Raw, None).await
    }

    async fn spawn(
        mut command: Command,
        addr: SocketAddr,
        framing: Framing,
        dir: Option<PathBuf>,
    ) -> io::Result<Self> {
        let mut child = command.spawn()?;
        let pid = child.id();
        if let Err(e) = wait_listening(addr, &mut child).await {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Self { addr, framing, pid, holder: Holder::Child { child, dir } })
    }

    /// CPU seconds and memory of the subject's process now.
    pub fn sample(&self) -> io::Result<ProcSample> {
        proc_stats::sample(self.pid)
    }
}

/// A fresh directory under the temporary directory, named `prefix`-pid-nanos.
pub(super) fn unique_dir(prefix: &str) -> io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
