//! `[network] client-mss` and `client-mss-bulk` (Linux): the handshake with a client leaves in
//! small TCP segments, against DPI boxes that do not reassemble them.
//!
//! What Linux does, measured with tcpdump on `lo` (TSO/GSO off, kernel 6.18):
//! - TCP_MAXSEG set on a listener before `listen()` is advertised in the SYN-ACK and caps every
//!   segment of the accepted connection, both ways, for its whole life (MSS 92 = 80 bytes of
//!   payload beside the 12-byte timestamp option).
//! - TCP_MAXSEG set on an established socket changes nothing, neither lower nor higher: the
//!   clamp is fixed at the handshake. So the segment size cannot be raised once the relay starts.
//! - Data written in pieces, each with MSG_EOR on a TCP_NODELAY socket, leaves as one segment
//!   per piece (or smaller), even when the pieces queue behind the peer's window; without
//!   MSG_EOR queued pieces are merged into full-sized segments.
//!
//! So `client-mss` alone clamps the listener; with `client-mss-bulk` the listener is clamped to
//! the bulk size instead and the server's handshake flight is written in `client-mss` pieces
//! with MSG_EOR, after which the relay writes as usual.

use std::io;
use std::net::SocketAddr;

use crate::config::Network;
use crate::runtime::Runtime;

/// The segment sizes of client connections, as the listeners and the handshake apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientSegments {
    /// TCP_MAXSEG of the listening sockets (advertised in the SYN-ACK); `None` = the kernel's.
    pub listener: Option<u16>,
    /// Largest piece of the server's handshake flight, each sent with MSG_EOR; `None` = one write.
    pub flight_piece: Option<u16>,
}

impl ClientSegments {
    /// What `[network]` asks for, on this platform (nothing but on Linux).
    pub fn from_config(network: &Network) -> Self {
        if !cfg!(target_os = "linux") {
            return Self::default();
        }
        match (network.client_mss, network.client_mss_bulk) {
            (Some(handshake), Some(bulk)) => Self { listener: Some(bulk), flight_piece: Some(handshake) },
            (handshake, _) => Self { listener: handshake, flight_piece: None },
        }
    }
}

/// Whether `[network]` asks for segment sizes this platform cannot set (logged once at start).
pub(crate) fn unsupported(network: &Network) -> bool {
    !cfg!(target_os = "linux") && (network.client_mss.is_some() || network.client_mss_bulk.is_some())
}

/// Opens a client listener on `addr`: the runtime's own, or with `mss` as TCP_MAXSEG set before
/// `listen()` (SO_REUSEADDR and backlog 1024 as the runtime's).
pub(crate) fn bind<R: Runtime>(runtime: &R, addr: SocketAddr, mss: Option<u16>) -> io::Result<R::Listener> {
    let Some(mss) = mss else {
        return runtime.bind(addr);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket
        .set_tcp_mss(u32::from(mss))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot set client-mss {mss} (TCP_MAXSEG): {e}")))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    runtime.adopt_listener(socket.into())
}

/// Writes `bytes` to `stream` in pieces of at most `piece` bytes, each sent with MSG_EOR so the
/// kernel sends it as a segment of its own.
pub(crate) async fn write_in_pieces<R: Runtime>(
    stream: &mut R::Stream,
    bytes: &[u8],
    piece: u16,
) -> io::Result<()> {
    for chunk in bytes.chunks(usize::from(piece.max(1))) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match R::send_eor(&mut *stream, rest).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => rest = rest.get(n..).unwrap_or_default(),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(client_mss: Option<u16>, client_mss_bulk: Option<u16>) -> Network {
        let text = "secret = \"ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d\"\n\
            bind-to = \"127.0.0.1:3128\"\n";
        let mut network = crate::config::Config::from_toml_str(text).expect("a valid config").config.network;
        network.client_mss = client_mss;
        network.client_mss_bulk = client_mss_bulk;
        network
    }

    #[test]
    fn the_listener_gets_the_bulk_size_and_the_flight_the_small_one() {
        let segments = |a, b| ClientSegments::from_config(&network(a, b));
        assert_eq!(segments(None, None), ClientSegments::default());
        if cfg!(target_os = "linux") {
            assert_eq!(segments(Some(92), None), ClientSegments { listener: Some(92), flight_piece: None });
            assert_eq!(
                segments(Some(92), Some(1400)),
                ClientSegments { listener: Some(1400), flight_piece: Some(92) }
            );
            assert!(!unsupported(&network(Some(92), Some(1400))));
        } else {
            assert_eq!(segments(Some(92), Some(1400)), ClientSegments::default());
            assert!(unsupported(&network(Some(92), None)));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_listener_carries_the_mss_to_accepted_sockets() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_tcp_mss(92).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        socket.listen(8).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The effective MSS less the 12-byte timestamp option, both ways.
        assert!(socket2::SockRef::from(&accepted).tcp_mss().unwrap() <= 92);
        assert!(socket2::SockRef::from(&client).tcp_mss().unwrap() <= 92);
    }
}
