//! `mtg-multi healthcheck CONFIG`: whether the proxy that serves this config is up, for a
//! container's `HEALTHCHECK` (no curl in a scratch image) or a monitoring script. Every
//! `bind-to` address must accept a TCP connection (a wildcard address is tried on loopback),
//! and when `api-bind-to` is set, `GET /stats` must answer 200 (with `api-token` when set).
//! Exit 0 when healthy, 1 with one line per failure on stderr otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// Where a check connects for a listen address: wildcards on loopback of the same family.
pub fn dial_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The problems found (empty: healthy), each one line naming the address.
pub fn check(config: &Config, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for listen in &config.bind_to {
        let addr = dial_addr(*listen);
        if let Err(e) = TcpStream::connect_timeout(&addr, timeout) {
            problems.push(format!("bind-to {listen}: cannot connect to {addr}: {e}"));
        }
    }
    if let Some(api) = config.api_bind_to {
        let addr = dial_addr(api);
        if let Err(e) = api_stats(addr, config.api_token.as_ref().map(|t| t.text()), timeout) {
            problems.push(format!("api-bind-to {api}: GET http://{addr}/stats: {e}"));
        }
    }
    problems
}

/// `GET /stats` on the API at `addr`: `Ok` on a 200 answer.
fn api_stats(addr: SocketAddr, token: Option<&str>, timeout: Duration) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET /stats HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that is needed; read a bounded head.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let status = line.split(' ').nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        let first = line.lines().next().unwrap_or("").trim();
        Err(format!("answered {first:?}, expected HTTP 200"))
    }
}

#[cfg(test)]
mod tests {
    use super::dial_addr;

    #[test]
    fn wildcards_are_dialled_on_loopback() {
        assert_eq!(dial_addr("0.0.0.0:443".parse().unwrap()), "127.0.0.1:443".parse().unwrap());
        assert_eq!(dial_addr("[::]:443".parse().unwrap()), "[::1]:443".parse().unwrap());
        assert_eq!(dial_addr("192.0.2.1:443".parse().unwrap()), "192.0.2.1:443".parse().unwrap());
    }
}
