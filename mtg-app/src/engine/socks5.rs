//! Dialing through one SOCKS5 server (`[network] proxies` entry): TCP to the server, then the
//! sans-IO negotiation of [`mtg_proto::socks5`] over the runtime's stream.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::socks5::{Connect, Credentials, Progress, Target};

use crate::config::ProxyUrl;
use crate::resolver::Resolver;
use crate::runtime::Runtime;

use super::with_timeout;

/// Messages of a negotiation at most (greeting, password, CONNECT, each with its read steps).
const MAX_STEPS: usize = 8;

/// Connects to `target` through `proxy` within `timeout` (resolving, connecting and
/// negotiating together). Errors name the proxy (password hidden) and what went wrong.
pub(crate) async fn connect<R: Runtime>(
    proxy: &ProxyUrl,
    resolver: &Resolver,
    target: SocketAddr,
    timeout: Duration,
) -> io::Result<R::Stream> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("SOCKS5 proxy {proxy}: {e}"));
    match with_timeout::<R, _>(timeout, negotiate::<R>(proxy, resolver, target)).await {
        Some(result) => result.map_err(named),
        None => Err(named(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection to {target} within {timeout:?}"),
        ))),
    }
}

async fn negotiate<R: Runtime>(
    proxy: &ProxyUrl,
    resolver: &Resolver,
    target: SocketAddr,
) -> io::Result<R::Stream> {
    let credentials = proxy
        .user
        .as_ref()
        .map(|user| Credentials { user: user.clone(), password: proxy.password.clone().unwrap_or_default() });
    let (mut connect, first) = Connect::new(Target::Ip(target), credentials).map_err(invalid)?;
    let mut stream = dial_server::<R>(proxy, resolver).await?;
    stream.write_all(&first.write).await?;
    let mut buf = vec![0; first.read];
    stream.read_exact(&mut buf).await.map_err(early_close)?;
    for _ in 0..MAX_STEPS {
        match connect.handle_input(&buf).map_err(invalid)? {
            Progress::NeedMore(total) => {
                let have = buf.len();
                buf.resize(total.max(have), 0);
                stream.read_exact(&mut buf[have..]).await.map_err(early_close)?;
            }
            Progress::Next(next) => {
                stream.write_all(&next.write).await?;
                buf.clear();
                buf.resize(next.read, 0);
                stream.read_exact(&mut buf).await.map_err(early_close)?;
            }
            Progress::Connected(_) => return Ok(stream),
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "negotiation did not finish"))
}

/// TCP to the SOCKS server: each of its addresses in turn.
async fn dial_server<R: Runtime>(proxy: &ProxyUrl, resolver: &Resolver) -> io::Result<R::Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in resolver.resolve::<R>(&proxy.host, proxy.port).await? {
        match R::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn invalid(e: mtg_proto::socks5::Socks5Error) -> io::Error {
    let kind = match e {
        mtg_proto::socks5::Socks5Error::Refused(_) => io::ErrorKind::ConnectionRefused,
        mtg_proto::socks5::Socks5Error::AuthRejected(_)
        | mtg_proto::socks5::Socks5Error::NoAcceptableMethod { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e.to_string())
}

fn early_close(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(e.kind(), "the server closed the connection during the negotiation")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::runtime::Selected;

    /// A one-connection SOCKS server that answers each client message with the next reply
    /// and returns everything the client sent.
    fn scripted_server(replies: Vec<Vec<u8>>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut got = Vec::new();
            for reply in replies {
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).unwrap_or(0);
                got.extend_from_slice(&buf[..n]);
                if conn.write_all(&reply).is_err() {
                    break;
                }
            }
            got
        });
        (addr, thread)
    }

    fn proxy_url(addr: SocketAddr, user: Option<(&str, &str)>) -> ProxyUrl {
        ProxyUrl {
            remote_dns: false,
            host: addr.ip().to_string(),
            port: addr.port(),
            user: user.map(|u| u.0.to_owned()),
            password: user.map(|u| u.1.to_owned()),
        }
    }

    fn dial(proxy: &ProxyUrl, target: SocketAddr) -> io::Result<()> {
        let proxy = proxy.clone();
        Selected::run(|_| async move {
            connect::<Selected>(&proxy, &Resolver::default(), target, Duration::from_secs(5)).await.map(drop)
        })
        .expect("runtime")
    }

    #[test]
    fn a_rejected_password_names_the_proxy_without_the_password() {
        let (addr, server) = scripted_server(vec![vec![5, 2], vec![1, 1]]);
        let proxy = proxy_url(addr, Some(("bob", "hunter2")));
        let err = dial(&proxy, "10.1.2.3:443".parse().expect("literal")).expect_err("rejected");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            format!("SOCKS5 proxy socks5://bob:***@{addr}: user name or password rejected (status 0x01)")
        );
        assert_eq!(server.join().expect("server"), b"\x05\x02\x00\x02\x01\x03bob\x07hunter2");
    }

    #[test]
    fn a_failed_connect_names_the_reply_code() {
        let (addr, server) = scripted_server(vec![vec![5, 0], vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0]]);
        let err =
            dial(&proxy_url(addr, None), "10.1.2.3:443".parse().expect("literal")).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            err.to_string(),
            format!("SOCKS5 proxy socks5://{addr}: CONNECT failed: host unreachable (reply code 0x04)")
        );
        assert_eq!(server.join().expect("server"), b"\x05\x01\x00\x05\x01\x00\x01\x0a\x01\x02\x03\x01\xbb");
    }

    #[test]
    fn a_server_closing_early_or_silent_is_an_error_in_time() {
        let (addr, server) = scripted_server(vec![vec![5]]);
        let err = dial(&proxy_url(addr, None), "10.1.2.3:443".parse().expect("literal")).expect_err("closed");
        assert_eq!(
            err.to_string(),
            format!("SOCKS5 proxy socks5://{addr}: the server closed the connection during the negotiation")
        );
        server.join().expect("server");

        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let proxy = proxy_url(silent.local_addr().expect("address"), None);
        let err = Selected::run(|_| async move {
            let target = "10.1.2.3:443".parse().expect("literal");
            connect::<Selected>(&proxy, &Resolver::default(), target, Duration::from_millis(200))
                .await
                .map(drop)
        })
        .expect("runtime")
        .expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(silent);
    }
}
