//! Resolving the names the proxy dials itself (the fronting host, SOCKS5 server names,
//! `doctor`): the OS resolver, or `[network] dns` (DoH, DoT or plain UDP) through
//! `hickory-resolver`, with its cache (answers kept at most 1 h, failures not kept).
//!
//! hickory runs only on tokio, and the engine runs on tokio or smol. So a configured resolver
//! owns one thread (`mtg-dns`) running a current-thread tokio runtime, started by the first
//! lookup; lookups reach it over a runtime-neutral channel (`async-channel`) and each gets its
//! answer on a one-shot channel, so both runtimes await it the same way. The thread ends when
//! the last [`Resolver`] clone is dropped.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::Dns;
use crate::runtime::Runtime;

/// Longest time an answer stays cached.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Lookups waiting for the resolver thread at most; more wait for room.
const QUEUE: usize = 256;

/// How the proxy resolves names: cheap to clone; all clones share one resolver thread.
#[derive(Clone, Default)]
pub struct Resolver {
    configured: Option<Arc<Configured>>,
}

struct Configured {
    dns: Dns,
    requests: OnceLock<io::Result<async_channel::Sender<Lookup>>>,
}

struct Lookup {
    host: String,
    answer: async_channel::Sender<io::Result<Vec<IpAddr>>>,
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
    /// The resolver for `[network] dns`: the OS resolver when `None`.
    pub fn new(dns: Option<&Dns>) -> Self {
        Self {
            configured: dns.map(|dns| Arc::new(Configured { dns: dns.clone(), requests: OnceLock::new() })),
        }
    }

    /// Resolves `host` (a literal IP, bracketed or not, needs no lookup) to addresses on
    /// `port`. Errors name the host and the resolver. No timeout of its own: callers bound it.
    pub async fn resolve<R: Runtime>(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let Some(configured) = &self.configured else {
            return R::resolve(host, port).await;
        };
        let ips = configured.lookup(host).await?;
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

impl Configured {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let requests = match self.requests.get_or_init(|| spawn_thread(self.dns.clone())) {
            Ok(requests) => requests,
            Err(e) => return Err(io::Error::new(e.kind(), format!("DNS resolver {}: {e}", self.dns))),
        };
        let (answer, answered) = async_channel::bounded(1);
        let gone = || io::Error::other(format!("DNS resolver {} is not running", self.dns));
        requests.send(Lookup { host: host.to_owned(), answer }).await.map_err(|_| gone())?;
        let ips = answered.recv().await.map_err(|_| gone())??;
        if ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no addresses (asked {})", self.dns),
            ));
        }
        Ok(ips)
    }
}

/// Starts the resolver thread; it serves lookups until every sender is dropped.
fn spawn_thread(dns: Dns) -> io::Result<async_channel::Sender<Lookup>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (requests, incoming) = async_channel::bounded::<Lookup>(QUEUE);
    std::thread::Builder::new().name("mtg-dns".to_owned()).spawn(move || {
        runtime.block_on(async move {
            let mut resolver: Option<TokioResolver> = None;
            while let Ok(lookup) = incoming.recv().await {
                if resolver.is_none() {
                    match build(&dns).await {
                        Ok(built) => resolver = Some(built),
                        Err(e) => {
                            let _ = lookup.answer.try_send(Err(e));
                            continue;
                        }
                    }
                }
                let Some(resolver) = resolver.clone() else { continue };
                let dns = dns.clone();
                tokio::spawn(async move {
                    let result = resolver.lookup_ip(lookup.host.as_str()).await.map_err(|e| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{}: {e} (asked {dns})", lookup.host))
                    });
                    let _ = lookup.answer.try_send(result.map(|found| found.iter().collect()));
                });
            }
        });
    })?;
    Ok(requests)
}

/// A hickory resolver asking only the configured server. A DoH/DoT server given by name is
/// found with the OS resolver (an error names it).
async fn build(dns: &Dns) -> io::Result<TokioResolver> {
    let servers: Vec<NameServerConfig> = match dns {
        Dns::Udp(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])]
        }
        Dns::Https { host, port, path } => {
            let mut https = ConnectionConfig::https(Arc::from(host.as_str()), Some(Arc::from(path.as_str())));
            https.port = *port;
            server_ips(dns, host, *port)
                .await?
                .map(|ip| NameServerConfig::new(ip, true, vec![https.clone()]))
                .collect()
        }
        Dns::Tls { host, port } => {
            let mut tls = ConnectionConfig::tls(Arc::from(host.as_str()));
            tls.port = *port;
            server_ips(dns, host, *port)
                .await?
                .map(|ip| NameServerConfig::new(ip, true, vec![tls.clone()]))
                .collect()
        }
    };
    let mut options = ResolverOpts::default();
    options.use_hosts_file = ResolveHosts::Never;
    options.positive_max_ttl = Some(MAX_CACHE_TTL);
    options.negative_max_ttl = Some(Duration::ZERO);
    TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .map_err(|e| io::Error::other(format!("DNS resolver {dns}: {e}")))
}

/// The IPs of a DoH/DoT server: the literal, or what the OS resolver says.
async fn server_ips(dns: &Dns, host: &str, port: u16) -> io::Result<impl Iterator<Item = IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip].into_iter());
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("DNS resolver {dns}: cannot resolve {host}: {e}")))?;
    let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    ips.dedup();
    Ok(ips.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Selected;

    #[test]
    fn literal_ips_need_no_lookup_and_the_resolver_shows_its_server() {
        let dns = Dns::Udp("127.0.0.1:5353".parse().expect("literal"));
        let resolver = Resolver::new(Some(&dns));
        assert_eq!(format!("{resolver:?}"), "Resolver(udp://127.0.0.1:5353)");
        assert_eq!(format!("{:?}", Resolver::new(None)), "Resolver(os)");
        let found = Selected::run(|_| async move {
            let v6 = resolver.resolve::<Selected>("[::1]", 443).await?;
            let v4 = resolver.resolve::<Selected>("192.0.2.7", 80).await?;
            io::Result::Ok((v6, v4, resolver.configured.as_ref().map(|c| c.requests.get().is_some())))
        })
        .expect("runtime")
        .expect("literals");
        let expected: (Vec<SocketAddr>, Vec<SocketAddr>) =
            (vec!["[::1]:443".parse().expect("v6")], vec!["192.0.2.7:80".parse().expect("v4")]);
        assert_eq!((found.0, found.1), expected);
        assert_eq!(found.2, Some(false), "no resolver thread was started for literals");
    }

    #[test]
    fn encrypted_resolvers_build_and_their_errors_name_host_and_server() {
        let closed =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        for dns in [
            Dns::Https { host: "127.0.0.1".into(), port: closed, path: "/dns-query".into() },
            Dns::Tls { host: "127.0.0.1".into(), port: closed },
        ] {
            let resolver = Resolver::new(Some(&dns));
            let err =
                Selected::run(|_| async move { resolver.resolve::<Selected>("site.example", 443).await })
                    .expect("runtime")
                    .expect_err("nothing listens there");
            let text = err.to_string();
            assert!(text.starts_with("site.example: "), "{text}");
            assert!(text.ends_with(&format!("(asked {dns})")), "{text}");
        }
    }
}
