//! Learning the doppelganger's statistics from real HTTPS pages (reference §4.f): sequential
//! GETs made directly (never through `[network] proxies`) over a recording socket, which sees
//! every TLS record as it arrives and every write of the client.
//!
//! ```text
//! raid: for each URL, `repeats` times: probe(url) ─► durations (ms) + certificate size
//!       └─► Samples (last 4096 of each) ─► refit ─► new sessions use the statistics
//! ```
//! Blocking code: the engine runs a raid on a blocking thread.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtg_proto::doppel::{FlightObserver, Samples};
use rustls::pki_types::ServerName;

/// Most response bytes one probe reads before it stops.
const BODY_LIMIT: usize = 8 << 20;

/// What doppelganger learning does (`[defense.doppelganger]`): the control plane's part of it;
/// the shaping switches (`drs`, `pacing`) are read by sessions from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnSettings {
    /// HTTPS pages to learn the statistics from (empty: no learning, the built-in ones stay).
    pub urls: Vec<String>,
    /// GETs of every URL per raid.
    pub repeats_per_raid: u32,
    /// Time between raids.
    pub raid_each: Duration,
    /// Timeout of one GET (`[network.timeout] http`).
    pub http_timeout: Duration,
}

impl LearnSettings {
    /// The learning `config` asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            urls: config.doppelganger.urls.clone(),
            repeats_per_raid: config.doppelganger.repeats_per_raid,
            raid_each: config.doppelganger.raid_each,
            http_timeout: config.network.timeout.http,
        }
    }
}

/// What one GET showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Inter-record durations before each ApplicationData record, in milliseconds.
    pub durations_ms: Vec<f64>,
    /// The certificate-flight size, when the handshake had one (TLS 1.3 with a CCS).
    pub cert_size: Option<u32>,
}

/// What one raid did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaidReport {
    /// GETs that completed.
    pub gets: usize,
    /// GETs that failed.
    pub failed: usize,
    /// Durations recorded.
    pub durations: usize,
    /// Certificate sizes recorded.
    pub cert_sizes: usize,
}

/// The TLS client of real probes: the web's root certificates, normal verification, HTTP/1.1.
pub fn web_tls_config() -> Arc<rustls::ClientConfig> {
    crate::tls_client::client_config(crate::tls_client::web_roots(), Some(b"http/1.1"))
}

/// `count` GETs of every URL in turn, adding what they show to `samples`. Failures are
/// logged (URL password redacted) and counted.
pub fn raid(
    urls: &[String],
    count: u32,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
    samples: &mut Samples,
) -> RaidReport {
    let mut report = RaidReport::default();
    for url in urls {
        for _ in 0..count {
            match probe(url, tls, timeout) {
                Ok(seen) => {
                    report.gets += 1;
                    report.durations += seen.durations_ms.len();
                    for ms in seen.durations_ms {
                        samples.add_duration_ms(ms);
                    }
                    if let Some(size) = seen.cert_size {
                        report.cert_sizes += 1;
                        samples.add_cert_size(size);
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::debug!(error = %e, "doppelganger probe failed");
                }
            }
        }
    }
    report
}

/// One GET of `url` (`https://host[:port]/path`) within `timeout`, always with a full
/// handshake (session resumption off: a resumed handshake has no certificate to measure).
pub fn probe(url: &str, tls: &Arc<rustls::ClientConfig>, timeout: Duration) -> Result<Probe, String> {
    let shown = crate::config::redacted(url);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("GET {shown}: {what}: {e}");
    let uri: ureq::http::Uri = url.parse().map_err(|e| fail("bad URL", &e))?;
    let host = uri.host().ok_or_else(|| format!("GET {shown}: no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let deadline = Instant::now() + timeout;

    let addr = first_addr(bare, port).map_err(|e| fail("resolving", &e))?;
    let socket = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail("connecting", &e))?;
    socket.set_nodelay(true).map_err(|e| fail("socket", &e))?;
    let name = ServerName::try_from(bare.to_owned()).map_err(|e| fail("server name", &e))?;
    let mut config = rustls::ClientConfig::clone(tls);
    config.resumption = rustls::client::Resumption::disabled();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| fail("TLS", &e))?;
    let recording = Recording::new(socket);
    let mut stream = rustls::StreamOwned::new(connection, recording);

    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        crate::http_fetch::USER_AGENT
    );
    stream.sock.limit(deadline).map_err(|e| fail("socket", &e))?;
    stream.write_all(request.as_bytes()).map_err(|e| fail("sending", &e))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0;
    loop {
        stream.sock.limit(deadline).map_err(|e| fail("reading", &e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                read += n;
                if read >= BODY_LIMIT {
                    break;
                }
            }
            // A server that closes without close_notify: the answer is complete enough.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && read > 0 => break,
            Err(e) => return Err(fail("reading", &e)),
        }
    }
    let recording = stream.sock;
    Ok(Probe { cert_size: recording.observer.cert_size(), durations_ms: recording.durations_ms })
}

fn first_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// A socket that shows every byte read and written to a [`FlightObserver`].
struct Recording {
    socket: TcpStream,
    origin: Instant,
    observer: FlightObserver,
    durations_ms: Vec<f64>,
}

impl Recording {
    fn new(socket: TcpStream) -> Self {
        Self { socket, origin: Instant::now(), observer: FlightObserver::new(), durations_ms: Vec::new() }
    }

    /// Bounds the next reads and writes by `deadline`; an error once it has passed.
    fn limit(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        self.socket.set_read_timeout(Some(left))?;
        self.socket.set_write_timeout(Some(left))
    }
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        let durations = &mut self.durations_ms;
        self.observer.server_bytes(&buf[..n], self.origin.elapsed(), |d| {
            durations.push(d.as_secs_f64() * 1000.0);
        });
        Ok(n)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.socket.write(buf)?;
        self.observer.client_bytes(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}
