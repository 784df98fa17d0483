//! The client side of SOCKS5 `CONNECT` (RFC 1928) with optional user/password authentication
//! (RFC 1929), sans-IO: [`Connect`] says what to write and how many bytes to read next; the
//! caller owns the socket, the timeouts and the buffer.
//!
//! ```text
//!   let (mut connect, first) = Connect::new(target, credentials)?;
//!   write(first.write); buf = read_exact(first.read)
//!   loop {
//!       match connect.handle_input(&buf)? {
//!           Progress::NeedMore(total) => read until buf.len() == total,
//!           Progress::Next(next)      => write(next.write); buf = read_exact(next.read),
//!           Progress::Connected(bound) => break,   // the stream now carries the target's bytes
//!       }
//!   }
//! ```
//!
//! The reads asked for never go past the end of a server message, so nothing the target sends
//! after the final reply is consumed here. Every parser is total: any input gives a value, a
//! request for more bytes or an error, never a panic.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version byte of SOCKS5.
pub const VERSION: u8 = 5;
/// Version byte of the RFC 1929 user/password sub-negotiation.
pub const PASSWORD_VERSION: u8 = 1;
/// Method: no authentication.
pub const METHOD_NONE: u8 = 0x00;
/// Method: user/password (RFC 1929).
pub const METHOD_PASSWORD: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xff;
/// Command: CONNECT.
pub const CMD_CONNECT: u8 = 0x01;
/// Address type: IPv4.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type: domain name.
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type: IPv6.
pub const ATYP_IPV6: u8 = 0x04;

/// Where the SOCKS server should connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A hostname the server resolves (1 to 255 bytes) and a port.
    Domain(String, u16),
}

/// User name (1 to 255 bytes) and password (0 to 255 bytes: an empty one is sent as such, as
/// mtg does, though RFC 1929 asks for at least one byte) for RFC 1929. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// The address the server reports in its reply (`BND.ADDR`, `BND.PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A domain name (raw bytes, as sent) and port.
    Domain(Vec<u8>, u16),
}

/// The reply code of a failed CONNECT (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCode(pub u8);

impl ReplyCode {
    /// What the code means, as RFC 1928 names it.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0x00 => "succeeded",
            0x01 => "general SOCKS server failure",
            0x02 => "connection not allowed by ruleset",
            0x03 => "network unreachable",
            0x04 => "host unreachable",
            0x05 => "connection refused",
            0x06 => "TTL expired",
            0x07 => "command not supported",
            0x08 => "address type not supported",
            _ => "unassigned reply code",
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (reply code {:#04x})", self.meaning(), self.0)
    }
}

/// Why a SOCKS5 negotiation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socks5Error {
    /// A user name is empty or longer than 255 bytes, or a password is longer than 255 bytes.
    BadCredentials,
    /// A target hostname is empty or longer than 255 bytes.
    BadDomain,
    /// The server answered with another protocol version than SOCKS5 (the byte it sent).
    NotSocks5(u8),
    /// The server accepts none of the offered methods (0xff); `offered_password` says
    /// whether credentials were offered.
    NoAcceptableMethod {
        /// Whether user/password authentication was offered.
        offered_password: bool,
    },
    /// The server picked a method that was not offered.
    UnexpectedMethod(u8),
    /// The user/password reply has a version other than 1.
    BadPasswordVersion(u8),
    /// The server rejected the user name or password (its status byte).
    AuthRejected(u8),
    /// The server could not connect to the target.
    Refused(ReplyCode),
    /// The reply carries an unknown address type.
    BadAddressType(u8),
    /// Input arrived after the negotiation finished.
    AlreadyConnected,
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCredentials => {
                f.write_str("user name must be 1 to 255 bytes and password at most 255 bytes")
            }
            Self::BadDomain => f.write_str("target hostname must be 1 to 255 bytes"),
            Self::NotSocks5(v) => write!(f, "not a SOCKS5 server (version byte {v:#04x})"),
            Self::NoAcceptableMethod { offered_password: true } => {
                f.write_str("the server accepts neither no authentication nor user/password")
            }
            Self::NoAcceptableMethod { offered_password: false } => {
                f.write_str("the server requires authentication and no user/password is configured")
            }
            Self::UnexpectedMethod(m) => write!(f, "the server chose method {m:#04x}, which was not offered"),
            Self::BadPasswordVersion(v) => {
                write!(f, "bad user/password reply version {v:#04x} (expected 0x01)")
            }
            Self::AuthRejected(status) => {
                write!(f, "user name or password rejected (status {status:#04x})")
            }
            Self::Refused(code) => write!(f, "CONNECT failed: {code}"),
            Self::BadAddressType(t) => write!(f, "reply has unknown address type {t:#04x}"),
            Self::AlreadyConnected => f.write_str("input after the negotiation finished"),
        }
    }
}

