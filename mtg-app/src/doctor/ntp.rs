//! A one-shot SNTP (RFC 4330) query for `doctor`'s clock check: how far our clock is from a
//! time server's.
//!
//! ```text
//! 48 bytes: LI/VN/mode (1) | stratum (1) | poll | precision | root delay (4) | dispersion (4)
//!           | ref id (4) | reference ts (8) | originate ts (8) 24.. | receive ts (8) 32..
//!           | transmit ts (8) 40..
//! timestamp: seconds since 1900-01-01 (u32 BE) | fraction of a second (u32 BE)
//! offset = ((receive − sent) + (transmit − arrived)) / 2
//! ```
//! The request carries a random transmit timestamp (RFC 9109): the server echoes it as the
//! originate timestamp, which ties the answer to the request without revealing our clock.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server mtg asks.
pub const DEFAULT_SERVER: &str = "0.pool.ntp.org:123";
/// Size of an SNTP packet without extensions.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_TO_UNIX: u64 = 2_208_988_800;
/// Most server addresses tried.
const MAX_ADDRESSES: usize = 2;

/// Why an answer is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtpError {
    /// Fewer than 48 bytes.
    Short(usize),
    /// Not a server (mode 4) answer; the value is the mode.
    Mode(u8),
    /// Stratum 0: a "kiss-o'-death" (the server refuses); the value is its 4-letter code.
    Kiss([u8; 4]),
    /// The originate timestamp does not echo our request.
    NotOurs,
    /// A zero receive or transmit timestamp.
    Unsynchronised,
}

impl std::fmt::Display for NtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short(n) => write!(f, "answer of {n} bytes, expected {PACKET_LEN}"),
            Self::Mode(m) => write!(f, "answer in mode {m}, expected 4 (server)"),
            Self::Kiss(code) => {
                write!(f, "the server refused (kiss code {:?})", String::from_utf8_lossy(code))
            }
            Self::NotOurs => f.write_str("the answer does not echo our request"),
            Self::Unsynchronised => f.write_str("the server is not synchronised"),
        }
    }
}

/// An SNTP client request (version 4, mode 3) whose transmit timestamp is `cookie`.
pub fn request(cookie: [u8; 8]) -> [u8; PACKET_LEN] {
    let mut packet = [0u8; PACKET_LEN];
    packet[0] = (4 << 3) | 3;
    packet[40..].copy_from_slice(&cookie);
    packet
}

/// The server's receive and transmit times (since the Unix epoch) from an answer to the
/// request carrying `cookie`.
pub fn parse_reply(answer: &[u8], cookie: [u8; 8]) -> Result<(Duration, Duration), NtpError> {
    let Some(packet) = answer.get(..PACKET_LEN) else {
        return Err(NtpError::Short(answer.len()));
    };
    let mode = packet[0] & 7;
    if mode != 4 {
        return Err(NtpError::Mode(mode));
    }
    if packet[1] == 0 {
        return Err(NtpError::Kiss([packet[12], packet[13], packet[14], packet[15]]));
    }
    if packet[24..32] != cookie {
        return Err(NtpError::NotOurs);
    }
    let stamp = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&packet[at..at + 8]);
        b
    };
    let (receive, transmit) = (stamp(32), stamp(40));
    if receive == [0; 8] || transmit == [0; 8] {
        return Err(NtpError::Unsynchronised);
    }
    Ok((to_unix(receive), to_unix(transmit)))
}

/// An NTP timestamp as time since the Unix epoch. Era 0 ends in 2036: seconds values below
/// 2^31 (before 1968) are read as era 1.
pub fn to_unix(stamp: [u8; 8]) -> Duration {
    let secs = u64::from(u32::from_be_bytes([stamp[0], stamp[1], stamp[2], stamp[3]]));
    let fraction = u64::from(u32::from_be_bytes([stamp[4], stamp[5], stamp[6], stamp[7]]));
    let secs = if secs < 1 << 31 { secs + (1 << 32) } else { secs };
    let nanos = (fraction * 1_000_000_000) >> 32;
    Duration::new(secs.saturating_sub(NTP_TO_UNIX), nanos as u32)
}

