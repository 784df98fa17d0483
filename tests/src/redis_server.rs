//! A real `redis-server` (Debian package `redis-server`) for the fleet tests, on a free
//! loopback port with its own temporary directory. It keeps its data in an append-only file
//! fsynced on every write, so [`RedisServer::stop`] then [`RedisServer::start_again`] on the
//! same port is an outage, not a data loss. Ready = `PING` answered. [`RedisServer::start_tls`]
//! serves TLS only, with a certificate for 127.0.0.1 from a private CA of its own.

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
    tls: bool,
}

impl RedisServer {
    /// Starts one on a free loopback port, requiring `password` if given.
    pub fn start(password: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("mtg-redis-").tempdir().expect("a temp dir");
        let addr = crate::config_text::closed_port();
        let mut server = Self { child: None, addr, password: password.map(str::to_owned), dir, tls: false };
        server.start_again();
        server
    }

    /// Starts one serving TLS only (`rediss://`), its certificate for 127.0.0.1 issued by a
    /// private CA whose certificate is [`Self::ca_file`].
    pub fn start_tls(password: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("mtg-redis-").tempdir().expect("a temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "mtg test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let key = rcgen::KeyPair::generate().expect("a server key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
        let cert =
            leaf.signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key)).expect("the server certificate");
        for (name, pem) in
            [("ca.pem", ca_cert.pem()), ("server.pem", cert.pem()), ("server.key", key.serialize_pem())]
        {
            std::fs::write(dir.path().join(name), pem).expect("write a TLS file");
        }
        let addr = crate::config_text::closed_port();
        let mut server = Self { child: None, addr, password: password.map(str::to_owned), dir, tls: true };
        server.start_again();
        server
    }

    /// The private CA's certificate (PEM) of a [`Self::start_tls`] server.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts it again on the same port and data (after [`Self::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        let port = self.addr.port().to_string();
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            command.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
            command
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"));
            command.arg("--tls-ca-cert-file").arg(file("ca.pem"));
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1"])
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
        // Over TLS, listening is ready enough (the proxy's own connection is the real check).
        let ready = |s: &Self| {
            if s.tls { TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)).is_ok() } else { s.ping() }
        };
        while !ready(self) {
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
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@{}/0", self.addr),
            None => format!("{scheme}://{}/0", self.addr),
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
