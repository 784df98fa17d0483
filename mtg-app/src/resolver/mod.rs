//! Resolving the names the proxy dials itself (the fronting host, SOCKS5 server names,
//! `doctor`): the OS resolver (through the runtime), or `[network] dns` — DNS over HTTPS, over
//! TLS, or plain UDP (TCP after a truncated answer) — asked for A and AAAA records on the
//! binary's own runtime, through the [`Runtime`] seam.
//!
//! Answers of `[network] dns` are cached for their shortest TTL, at most an hour; failures are
//! not cached. Errors name the host and the server. No timeout of its own (beyond UDP's retry
//! schedule): callers bound a lookup.

mod transport;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RecordType};

use crate::config::Dns;
use crate::runtime::Runtime;
use wire::Answer;

/// Longest time an answer stays cached.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Most names cached; a full cache drops what expired, then everything.
const MAX_CACHED: usize = 1024;

/// How the proxy resolves names: cheap to clone; all clones share one cache.
#[derive(Clone, Default)]
pub struct Resolver {
    configured: Option<Arc<Configured>>,
}

struct Configured {
    dns: Dns,
    /// TLS client settings of DoT (no ALPN) or DoH (`http/1.1`).
    tls: Arc<rustls::ClientConfig>,
    /// Lowercase name → addresses and when they expire.
    cache: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.configured {
            None => f.write_str("Resolver(os)"),
            Some(c) => write!(f, "Resolver({})", c.dns),
        }
    }
}

impl Resolver {
    /// The resolver for `[network] dns`: the OS resolver when `None`. DoH and DoT servers are
    /// verified against the webpki root certificates.
    pub fn new(dns: Option<&Dns>) -> Self {
        Self { configured: dns.map(|dns| Arc::new(Configured::new(dns, crate::tls_client::web_roots()))) }
    }

    /// The resolver for `dns` trusting only `roots` (tests with a local TLS server).
    #[cfg(test)]
    fn with_roots(dns: &Dns, roots: rustls::RootCertStore) -> Self {
        Self { configured: Some(Arc::new(Configured::new(dns, roots))) }
    }