/// Time since the Unix epoch as an NTP timestamp (era 0 or 1, as [`to_unix`] reads it).
pub fn from_unix(t: Duration) -> [u8; 8] {
    let secs = (t.as_secs() + NTP_TO_UNIX) as u32;
    let fraction = ((u64::from(t.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&fraction.to_be_bytes());
    out
}

/// The clock offset in seconds (positive: the server is ahead of us) from the four times.
pub fn offset(sent: Duration, receive: Duration, transmit: Duration, arrived: Duration) -> f64 {
    let s = |d: Duration| d.as_secs_f64();
    ((s(receive) - s(sent)) + (s(transmit) - s(arrived))) / 2.0
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Asks `server` (`host:port`) once per address (at most two), each within `timeout`; the
/// offset in seconds, or what went wrong. Blocking.
pub fn query(server: &str, timeout: Duration) -> Result<f64, String> {
    let addrs: Vec<SocketAddr> =
        server.to_socket_addrs().map_err(|e| format!("cannot resolve {server}: {e}"))?.collect();
    let mut last = format!("{server} has no addresses");
    for addr in addrs.into_iter().take(MAX_ADDRESSES) {
        match query_addr(addr, timeout) {
            Ok(offset) => return Ok(offset),
            Err(e) => last = format!("{server} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// One exchange with `addr`.
pub fn query_addr(addr: SocketAddr, timeout: Duration) -> Result<f64, String> {
    let local = if addr.is_ipv4() {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let cookie: [u8; 8] = rand::random();
    let sent = now();
    socket.send(&request(cookie)).map_err(|e| e.to_string())?;
    let mut answer = [0u8; 512];
    // Stray datagrams (not echoing the cookie) are skipped; the count bounds the loop.
    for _ in 0..4 {
        let n = socket.recv(&mut answer).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer within {timeout:?}")
            }
            _ => e.to_string(),
        })?;
        let arrived = now();
        match parse_reply(&answer[..n], cookie) {
            Ok((receive, transmit)) => return Ok(offset(sent, receive, transmit, arrived)),
            Err(NtpError::NotOurs) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no answer to our request".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn answer(receive: Duration, transmit: Duration) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&COOKIE);
        p[32..40].copy_from_slice(&from_unix(receive));
        p[40..48].copy_from_slice(&from_unix(transmit));
        p
    }

    #[test]
    fn request_is_a_version_4_client_packet_with_the_cookie() {
        let r = request(COOKIE);
        assert_eq!(r[0], 0x23);
        assert_eq!(&r[1..40], &[0u8; 39]);
        assert_eq!(&r[40..], &COOKIE);
    }

    #[test]
    fn timestamps_convert_both_ways() {
        // 2026-01-01T00:00:00.5Z: 1767225600 s after 1970, 3976214400 after 1900.
        let t = Duration::from_millis(1_767_225_600_500);
        let stamp = from_unix(t);
        assert_eq!(&stamp[..4], &3_976_214_400u32.to_be_bytes());
        assert_eq!(&stamp[4..], &0x8000_0000u32.to_be_bytes());
        assert_eq!(to_unix(stamp), t);
        // Era 1: 2036-02-07T06:28:16Z is NTP second 0 again.
        assert_eq!(to_unix([0; 8]).as_secs(), 2_085_978_496);
    }

    #[test]
    fn parses_a_server_answer() {
        let (r, t) = (Duration::from_secs(1_767_225_605), Duration::from_secs(1_767_225_606));
        assert_eq!(parse_reply(&answer(r, t), COOKIE), Ok((r, t)));
        assert_eq!(parse_reply(&answer(r, t)[..47], COOKIE), Err(NtpError::Short(47)));
        assert_eq!(parse_reply(&answer(r, t), [9; 8]), Err(NtpError::NotOurs));
        let mut client = answer(r, t);
        client[0] = 0x23;
        assert_eq!(parse_reply(&client, COOKIE), Err(NtpError::Mode(3)));
        let mut kiss = answer(r, t);
        kiss[1] = 0;
        kiss[12..16].copy_from_slice(b"RATE");
        assert_eq!(parse_reply(&kiss, COOKIE), Err(NtpError::Kiss(*b"RATE")));
        let mut unsynchronised = answer(r, t);
        unsynchronised[32..40].fill(0);
        assert_eq!(parse_reply(&unsynchronised, COOKIE), Err(NtpError::Unsynchronised));
    }

    #[test]
    fn offset_cancels_the_network_delay() {
        let s = Duration::from_secs;
        // Sent at 100, server got it at 110.5 (its clock), answered at 110.5, back at 101.
        let o = offset(s(100), Duration::from_millis(110_500), Duration::from_millis(110_500), s(101));
        assert!((o - 10.0).abs() < 1e-9, "{o}");
        assert!((offset(s(100), s(95), s(95), s(100)) + 5.0).abs() < 1e-9);
    }

    #[test]
    fn queries_a_local_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, peer) = server.recv_from(&mut buf).unwrap();
            assert_eq!(n, PACKET_LEN);
            // A server 30 s ahead.
            let t = now() + Duration::from_secs(30);
            let mut p = answer(t, t);
            p[24..32].copy_from_slice(&buf[40..48]);
            server.send_to(&p, peer).unwrap();
        });
        let offset = query_addr(addr, Duration::from_secs(5)).unwrap();
        responder.join().unwrap();
        assert!((offset - 30.0).abs() < 2.0, "{offset}");
    }

    #[test]
    fn a_silent_server_is_a_timeout() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = query_addr(server.local_addr().unwrap(), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err, "no answer within 200ms");
    }
}
