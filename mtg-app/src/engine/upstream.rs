//! Dialing the other side: a Telegram DC by its address list, or the fronting site.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::runtime::Runtime;

use super::with_timeout;

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

/// Resolves `host` (a literal IP needs no lookup) and dials it on `port`.
pub(crate) async fn dial_host<R: Runtime>(
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<(R::Stream, SocketAddr)> {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match trimmed.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match with_timeout::<R, _>(timeout, R::resolve(host, port)).await {
            Some(result) => result?,
            None => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")));
            }
        },
    };
    dial_first::<R>(&addrs, timeout).await
}