impl core::error::Error for Socks5Error {}

/// What to do next: write `write` (may be empty), then read exactly `read` bytes (the start of
/// the server's next message) into a fresh buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Bytes to send to the server.
    pub write: Vec<u8>,
    /// Bytes to read next.
    pub read: usize,
}

/// The outcome of one [`Connect::handle_input`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The message is incomplete: read until the buffer holds this many bytes in total.
    NeedMore(usize),
    /// The message was complete: do as [`Next`] says.
    Next(Next),
    /// CONNECT succeeded; the stream now carries the target's bytes.
    Connected(Bound),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    MethodReply,
    PasswordReply,
    ConnectReply,
    Done,
}

/// One SOCKS5 CONNECT negotiation.
#[derive(Debug, Clone)]
pub struct Connect {
    state: State,
    target: Target,
    credentials: Option<Credentials>,
}

/// Length of the method selection reply and of the user/password reply.
const SHORT_REPLY: usize = 2;
/// Bytes of a CONNECT reply that tell its total length: VER REP RSV ATYP and one address byte.
const REPLY_HEAD: usize = 5;

impl Connect {
    /// Starts a negotiation for `target`, offering user/password when `credentials` are given
    /// (and no authentication always). Returns the greeting to send and how much to read.
    pub fn new(target: Target, credentials: Option<Credentials>) -> Result<(Self, Next), Socks5Error> {
        if let Some(c) = &credentials
            && !(field_ok(c.user.as_bytes()) && c.password.len() <= 255)
        {
            return Err(Socks5Error::BadCredentials);
        }
        if let Target::Domain(name, _) = &target
            && !field_ok(name.as_bytes())
        {
            return Err(Socks5Error::BadDomain);
        }
        let write = match credentials {
            Some(_) => vec![VERSION, 2, METHOD_NONE, METHOD_PASSWORD],
            None => vec![VERSION, 1, METHOD_NONE],
        };
        let connect = Self { state: State::MethodReply, target, credentials };
        Ok((connect, Next { write, read: SHORT_REPLY }))
    }

    /// Handles the bytes read so far of the server's current message (always from its
    /// first byte).
    pub fn handle_input(&mut self, input: &[u8]) -> Result<Progress, Socks5Error> {
        match self.state {
            State::MethodReply => {
                let Some(&[version, method]) = input.get(..SHORT_REPLY) else {
                    return Ok(Progress::NeedMore(SHORT_REPLY));
                };
                if version != VERSION {
                    return Err(Socks5Error::NotSocks5(version));
                }
                match (method, &self.credentials) {
                    (METHOD_NONE, _) => Ok(self.send_connect()),
                    (METHOD_PASSWORD, Some(c)) => {
                        let write = password_request(c);
                        self.state = State::PasswordReply;
                        Ok(Progress::Next(Next { write, read: SHORT_REPLY }))
                    }
                    (METHOD_NO_ACCEPTABLE, c) => {
                        Err(Socks5Error::NoAcceptableMethod { offered_password: c.is_some() })
                    }
                    (other, _) => Err(Socks5Error::UnexpectedMethod(other)),
                }
            }
            State::PasswordReply => {
                let Some(&[version, status]) = input.get(..SHORT_REPLY) else {
                    return Ok(Progress::NeedMore(SHORT_REPLY));
                };
                if version != PASSWORD_VERSION {
                    return Err(Socks5Error::BadPasswordVersion(version));
                }
                if status != 0 {
                    return Err(Socks5Error::AuthRejected(status));
                }
                Ok(self.send_connect())
            }
            State::ConnectReply => match parse_reply(input)? {
                Reply::NeedMore(total) => Ok(Progress::NeedMore(total)),
                Reply::Bound(bound, _) => {
                    self.state = State::Done;
                    Ok(Progress::Connected(bound))
                }
            },
            State::Done => Err(Socks5Error::AlreadyConnected),
        }
    }

