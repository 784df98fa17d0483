//! A real `redis-server` (Debian package `redis-server`) for the fleet tests, on a free
//! loopback port with its own temporary directory. It keeps its data in an append-only file
//! fsynced on every write, so [`RedisServer::stop`] then [`RedisServer::start_again`] on the
//! same port is an outage, not a data loss. Ready = `PING` answered.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free loopback port, requiring `password` if given.
    pub fn start(password: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("mtg-redis-").tempdir().expect("a temp dir");
        let addr = crate::config_text::closed_port();
        let mut server = Self { child: None, addr, password: password.map(str::to_owned), dir };
        server.start_again();
        server
    }

    /// Starts it again on the same port and data (after [`Self::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.addr.port().to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(command.spawn().expect("start redis-server (Debian package redis-server)"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not answer PING within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING` (after `AUTH` when it has a password).
    fn ping(&self) -> bool {
        let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut writer = &stream;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        if let Some(password) = &self.password {
            if writer.write_all(format!("AUTH {password}\r\n").as_bytes()).is_err()
                || reader.read_line(&mut line).is_err()
            {
                return false;
            }
            line.clear();
        }
        writer.write_all(b"PING\r\n").is_ok() && reader.read_line(&mut line).is_ok() && line == "+PONG\r\n"
    }

    /// The URL the proxy is given (with the password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{}/0", self.addr),
            None => format!("redis://{}/0", self.addr),
        }
    }

    /// Stops it (SIGTERM, its data kept) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
