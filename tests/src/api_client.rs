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
