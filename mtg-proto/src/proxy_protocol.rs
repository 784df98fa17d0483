//! HAProxy PROXY protocol: reading a v1 or v2 header in front of a client connection, and
//! writing a v2 header in front of a fronted connection.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature of a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedAddrs {
    /// The original client and the address it connected to.
    Tcp {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A health check or an unknown family: keep the socket's own addresses.
    Local,
}

/// The outcome of looking for a header at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed to decide.
    Incomplete,
    /// The input does not start with a PROXY header (the header is optional).
    Absent,
    /// A header of `len` bytes.
    Header {
        /// The addresses it carries.
        addrs: ProxiedAddrs,
        /// Its length.
        len: usize,
    },
}

/// A malformed PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// A v1 header longer than 107 bytes or without CRLF.
    V1TooLong,
    /// A v1 header that does not parse.
    V1Malformed,
    /// A v2 header with an unknown version or command.
    V2BadVersion,
    /// A v2 address block shorter than its family needs.
    V2Truncated,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1TooLong => "PROXY v1 header longer than 107 bytes",
            Self::V1Malformed => "PROXY v1 header is malformed",
            Self::V2BadVersion => "PROXY v2 header has an unknown version or command",
            Self::V2Truncated => "PROXY v2 address block is too short for its family",
        })
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Looks for a v1 or v2 header at the start of `input`.
pub fn parse(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let v1 = b"PROXY ";
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() { Ok(Parsed::Incomplete) } else { parse_v2(input) };
    }
    let n = input.len().min(v1.len());
    if input[..n] == v1[..n] {
        return if n < v1.len() { Ok(Parsed::Incomplete) } else { parse_v1(input) };
    }
    Ok(Parsed::Absent)
}

fn parse_v1(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = core::str::from_utf8(&input[6..end]).map_err(|_| ProxyHeaderError::V1Malformed)?;
    let mut parts = line.split(' ');
    let family = parts.next().ok_or(ProxyHeaderError::V1Malformed)?;
    let len = end + 2;
    if family == "UNKNOWN" {
        return Ok(Parsed::Header { addrs: ProxiedAddrs::Local, len });
    }
    let mut next = || parts.next().ok_or(ProxyHeaderError::V1Malformed);
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(ProxyHeaderError::V1Malformed);
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| ProxyHeaderError::V1Malformed),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ProxyHeaderError::V1Malformed),
            _ => Err(ProxyHeaderError::V1Malformed),
        }
    };
    let port = |s: &str| s.parse::<u16>().map_err(|_| ProxyHeaderError::V1Malformed);
    Ok(Parsed::Header {
        addrs: ProxiedAddrs::Tcp {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        len,
    })
}

fn parse_v2(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(head) = input.get(..16) else {
        return Ok(Parsed::Incomplete);
    };
    let (ver_cmd, family) = (head[12], head[13]);
    let body_len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(ProxyHeaderError::V2BadVersion);
    }
    let Some(body) = input.get(16..16 + body_len) else {
        return Ok(Parsed::Incomplete);
    };
    let len = 16 + body_len;
    if ver_cmd & 0x0f == 0 {
        return Ok(Parsed::Header { addrs: ProxiedAddrs::Local, len });
    }
    let addrs = match family >> 4 {
        1 => {
            let b = body.get(..12).ok_or(ProxyHeaderError::V2Truncated)?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]));
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            ProxiedAddrs::Tcp {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        2 => {
            let b = body.get(..36).ok_or(ProxyHeaderError::V2Truncated)?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            ProxiedAddrs::Tcp {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => ProxiedAddrs::Local,
    };
    Ok(Parsed::Header { addrs, len })
}

/// Appends a v2 PROXY header (command PROXY, TCP) for `source` → `destination` to `out`.
/// Mixed families are written as IPv6 with IPv4-mapped addresses.
pub fn write_v2(out: &mut Vec<u8>, source: SocketAddr, destination: SocketAddr) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v1_tcp4_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nrest";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                addrs: ProxiedAddrs::Tcp {
                    source: "192.0.2.1:56324".parse().unwrap(),
                    destination: "198.51.100.2:443".parse().unwrap()
                },
                len: h.len() - 4
            })
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Header { addrs: ProxiedAddrs::Local, len: 15 }));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 x 1 2\r\n"), Err(ProxyHeaderError::V1Malformed));
        assert_eq!(parse(&[b'P'; 3]), Ok(Parsed::Absent));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        assert_eq!(parse(&[0x16, 3, 1]), Ok(Parsed::Absent));
        assert_eq!(parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()), Err(ProxyHeaderError::V1TooLong));
    }

    proptest! {
        #[test]
        fn v2_round_trips(src in any::<SocketAddr>(), dst in any::<SocketAddr>(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut wire = Vec::new();
            write_v2(&mut wire, src, dst);
            let len = wire.len();
            wire.extend_from_slice(&tail);
            let Ok(Parsed::Header { addrs: ProxiedAddrs::Tcp { source, destination }, len: got }) = parse(&wire) else {
                panic!("no header");
            };
            prop_assert_eq!(got, len);
            let canon = |a: SocketAddr, b: SocketAddr| match (a, b) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) => a,
                _ => SocketAddr::new(match a.ip() { IpAddr::V4(v) => IpAddr::V6(v.to_ipv6_mapped()), v6 => v6 }, a.port()),
            };
            prop_assert_eq!(source, canon(src, dst));
            prop_assert_eq!(destination, canon(dst, src));
            for cut in 0..len {
                prop_assert_eq!(parse(&wire[..cut]), Ok(Parsed::Incomplete));
            }
        }

        #[test]
        fn never_panics(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&input);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&input);
            let _ = parse(&v1);
            let mut v2 = V2_SIGNATURE.to_vec();
            v2.extend_from_slice(&input);
            let _ = parse(&v2);
        }
    }
}
