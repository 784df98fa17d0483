//! A real SOCKS5 server for tests: Debian's `microsocks` on a free loopback port, optionally
//! with a user and password, optionally binding its outgoing connections to another loopback
//! address (so a fake DC can tell which server a session came through). Killed on drop.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `microsocks` binary (Debian package `microsocks`).
pub const BINARY: &str = "microsocks";

/// How long a started server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct SocksOptions {
    /// User and password the server requires (none: no authentication).
    pub credentials: Option<(String, String)>,
    /// Loopback address the server's outgoing connections come from (default: the OS picks).
    pub outgoing: Option<IpAddr>,
}

/// A running `microsocks`; killed when dropped.
#[derive(Debug)]
pub struct SocksServer {
    addr: SocketAddr,
    child: Option<Child>,
}

impl SocksServer {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::start_with(&SocksOptions::default())
    }

    /// Starts a server with `options` on a free `127.0.0.1` port and waits until it accepts.
    pub fn start_with(options: &SocksOptions) -> Self {
        let mut last = None;
        // A freed port can be taken by someone else before microsocks binds it: retry a few.
        for _ in 0..5 {
            match Self::try_start(options) {
                Ok(server) => return server,
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot start {BINARY} (apt-get install microsocks): {last:?}");
    }

    fn try_start(options: &SocksOptions) -> io::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(BINARY);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((user, password)) = &options.credentials {
            cmd.args(["-u", user, "-P", password]);
        }
        if let Some(ip) = options.outgoing {
            assert!(ip.is_loopback(), "tests only talk to loopback");
            cmd.args(["-b", &ip.to_string()]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let mut server = Self { addr, child: Some(child) };
        let until = Instant::now() + START_TIMEOUT;
        while Instant::now() < until {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(child) = &mut server.child
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!("{BINARY} exited: {status}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("{BINARY} did not listen on {addr}")))
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `socks5://[user:password@]127.0.0.1:PORT` for `[network] proxies`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("socks5://{user}:{password}@{}", self.addr),
            None => format!("socks5://{}", self.addr),
        }
    }

    /// Kills the server now (every connection through it closes).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
