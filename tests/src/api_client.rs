//! A raw HTTP/1.1 request to the proxy's API over loopback, for tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `method path` with an optional `Authorization` header value and a body; returns the
/// status code and the response body.
pub fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    crate::ensure_loopback(api).expect("the API is on loopback");
    let mut s = TcpStream::connect(api).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: api\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

/// An API answer: status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header value (empty when absent).
    pub content_type: String,
    /// The body, lossily decoded.
    pub body: String,
}

/// Like [`request`] with any body bytes, returning the content type too. A connection reset
/// after the answer arrived (the server may close on a body it did not read) still yields it.
pub fn request_bytes(
    api: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Answer {
    crate::ensure_loopback(api).expect("the API is on loopback");
    let mut s = TcpStream::connect(api).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);
    // The server may answer and close before taking the whole body: a failed write is fine.
    let _ = s.write_all(&wire);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header block in {raw:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Answer { status, content_type, body: body.to_owned() }
}
