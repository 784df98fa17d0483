//! Dialing the other side: a Telegram DC by its address list (directly, or through the
//! `[network] proxies` SOCKS5 servers), or the fronting site (always directly).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::seq::SliceRandom;
use tracing::debug;

use crate::config::ProxyUrl;
use crate::resolver::Resolver;
use crate::runtime::Runtime;

use super::{socks5, with_timeout};

/// How a DC connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A direct TCP connection.
    Direct,
    /// Through this SOCKS5 server.
    Socks5(&'a ProxyUrl),
}

impl std::fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Socks5(proxy) => write!(f, "{proxy}"),
        }
    }
}

/// Dials a DC: tries `addrs` in order; each goes directly when `proxies` is empty, else
/// through the proxies in a fresh random order until one connects (one proxy: always that
/// one). Each try gets `timeout`. When every try fails, the error lists them all.
pub(crate) async fn dial_dc<'p, R: Runtime>(
    addrs: &[SocketAddr],
    proxies: &'p [ProxyUrl],
    resolver: &Resolver,
    timeout: Duration,
) -> io::Result<(R::Stream, SocketAddr, Route<'p>)> {
    if proxies.is_empty() {
        return dial_first::<R>(addrs, timeout).await.map(|(stream, addr)| (stream, addr, Route::Direct));
    }
    let mut order: Vec<&ProxyUrl> = proxies.iter().collect();
    let mut failures = Vec::new();
    for &addr in addrs {
        order.shuffle(&mut rand::rng());
        for &proxy in &order {
            match socks5::connect::<R>(proxy, resolver, addr, timeout).await {
                Ok(stream) => return Ok((stream, addr, Route::Socks5(proxy))),
                Err(e) => {
                    debug!(dc_addr = %addr, error = %e, "dial through SOCKS5 failed");
                    failures.push(e);
                }
            }
        }
    }
    Err(joined(failures))
}

/// One error out of several: the kind of the last, every message.
fn joined(failures: Vec<io::Error>) -> io::Error {
    let kind = failures.last().map_or(io::ErrorKind::NotFound, io::Error::kind);
    if failures.is_empty() {
        return io::Error::new(kind, "no addresses to dial");
    }
    let text: Vec<String> = failures.iter().map(ToString::to_string).collect();
    io::Error::new(kind, text.join("; "))
}

/// Dials `addrs` in order until one connects; each try gets `timeout`.
pub(crate) async fn dial_first<R: Runtime>(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> io::Result<(R::Stream, SocketAddr)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses to dial");
    for &addr in addrs {
        match with_timeout::<R, _>(timeout, R::connect(addr)).await {
            Some(Ok(stream)) => return Ok((stream, addr)),
            Some(Err(e)) => last = e,
            None => last = io::Error::new(io::ErrorKind::TimedOut, format!("dial {addr} timed out")),
        }
    }
    Err(last)
}

/// Resolves `host` with `resolver` (a literal IP needs no lookup) and dials it on `port`,
/// directly.
pub(crate) async fn dial_host<R: Runtime>(
    host: &str,
    port: u16,
    resolver: &Resolver,
    timeout: Duration,
) -> io::Result<(R::Stream, SocketAddr)> {
    let addrs = match with_timeout::<R, _>(timeout, resolver.resolve::<R>(host, port)).await {
        Some(result) => result?,
        None => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")));
        }
    };
    dial_first::<R>(&addrs, timeout).await
}