    fn send_connect(&mut self) -> Progress {
        self.state = State::ConnectReply;
        Progress::Next(Next { write: connect_request(&self.target), read: REPLY_HEAD })
    }
}

/// Whether a length-prefixed field fits: 1 to 255 bytes.
fn field_ok(bytes: &[u8]) -> bool {
    (1..=255).contains(&bytes.len())
}

/// The RFC 1929 request: `01 ULEN USER PLEN PASS` (lengths checked by [`Connect::new`]).
fn password_request(c: &Credentials) -> Vec<u8> {
    let (user, password) = (c.user.as_bytes(), c.password.as_bytes());
    let mut out = Vec::with_capacity(3 + user.len() + password.len());
    out.push(PASSWORD_VERSION);
    push_field(&mut out, user);
    push_field(&mut out, password);
    out
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&bytes[..bytes.len().min(255)]);
}

/// The CONNECT request: `05 01 00 ATYP DST.ADDR DST.PORT`.
pub fn connect_request(target: &Target) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 1 + 255 + 2);
    out.extend_from_slice(&[VERSION, CMD_CONNECT, 0]);
    let port = match target {
        Target::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Domain(name, port) => {
            out.push(ATYP_DOMAIN);
            push_field(&mut out, name.as_bytes());
            *port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// A parsed CONNECT reply, or how long the buffer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Incomplete: the reply is at least this many bytes long.
    NeedMore(usize),
    /// Success: the bound address and the reply's length in bytes.
    Bound(Bound, usize),
}

/// Parses a CONNECT reply `05 REP RSV ATYP BND.ADDR BND.PORT` from the start of `input`.
/// The reserved byte is not checked (servers differ); a non-zero `REP` is an error even
/// before the whole reply arrived.
pub fn parse_reply(input: &[u8]) -> Result<Reply, Socks5Error> {
    let Some(&[version, code, _reserved, atyp, first]) = input.get(..REPLY_HEAD) else {
        // Judge what is there already: a wrong version or a failure code needs no more bytes.
        if let Some(&version) = input.first()
            && version != VERSION
        {
            return Err(Socks5Error::NotSocks5(version));
        }
        if let Some(&code) = input.get(1)
            && code != 0
        {
            return Err(Socks5Error::Refused(ReplyCode(code)));
        }
        return Ok(Reply::NeedMore(REPLY_HEAD));
    };
    if version != VERSION {
        return Err(Socks5Error::NotSocks5(version));
    }
    if code != 0 {
        return Err(Socks5Error::Refused(ReplyCode(code)));
    }
    let addr_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => 1 + usize::from(first),
        other => return Err(Socks5Error::BadAddressType(other)),
    };
    let total = 4 + addr_len + 2;
    let Some(addr_and_port) = input.get(4..total) else {
        return Ok(Reply::NeedMore(total));
    };
    let (addr, port) = addr_and_port.split_at(addr_len);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let bound = match atyp {
        ATYP_IPV4 => {
            let octets: [u8; 4] = addr.try_into().unwrap_or_default();
            Bound::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = addr.try_into().unwrap_or_default();
            Bound::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => Bound::Domain(addr[1..].to_vec(), port),
    };
    Ok(Reply::Bound(bound, total))
}

/// Encodes a CONNECT reply (the server side, for tests and fuzz seeds).
pub fn encode_reply(code: u8, bound: &Bound) -> Vec<u8> {
    let mut out = vec![VERSION, code, 0];
    let port = match bound {
        Bound::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Bound::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Bound::Domain(name, port) => {
            out.push(ATYP_DOMAIN);
            push_field(&mut out, name);
            *port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials { user: user.into(), password: password.into() }
    }

    /// Feeds each server message in one piece; returns what the client wrote after its
    /// greeting, and the outcome.
    fn run(
        target: Target,
        credentials: Option<Credentials>,
        server: &[&[u8]],
    ) -> (Vec<u8>, Vec<u8>, Result<Bound, Socks5Error>) {
        let (mut c, first) = Connect::new(target, credentials).expect("valid");
        let mut written = Vec::new();
        let mut read = first.read;
        for message in server {
            assert_eq!(read, message.len().min(read));
            match c.handle_input(message) {
                Ok(Progress::Next(next)) => {
                    written.extend_from_slice(&next.write);
                    read = next.read;
                }
                Ok(Progress::Connected(bound)) => return (first.write, written, Ok(bound)),
                Ok(Progress::NeedMore(n)) => panic!("needs {n} more"),
                Err(e) => return (first.write, written, Err(e)),
            }
        }
        panic!("server script ended early");
    }

    #[test]
    fn no_auth_connect_to_ipv4_is_byte_exact() {
        let target = Target::Ip("149.154.167.51:443".parse().expect("literal"));
        let (greeting, written, outcome) =
            run(target, None, &[&[5, 0], &[5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]]);
        assert_eq!(greeting, [5, 1, 0]);
        assert_eq!(written, [5, 1, 0, 1, 149, 154, 167, 51, 1, 187]);
        assert_eq!(outcome, Ok(Bound::Ip("127.0.0.1:8080".parse().expect("literal"))));
    }

    #[test]
    fn password_auth_then_ipv6_connect() {
        let target = Target::Ip("[2001:db8::1]:443".parse().expect("literal"));
        let reply = encode_reply(0, &Bound::Domain(b"relay".to_vec(), 7));
        let (greeting, written, outcome) =
            run(target, Some(creds("bob", "s3cret")), &[&[5, 2], &[1, 0], &reply]);
        assert_eq!(greeting, [5, 2, 0, 2]);
        let mut expected = vec![1, 3, b'b', b'o', b'b', 6, b's', b'3', b'c', b'r', b'e', b't'];
        expected.extend_from_slice(&[5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8]);
        expected.extend_from_slice(&[0; 11]);
        expected.extend_from_slice(&[1, 1, 187]);
        assert_eq!(written, expected);
        assert_eq!(outcome, Ok(Bound::Domain(b"relay".to_vec(), 7)));
    }

    #[test]
    fn server_may_skip_auth_even_when_offered() {
        let target = Target::Domain("dc.example".into(), 443);
        let (_, written, outcome) =
            run(target, Some(creds("u", "p")), &[&[5, 0], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]]);
        let mut expected = vec![5, 1, 0, 3, 10];
        expected.extend_from_slice(b"dc.example");
        expected.extend_from_slice(&[1, 187]);
        assert_eq!(written, expected);
        assert!(outcome.is_ok());
    }

    #[test]
    fn failures_are_named() {
        let ip = || Target::Ip("10.0.0.1:443".parse().expect("literal"));
        let err = |credentials, server: &[&[u8]]| run(ip(), credentials, server).2.expect_err("fails");
        assert_eq!(err(None, &[&[4, 0]]), Socks5Error::NotSocks5(4));
        assert_eq!(err(None, &[&[5, 0xff]]), Socks5Error::NoAcceptableMethod { offered_password: false });
        assert_eq!(err(None, &[&[5, 2]]), Socks5Error::UnexpectedMethod(2));
        assert_eq!(err(Some(creds("u", "p")), &[&[5, 2], &[1, 1]]), Socks5Error::AuthRejected(1));
        assert_eq!(err(Some(creds("u", "p")), &[&[5, 2], &[5, 0]]), Socks5Error::BadPasswordVersion(5));
        let refused = err(None, &[&[5, 0], &[5, 5, 0, 1, 0]]);
        assert_eq!(refused, Socks5Error::Refused(ReplyCode(5)));
        assert_eq!(refused.to_string(), "CONNECT failed: connection refused (reply code 0x05)");
        assert_eq!(err(None, &[&[5, 0], &[5, 0, 0, 9, 0]]), Socks5Error::BadAddressType(9));
        assert_eq!(Connect::new(ip(), Some(creds("", "p"))).map(|_| ()), Err(Socks5Error::BadCredentials));
        assert_eq!(
            Connect::new(ip(), Some(creds("u", &"p".repeat(256)))).map(|_| ()),
            Err(Socks5Error::BadCredentials)
        );
        let (_, written, _) = run(ip(), Some(creds("u", "")), &[&[5, 2], &[1, 9]]);
        assert_eq!(written, [1, 1, b'u', 0]);
        assert_eq!(
            Connect::new(Target::Domain("x".repeat(256), 1), None).map(|_| ()),
            Err(Socks5Error::BadDomain)
        );
        assert_eq!(ReplyCode(0x42).meaning(), "unassigned reply code");
    }

    #[test]
    fn partial_replies_ask_for_exact_lengths() {
        assert_eq!(parse_reply(&[]), Ok(Reply::NeedMore(5)));
        assert_eq!(parse_reply(&[5, 0, 0, 3, 4]), Ok(Reply::NeedMore(11)));
        assert_eq!(parse_reply(&[5, 0, 0, 4, 0]), Ok(Reply::NeedMore(22)));
        assert_eq!(parse_reply(&[5, 1]), Err(Socks5Error::Refused(ReplyCode(1))));
        let (mut c, _) = Connect::new(Target::Ip("10.0.0.1:1".parse().expect("literal")), None).expect("ok");
        assert_eq!(c.handle_input(&[5]), Ok(Progress::NeedMore(2)));
        assert!(matches!(c.handle_input(&[5, 0]), Ok(Progress::Next(_))));
        assert_eq!(c.handle_input(&[5, 0, 0, 4, 0]), Ok(Progress::NeedMore(22)));
        let mut reply = vec![5, 0, 0, 4];
        reply.extend_from_slice(&[0; 18]);
        assert_eq!(c.handle_input(&reply), Ok(Progress::Connected(Bound::Ip("[::]:0".parse().expect("v6")))));
        assert_eq!(c.handle_input(&reply), Err(Socks5Error::AlreadyConnected));
    }

    fn bound_strategy() -> impl Strategy<Value = Bound> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| Bound::Ip(SocketAddr::new(ip.into(), p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| Bound::Ip(SocketAddr::new(ip.into(), p))),
            (proptest::collection::vec(any::<u8>(), 0..=255), any::<u16>())
                .prop_map(|(name, p)| Bound::Domain(name, p)),
        ]
    }

    proptest! {
        #[test]
        fn reply_round_trips_and_every_prefix_asks_for_more(bound in bound_strategy(), extra in any::<Vec<u8>>()) {
            let mut bytes = encode_reply(0, &bound);
            let len = bytes.len();
            for cut in 0..len {
                match parse_reply(&bytes[..cut]) {
                    Ok(Reply::NeedMore(n)) => prop_assert!(n > cut && n <= len),
                    other => prop_assert!(false, "prefix {cut}: {other:?}"),
                }
            }
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(parse_reply(&bytes), Ok(Reply::Bound(bound, len)));
        }

        #[test]
        fn failure_codes_are_reported(code in 1u8.., bound in bound_strategy()) {
            let bytes = encode_reply(code, &bound);
            prop_assert_eq!(parse_reply(&bytes), Err(Socks5Error::Refused(ReplyCode(code))));
        }

        #[test]
        fn connect_request_round_trips_through_the_reply_parser(
            ip in any::<[u8; 16]>(), v4 in any::<[u8; 4]>(), port in any::<u16>(),
            name in "[a-z0-9.-]{1,255}", pick in 0u8..3,
        ) {
            // A request has the reply's layout (with CMD where REP is): decode it as one.
            let (target, bound) = match pick {
                0 => { let a = SocketAddr::new(v4.into(), port); (Target::Ip(a), Bound::Ip(a)) }
                1 => { let a = SocketAddr::new(ip.into(), port); (Target::Ip(a), Bound::Ip(a)) }
                _ => (Target::Domain(name.clone(), port), Bound::Domain(name.into_bytes(), port)),
            };
            let mut request = connect_request(&target);
            prop_assert_eq!(request[1], CMD_CONNECT);
            request[1] = 0;
            let len = request.len();
            prop_assert_eq!(parse_reply(&request), Ok(Reply::Bound(bound, len)));
        }

        #[test]
        fn arbitrary_server_bytes_never_panic(messages in proptest::collection::vec(any::<Vec<u8>>(), 0..4)) {
            let (mut c, _) = Connect::new(
                Target::Ip("10.0.0.1:443".parse().expect("literal")),
                Some(creds("user", "pass")),
            ).expect("valid");
            for m in &messages {
                if c.handle_input(m).is_err() {
                    break;
                }
            }
        }
    }
}
