//! What a passive observer sees of a TLS server's first flight: a ClientHello is sent, the
//! write half is shut, and everything the server sends until it closes is parsed with
//! [`ObservedFlight::parse`]. Works the same for a real site (which writes its flight, then
//! reads EOF and closes) and for the proxy (which writes its flight, then sees EOF while it
//! waits for the client's frame and closes).
//!
//! Also: re-signing a captured ClientHello for a test user (as a Telegram client signs its
//! hello) and checking the digest of the proxy's answer, and a one-line summary of a flight
//! for the CI log.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use mtg_proto::Secret;
use mtg_proto::tls::client_hello::{HelloRecords, RANDOM_LEN};
use mtg_proto::tls::server_flight::ObservedFlight;
use mtg_proto::tls::server_hello::{SERVER_RANDOM_OFFSET, flight_len};
use sha2::Sha256;

/// How long a capture may take in all: a guard against a server that never closes, not a
/// wait anything depends on.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);
/// Offset of the client random in a ClientHello record (5 record header + 4 handshake header
/// + 2 version).
pub const CLIENT_RANDOM_OFFSET: usize = 11;
/// Most bytes of an answer kept.
const CAPTURE_LIMIT: usize = 256 * 1024;

/// A server's answer to one hello.
#[derive(Debug, Clone)]
pub struct CapturedFlight {
    /// Every byte received until the server closed.
    pub bytes: Vec<u8>,
    /// The flight parsed from them.
    pub flight: ObservedFlight,
    /// Whether the connection ended with a reset rather than a clean close.
    pub reset: bool,
    /// Whether the server's last record was its encrypted close alert (left out of `flight`).
    pub close_alert: bool,
}

/// Payload length of a TLS 1.3 alert record: the two alert bytes, the inner content type and
/// the 16-byte AEAD tag. No message of a first flight is this short (Finished alone is 53).
pub const ENCRYPTED_ALERT_LEN: usize = 2 + 1 + 16;

/// Sends `hello` to the loopback `addr`, shuts the write half, reads until the server closes
/// (at most [`CAPTURE_TIMEOUT`]) and parses the flight. Errors name what went wrong: no
/// connection, a server that never closed, or bytes that are not a TLS 1.3 flight.
pub fn capture_flight(addr: SocketAddr, hello: &[u8]) -> io::Result<CapturedFlight> {
    crate::ensure_loopback(addr)?;
    let deadline = Instant::now() + CAPTURE_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, CAPTURE_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.write_all(hello)?;
    stream.shutdown(Shutdown::Write)?;
    let mut bytes = Vec::new();
    let mut reset = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{addr} did not close within {CAPTURE_TIMEOUT:?} ({} bytes received)", bytes.len()),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() > CAPTURE_LIMIT {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{addr} sent more than {CAPTURE_LIMIT} bytes without closing"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                reset = true;
                break;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // A site answers the shut write half with an encrypted close alert after its flight
    // (OpenSSL does): that record is a reaction to the capture, not part of the flight.
    let close_alert = ends_with_encrypted_alert(&bytes);
    let flight_bytes = if close_alert { &bytes[..bytes.len() - 5 - ENCRYPTED_ALERT_LEN] } else { &bytes[..] };
    let flight = ObservedFlight::parse(flight_bytes).map_err(|e| {
        let head: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{addr}'s answer is not a TLS 1.3 first flight: {e} ({} bytes: {head}…)", bytes.len()),
        )
    })?;
    Ok(CapturedFlight { bytes, flight, reset, close_alert })
}

/// Whether the records in `bytes` end with an ApplicationData record of
/// [`ENCRYPTED_ALERT_LEN`] bytes that follows at least one other ApplicationData record.
fn ends_with_encrypted_alert(bytes: &[u8]) -> bool {
    let mut pos = 0;
    let mut last_two: [Option<(u8, usize)>; 2] = [None, None];
    while let Some(header) = bytes.get(pos..pos + 5) {
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if bytes.len() < pos + 5 + len {
            return false;
        }
        last_two = [last_two[1], Some((header[0], len))];
        pos += 5 + len;
    }
    pos == bytes.len()
        && matches!(last_two, [Some((0x17, _)), Some((0x17, len))] if len == ENCRYPTED_ALERT_LEN)
}

/// The flight as one line: the ServerHello's suite, extensions and key share, the record
/// types and payload sizes in order, then the total on the wire, e.g.
/// `suite 1301 ext [002b 0033] share 001d/32: hs 122 | ccs 1 | app 23 | app 397 | … = 722 bytes`.
pub fn summary(flight: &ObservedFlight) -> String {
    let exts: Vec<String> = flight.extensions.as_slice().iter().map(|e| format!("{e:04x}")).collect();
    let share = flight.key_share.map_or_else(|| "none".to_owned(), |k| format!("{:04x}/{}", k.group, k.len));
    let head = format!("suite {:04x} ext [{}] share {share}", flight.cipher_suite, exts.join(" "));
    let mut parts = vec![format!("hs {}", flight.server_hello_len)];
    if flight.change_cipher_spec {
        parts.push("ccs 1".to_owned());
    }
    parts.extend(flight.encrypted.as_slice().iter().map(|n| format!("app {n}")));
    format!("{head}: {} = {} bytes", parts.join(" | "), flight.wire_len())
}

/// Signs the ClientHello `record` (one or more hello records) for `secret` as a Telegram
/// client does: the client random is zeroed, the HMAC-SHA256 of the canonical record under the
/// secret's key is written in its place, with `unix_secs` (little endian) XORed into its last
/// four bytes. Returns the new client random; `None` if `record` is not a whole ClientHello.
pub fn resign_hello(record: &mut [u8], secret: &Secret, unix_secs: u32) -> Option<[u8; RANDOM_LEN]> {
    let random_at = CLIENT_RANDOM_OFFSET..CLIENT_RANDOM_OFFSET + RANDOM_LEN;
    record.get_mut(random_at.clone())?.fill(0);
    let records = HelloRecords::scan(record).ok().flatten()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC accepts any key length");
    records.feed_canonical(&mut mac);
    let mut random: [u8; RANDOM_LEN] = mac.finalize().into_bytes().into();
    for (r, t) in random[28..].iter_mut().zip(unix_secs.to_le_bytes()) {
        *r ^= t;
    }
    record[random_at].copy_from_slice(&random);
    Some(random)
}

/// Whether the server flight at the start of `answer` (ServerHello, ChangeCipherSpec, one
/// ApplicationData record) carries in its server random the HMAC a client with `secret`
/// expects for `client_random`: `HMAC(key, client_random || flight with the random zeroed)`.
pub fn flight_verifies(answer: &[u8], secret: &Secret, client_random: &[u8; RANDOM_LEN]) -> bool {
    let Ok(Some(len)) = flight_len(answer) else {
        return false;
    };
    let random_at = SERVER_RANDOM_OFFSET..SERVER_RANDOM_OFFSET + RANDOM_LEN;
    if len < random_at.end {
        return false;
    }
    let flight = &answer[..len];
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC accepts any key length");
    mac.update(client_random);
    mac.update(&flight[..random_at.start]);
    mac.update(&[0u8; RANDOM_LEN]);
    mac.update(&flight[random_at.end..]);
    mac.verify_slice(&flight[random_at]).is_ok()
}

/// The 16-byte key of a secret (its bytes after the kind byte).
fn key_of(secret: &Secret) -> Vec<u8> {
    secret.to_bytes().iter().skip(1).take(16).copied().collect()
}