    /// Resolves `host` (a literal IP, bracketed or not, needs no lookup) to addresses on
    /// `port`, IPv4 first. Errors name the host and the resolver. No timeout of its own:
    /// callers bound it.
    pub async fn resolve<R: Runtime>(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let Some(configured) = &self.configured else {
            return R::resolve(host, port).await;
        };
        let ips = configured.lookup::<R>(host).await?;
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

impl Configured {
    fn new(dns: &Dns, roots: rustls::RootCertStore) -> Self {
        let alpn = matches!(dns, Dns::Https { .. }).then_some(b"http/1.1".as_slice());
        Self {
            dns: dns.clone(),
            tls: crate::tls_client::client_config(roots, alpn),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<IpAddr>, Instant)>> {
        // A poisoned lock only means a panic elsewhere mid-insert: the map is whole.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn lookup<R: Runtime>(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let now = Instant::now();
        if let Some((ips, until)) = self.cache().get(&key)
            && *until > now
        {
            return Ok(ips.clone());
        }
        let failed = |kind: io::ErrorKind, e: &dyn fmt::Display| {
            io::Error::new(kind, format!("{host}: {e} (asked {})", self.dns))
        };
        let name = wire::name(&key).map_err(|e| failed(io::ErrorKind::InvalidInput, &e))?;
        let (v4, v6) = futures_util::future::join(
            self.ask::<R>(&name, RecordType::A),
            self.ask::<R>(&name, RecordType::AAAA),
        )
        .await;
        let (mut ips, mut ttl, mut error) = (Vec::new(), None::<u32>, None::<io::Error>);
        for answer in [v4, v6] {
            match answer {
                Ok(Answer::Found { ips: more, ttl: t }) => {
                    ips.extend(more);
                    ttl = match (ttl, t) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    };
                }
                Ok(Answer::NoSuchName) => return Err(failed(io::ErrorKind::NotFound, &"no such name")),
                // `ask` retries over TCP itself.
                Ok(Answer::Truncated) => {}
                Err(e) => error = error.or(Some(e)),
            }
        }
        if ips.is_empty() {
            return Err(match error {
                Some(e) => failed(e.kind(), &e),
                None => failed(io::ErrorKind::NotFound, &"no addresses"),
            });
        }
        let keep = Duration::from_secs(u64::from(ttl.unwrap_or(0))).min(MAX_CACHE_TTL);
        if !keep.is_zero() {
            let mut cache = self.cache();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (ips.clone(), now + keep));
        }
        Ok(ips)
    }

    /// One question to the server, and its answer (over TCP again after a truncated UDP one).
    async fn ask<R: Runtime>(&self, name: &Name, kind: RecordType) -> io::Result<Answer> {
        let question = wire::question(name, kind).map_err(invalid)?;
        let bytes = match &self.dns {
            Dns::Udp(server) => transport::udp::<R>(*server, &question.bytes, question.id).await?,
            Dns::Tls { host, port } => transport::dot::<R>(host, *port, &self.tls, &question.bytes).await?,
            Dns::Https { host, port, path } => {
                transport::doh::<R>(host, *port, path, &self.tls, &question.bytes).await?
            }
        };
        match (wire::answer(&question, &bytes).map_err(invalid)?, &self.dns) {
            (Answer::Truncated, Dns::Udp(server)) => {
                let bytes = transport::tcp::<R>(*server, &question.bytes).await?;
                match wire::answer(&question, &bytes).map_err(invalid)? {
                    Answer::Truncated => Err(invalid("truncated answer over TCP")),
                    answer => Ok(answer),
                }
            }
            (Answer::Truncated, _) => Err(invalid("truncated answer")),
            (answer, _) => Ok(answer),
        }
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::{RData, Record};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::runtime::Selected;

    const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// The zone of the test servers: `site.example` has one A (TTL 300) and one AAAA (TTL 60)
    /// record; every other name is NXDOMAIN.
    fn answer(query: &[u8]) -> Vec<u8> {
        let query = Message::from_vec(query).expect("a DNS query");
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.queries = query.queries.clone();
        for q in &query.queries {
            if q.name.to_ascii() != "site.example." {
                reply.metadata.response_code = ResponseCode::NXDomain;
            } else if q.query_type == RecordType::A {
                reply.add_answer(Record::from_rdata(q.name.clone(), 300, RData::A(A(V4))));
            } else if q.query_type == RecordType::AAAA {
                reply.add_answer(Record::from_rdata(q.name.clone(), 60, RData::AAAA(AAAA(V6))));
            }
        }
        reply.to_vec().expect("encode the answer")
    }

    /// A DoT or DoH server on `127.0.0.1:0` with a fresh self-signed certificate for
    /// 127.0.0.1; serves one query per connection, at most 16 connections.
    struct TlsDnsServer {
        addr: SocketAddr,
        cert: CertificateDer<'static>,
        queries: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl TlsDnsServer {
        fn start(https: bool) -> Self {
            let certified =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
            let cert = certified.cert.der().clone();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server certificate");
            if https {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            let config = Arc::new(config);
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("address");
            let queries = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (count, log) = (queries.clone(), requests.clone());
            std::thread::spawn(move || {
                for tcp in listener.incoming().take(16).flatten() {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else { return };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let served = if https { serve_https(&mut tls, &log) } else { serve_tls(&mut tls) };
                    if served.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                }
            });
            Self { addr, cert, queries, requests }
        }

        fn trusting_resolver(&self, dns: &Dns) -> Resolver {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.cert.clone()).expect("trust the test certificate");
            Resolver::with_roots(dns, roots)
        }
    }

    fn serve_tls(tls: &mut impl ReadWrite) -> io::Result<()> {
        let mut prefix = [0u8; 2];
        tls.read_exact(&mut prefix)?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        tls.read_exact(&mut query)?;
        let reply = answer(&query);
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        tls.write_all(&out)
    }

    fn serve_https(tls: &mut impl ReadWrite, log: &Mutex<Vec<String>>) -> io::Result<()> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tls.read_exact(&mut byte)?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut query = vec![0u8; length];
        tls.read_exact(&mut query)?;
        log.lock().expect("log").push(head);
        let reply = answer(&query);
        // Chunked, to exercise the decoder against a real exchange.
        write!(
            tls,
            "HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        let (first, rest) = reply.split_at(reply.len() / 2);
        for part in [first, rest] {
            write!(tls, "{:x}\r\n", part.len())?;
            tls.write_all(part)?;
            tls.write_all(b"\r\n")?;
        }
        tls.write_all(b"0\r\n\r\n")
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    fn resolve(resolver: &Resolver, host: &str) -> io::Result<Vec<SocketAddr>> {
        let (resolver, host) = (resolver.clone(), host.to_owned());
        Selected::run(|_| async move { resolver.resolve::<Selected>(&host, 443).await }).expect("runtime")
    }

    #[test]
    fn literal_ips_need_no_lookup_and_the_resolver_shows_its_server() {
        let dns = Dns::Udp("127.0.0.1:5353".parse().expect("literal"));
        let resolver = Resolver::new(Some(&dns));
        assert_eq!(format!("{resolver:?}"), "Resolver(udp://127.0.0.1:5353)");
        assert_eq!(format!("{:?}", Resolver::new(None)), "Resolver(os)");
        assert_eq!(resolve(&resolver, "[::1]").expect("v6"), vec!["[::1]:443".parse().expect("v6")]);
        assert_eq!(resolve(&resolver, "192.0.2.7").expect("v4"), vec!["192.0.2.7:443".parse().expect("v4")]);
        assert!(resolver.configured.as_ref().expect("configured").cache().is_empty());
    }

    #[test]
    fn encrypted_resolvers_errors_name_host_and_server() {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        for dns in [
            Dns::Https { host: "127.0.0.1".into(), port: closed, path: "/dns-query".into() },
            Dns::Tls { host: "127.0.0.1".into(), port: closed },
        ] {
            let err = resolve(&Resolver::new(Some(&dns)), "site.example").expect_err("nothing listens there");
            let text = err.to_string();
            assert!(text.starts_with("site.example: "), "{text}");
            assert!(text.ends_with(&format!("(asked {dns})")), "{text}");
        }
    }

    fn answers_are_cached_failures_are_not(https: bool) {
        let server = TlsDnsServer::start(https);
        let port = server.addr.port();
        let dns = if https {
            Dns::Https { host: "127.0.0.1".into(), port, path: "/dns-query".into() }
        } else {
            Dns::Tls { host: "127.0.0.1".into(), port }
        };
        let resolver = server.trusting_resolver(&dns);
        let expected: Vec<SocketAddr> =
            vec![SocketAddr::new(V4.into(), 443), SocketAddr::new(V6.into(), 443)];
        assert_eq!(resolve(&resolver, "site.example").expect("resolves"), expected);
        assert_eq!(server.queries.load(Ordering::SeqCst), 2, "one A and one AAAA query");
        assert_eq!(resolve(&resolver, "SITE.example.").expect("cached"), expected);
        assert_eq!(server.queries.load(Ordering::SeqCst), 2, "the second lookup came from the cache");
        let (_, until) = resolver.configured.as_ref().expect("configured").cache()["site.example"].clone();
        let kept = until.saturating_duration_since(Instant::now());
        assert!(kept <= Duration::from_secs(60) && kept > Duration::from_secs(50), "shortest TTL: {kept:?}");

        let missing = resolve(&resolver, "missing.example").expect_err("NXDOMAIN");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(missing.to_string(), format!("missing.example: no such name (asked {dns})"));
        let asked = server.queries.load(Ordering::SeqCst);
        assert!(resolve(&resolver, "missing.example").is_err());
        assert!(server.queries.load(Ordering::SeqCst) > asked, "a failure is asked again");

        if https {
            let requests = server.requests.lock().expect("log").clone();
            let first = requests.first().expect("a request");
            assert!(first.starts_with("POST /dns-query HTTP/1.1\r\n"), "{first}");
            assert!(first.contains("\r\nContent-Type: application/dns-message\r\n"), "{first}");
            assert!(first.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{first}");
        }
        // Production verification: the webpki roots do not trust the test certificate.
        let untrusted =
            resolve(&Resolver::new(Some(&dns)), "site.example").expect_err("untrusted certificate");
        let text = untrusted.to_string();
        assert!(text.starts_with("site.example: ") && text.contains("certificate"), "{text}");
        assert!(text.ends_with(&format!("(asked {dns})")), "{text}");
    }

    #[test]
    fn dns_over_tls_answers_are_cached_failures_are_not() {
        answers_are_cached_failures_are_not(false);
    }

    #[test]
    fn dns_over_https_answers_are_cached_failures_are_not() {
        answers_are_cached_failures_are_not(true);
    }
}
