//! A real OpenSSL fronting site: `openssl s_server -www` on a loopback port with a self-signed
//! certificate for one hostname, so a test can compare the proxy's first flight with the one
//! a widely deployed TLS stack sends (record types and sizes, ServerHello layout).
//!
//! ```text
//! rcgen cert + key ─► temp PEM files ─► openssl s_server -accept 127.0.0.1:PORT -www
//!                                        stdout "ACCEPT" ─► ready (an event, not a sleep)
//! ```
//! `s_server` serves one connection after another, which is enough for flight captures. The
//! child is killed when the value is dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::temp_file::TempFile;

/// How long `s_server` may take to print `ACCEPT`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a new port when the one picked was taken in between.
const ATTEMPTS: usize = 5;
/// Bytes of `s_server`'s stderr kept for failure messages.
const STDERR_KEEP: usize = 16 * 1024;

/// A running `openssl s_server`; killed when dropped.
#[derive(Debug)]
pub struct OpensslSite {
    child: Child,
    addr: SocketAddr,
    host: String,
    _cert: TempFile,
    _key: TempFile,
}

/// A loopback port free when asked (bound on `127.0.0.1:0`, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe address").port()
}

impl OpensslSite {
    /// Starts `s_server` for `host` (the certificate's only name) on a free loopback port and
    /// waits until it prints `ACCEPT`. Panics, with what `s_server` said, if it never does.
    pub fn start(host: &str) -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("self-signed certificate");
        let cert = TempFile::new("mtg-openssl-site-", "cert.pem", &certified.cert.pem());
        let key = TempFile::new("mtg-openssl-site-", "key.pem", &certified.signing_key.serialize_pem());
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match spawn(addr, &cert, &key) {
                Ok(child) => return Self { child, addr, host: host.to_owned(), _cert: cert, _key: key },
                Err(e) => failures.push(e),
            }
        }
        panic!("openssl s_server did not start in {ATTEMPTS} attempts: {}", failures.join("; "));
    }

    /// The listening address (`[domain-fronting] host` / `port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate's hostname.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for OpensslSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `s_server` on `addr` and waits for `ACCEPT` on its stdout; on failure (the port was
/// taken, the binary is missing) the child is gone and the error says what it printed.
fn spawn(addr: SocketAddr, cert: &TempFile, key: &TempFile) -> Result<Child, String> {
    let mut child = Command::new("openssl")
        .arg("s_server")
        .arg("-accept")
        .arg(addr.to_string())
        .arg("-cert")
        .arg(cert.as_path())
        .arg("-key")
        .arg(key.as_path())
        .arg("-www")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    // Both pipes are drained for the child's whole life, so it never blocks on a full pipe.
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ACCEPT" {
                let _ = ready_tx.send(());
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            if text.len() < STDERR_KEEP {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        text
    });
    if ready_rx.recv_timeout(READY_TIMEOUT).is_ok() {
        return Ok(child);
    }
    let _ = child.kill();
    let status = child.wait();
    // The child is gone, so its stderr has closed and the reader returns what it said.
    let said = stderr_reader.join().unwrap_or_default();
    Err(format!("s_server on {addr} did not print ACCEPT ({status:?}): {}", said.trim()))
}
