//! Carrying one DNS message to a server and its answer back, over the runtime seam: UDP
//! (with retries), TCP and DNS over TLS (RFC 7858: length-prefixed messages), and DNS over
//! HTTPS (RFC 8484: `POST` of `application/dns-message` over HTTP/1.1 on the same TLS
//! transport). No timeout of their own beyond UDP's retry schedule: callers bound them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::{Either, select};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use rustls::pki_types::ServerName;

use crate::runtime::Runtime;

/// Largest DNS message (the TCP length prefix is 16 bits).
const MAX_MESSAGE: usize = 65_535;
/// Largest HTTP response head accepted from a DoH server.
const MAX_HEAD: usize = 16 * 1024;
/// UDP sends at most this many times, waiting 1 s, 2 s, 4 s then 8 s for an answer.
const UDP_TRIES: u32 = 4;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Sends `query` to `server` over UDP and returns the datagram answering it (same id, from
/// the server's address); other datagrams are ignored.
pub(super) async fn udp<R: Runtime>(server: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let any: IpAddr =
        if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = R::bind_udp(SocketAddr::new(any, 0))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    for attempt in 0..UDP_TRIES {
        R::send_to(&socket, query, server).await?;
        let wait = Duration::from_secs(1 << attempt);
        let answer = async {
            loop {
                let (n, from) = R::recv_from(&socket, &mut buf).await?;
                if from == server && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return io::Result::Ok(buf[..n].to_vec());
                }
            }
        };
        let answer = std::pin::pin!(answer);
        let timer = std::pin::pin!(R::sleep(wait));
        if let Either::Left((answer, _)) = select(answer, timer).await {
            return answer;
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer after {UDP_TRIES} tries")))
}

/// Sends `query` with its 2-byte length prefix over `stream` and reads one answer the same way
/// (DNS over TCP and over TLS).
pub(super) async fn framed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    query: &[u8],
) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| invalid("query too long"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// DNS over TCP to `server` (after a truncated UDP answer).
pub(super) async fn tcp<R: Runtime>(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = R::connect(server).await?;
    framed(&mut stream, query).await
}

/// A TLS session to `host:port` (each address in turn until one answers), verified with
/// `tls` for the name `host` (or the IP, when `host` is one).
pub(super) async fn tls_connect<R: Runtime>(
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
) -> io::Result<futures_rustls::client::TlsStream<R::Stream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a TLS server name"))
    })?;
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => R::resolve(host, port)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses"));
    for addr in addrs {
        let attempt = async {
            let stream = R::connect(addr).await?;
            futures_rustls::TlsConnector::from(tls.clone()).connect(name.clone(), stream).await
        };
        match attempt.await {
            Ok(session) => return Ok(session),
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// DNS over TLS: one length-prefixed exchange on a new session.
pub(super) async fn dot<R: Runtime>(
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    query: &[u8],
) -> io::Result<Vec<u8>> {
    let mut session = tls_connect::<R>(host, port, tls).await?;
    let answer = framed(&mut session, query).await?;
    // The answer is in; a server that drops the session unpolitely changes nothing.
    let _ = session.close().await;
    Ok(answer)
}

/// DNS over HTTPS: `POST path` of the query on a new session (`Connection: close`), the
/// `200` answer's body.
pub(super) async fn doh<R: Runtime>(
    host: &str,
    port: u16,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
    query: &[u8],
) -> io::Result<Vec<u8>> {
    let mut session = tls_connect::<R>(host, port, tls).await?;
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_owned(),
    };
    let authority = if port == 443 { authority } else { format!("{authority}:{port}") };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mtg-multi\r\n\
         Content-Type: application/dns-message\r\nAccept: application/dns-message\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        query.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(query);
    session.write_all(&request).await?;
    session.flush().await?;
    read_response(&mut session).await
}

/// Reads one HTTP/1.1 response and returns the body of a `200` (by `Content-Length`, chunked,
/// or up to the end of the stream).
pub(super) async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("HTTP response head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed before the HTTP response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("HTTP response head is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1 response: {status:?}")));
    }
    if code != "200" {
        return Err(invalid(format!("HTTP status {}", status.get(9..).unwrap_or(code))));
    }
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| invalid("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        }
    }
    let mut body = buf.split_off(head_end);
    loop {
        if chunked {
            if let Some(decoded) = dechunk(&body)? {
                return Ok(decoded);
            }
        } else if let Some(length) = length {
            if length > MAX_MESSAGE {
                return Err(invalid("HTTP body larger than a DNS message"));
            }
            if body.len() >= length {
                body.truncate(length);
                return Ok(body);
            }
        }
        if body.len() > MAX_MESSAGE + MAX_HEAD {
            return Err(invalid("HTTP body larger than a DNS message"));
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A server closing without TLS close_notify after a delimited-by-close body.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && length.is_none() && !chunked => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if length.is_none() && !chunked {
                return Ok(body);
            }
            return Err(invalid("connection closed inside the HTTP body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// The body of a complete chunked encoding; `None` while more bytes are needed.
fn dechunk(data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = data[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[at..at + line_len]).map_err(|_| invalid("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        if size > MAX_MESSAGE || out.len() + size > MAX_MESSAGE {
            return Err(invalid("HTTP body larger than a DNS message"));
        }
        at += line_len + 2;
        if size == 0 {
            // Trailers (if any) are not needed: the body is complete.
            return Ok(Some(out));
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[at..at + size]);
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err(invalid("bad chunk end"));
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> io::Result<Vec<u8>> {
        let text = text.to_vec();
        crate::runtime::Selected::run(|_| async move {
            read_response(&mut futures_util::io::Cursor::new(text)).await
        })
        .expect("runtime")
    }

    #[test]
    fn http_bodies_by_length_chunks_or_close_and_bad_answers_say_why() {
        let by_length = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: application/dns-message\r\n\r\nabcdef",
        );
        assert_eq!(by_length.unwrap(), b"abc");
        let chunked =
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n");
        assert_eq!(chunked.unwrap(), b"abc");
        assert_eq!(read(b"HTTP/1.0 200 OK\r\n\r\nxyz").unwrap(), b"xyz");
        let refused = read(b"HTTP/1.1 415 Unsupported Media Type\r\nContent-Length: 0\r\n\r\n").unwrap_err();
        assert_eq!(refused.to_string(), "HTTP status 415 Unsupported Media Type");
        let short = read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap_err();
        assert_eq!(short.to_string(), "connection closed inside the HTTP body");
        assert!(read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(read(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n").is_err());
    }
}
