//! A local fronting website: HTTPS on `127.0.0.1:0` with a self-signed certificate for one
//! hostname, serving a fixed page over HTTP/1.1, and recording the first bytes of every
//! connection (so a test can check that the proxy replayed a ClientHello byte for byte).
//!
//! The server runs on the shared runtime ([`crate::runtime`]) and stops when dropped.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::runtime;

/// Bytes of each connection kept in [`FrontConnection::first_bytes`].
pub const FIRST_BYTES_LIMIT: usize = 64 * 1024;

/// The page served at `GET /`.
pub const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>mtg-tests fronting site</title></head>\
<body><h1>It works</h1><p>mtg-tests-fronting-marker-5c1e</p></body></html>\n";

/// What the site saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConnection {
    /// The connecting address (the proxy's, when fronted).
    pub peer: SocketAddr,
    /// The first bytes received, raw (the TLS ClientHello first), up to [`FIRST_BYTES_LIMIT`].
    pub first_bytes: Vec<u8>,
    /// Whether the TLS handshake completed.
    pub tls_ok: bool,
    /// The HTTP request lines served (`GET / HTTP/1.1`).
    pub requests: Vec<String>,
    /// Whether the connection has ended.
    pub ended: bool,
}

#[derive(Debug, Default)]
struct State {
    conns: Mutex<Vec<FrontConnection>>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Vec<FrontConnection>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running fronting website; stops when dropped.
#[derive(Debug)]
pub struct FrontingSite {
    addr: SocketAddr,
    host: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FrontingSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl FrontingSite {
    /// Starts the site for `host` (the certificate's only name) on `127.0.0.1:0`.
    pub fn start(host: &str) -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("self-signed certificate");
        let cert_pem = certified.cert.pem();
        let cert_der = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fronting site");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("fronting site address");
        let state = Arc::new(State::default());
        let task = runtime::handle().spawn(accept_loop(std_listener, acceptor, Arc::clone(&state)));
        Self { addr, host: host.to_owned(), cert_pem, cert_der, state, task }
    }

    /// The listening address (`[domain-fronting] host` / `port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate's hostname.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The certificate in PEM (for `curl --cacert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The body served at `GET /`.
    pub fn page(&self) -> &'static str {
        PAGE
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.state.lock().len()
    }

    /// A copy of what every connection saw, in accept order.
    pub fn snapshot(&self) -> Vec<FrontConnection> {
        self.state.lock().clone()
    }

    /// Blocks (polling) until `pred` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[FrontConnection]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.state.lock()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A rustls client configuration that trusts only this site's certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).expect("trust the site certificate");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// An HTTP response read by [`https_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header block (status line excluded).
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

/// `GET /` over TLS to `addr` with SNI `host`, trusting `config` (for example the site's own
/// [`FrontingSite::client_config`], when `addr` is a proxy that should front to the site).
/// Needs a tokio runtime.
pub async fn https_get(
    addr: SocketAddr,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<HttpResponse> {
    crate::ensure_loopback(addr)?;
    let tcp = TcpStream::connect(addr).await?;
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    // A server that closes without close_notify ends the read with an error after the data.
    if let Err(e) = tls.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(e);
    }
    parse_response(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    Some(HttpResponse { status, headers: headers.to_owned(), body: raw[end + 4..].to_vec() })
}

async fn accept_loop(std_listener: std::net::TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let listener = TcpListener::from_std(std_listener).expect("register the fronting listener");
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let index = {
            let mut list = state.lock();
            list.push(FrontConnection {
                peer,
                first_bytes: Vec::new(),
                tls_ok: false,
                requests: Vec::new(),
                ended: false,
            });
            list.len() - 1
        };
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let stream = Recording { inner: stream, state: Arc::clone(&state), index };
            let _ = serve(stream, acceptor, &state, index).await;
            state.lock()[index].ended = true;
        });
    }
}

async fn serve(stream: Recording, acceptor: TlsAcceptor, state: &State, index: usize) -> io::Result<()> {
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await??;
    state.lock()[index].tls_ok = true;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || request.len() > 16 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line =
        String::from_utf8_lossy(request.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
    let found = line.starts_with("GET / ") || line.starts_with("HEAD / ");
    state.lock()[index].requests.push(line.clone());
    let (status, body) = if found { ("200 OK", PAGE) } else { ("404 Not Found", "not found\n") };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !line.starts_with("HEAD ") {
        response.push_str(body);
    }
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

/// A TCP stream that copies the first bytes it reads into the connection's record.
struct Recording {
    inner: TcpStream,
    state: Arc<State>,
    index: usize,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let mut list = self.state.lock();
            let first = &mut list[self.index].first_bytes;
            let room = FIRST_BYTES_LIMIT.saturating_sub(first.len());
            first.extend_from_slice(&new[..new.len().min(room)]);
        }
        poll
    }
}

impl AsyncWrite for Recording {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
