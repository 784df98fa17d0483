//! TCP options of the proxy's sockets (reference §4.j): keep-alive and TCP_USER_TIMEOUT on DC
//! dials as `[network.keep-alive]` says, a fixed keep-alive on accepted clients. Best effort:
//! a platform that refuses an option still gets the connection.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Keep-alive probe timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dead.
    pub count: u32,
}

/// Options applied to one kind of socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpTuning {
    /// Keep-alive, or off.
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT (Linux): unacknowledged data older than this kills the connection.
    pub user_timeout: Option<Duration>,
}

impl TcpTuning {
    /// mtg's options for accepted client sockets: keep-alive 30 s / 10 s / 3.
    pub fn accepted() -> Self {
        Self {
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                count: 3,
            }),
            user_timeout: None,
        }
    }

    /// Options for DC dials: keep-alive as configured and TCP_USER_TIMEOUT = idle + interval ×
    /// count (150 s with the defaults), as mtg.
    pub fn outbound(keepalive: Option<Keepalive>) -> Self {
        let user_timeout = keepalive.map(|k| k.idle + k.interval * k.count);
        Self { keepalive, user_timeout }
    }

    /// Applies the options to a connected socket.
    pub fn apply(&self, socket: SockRef<'_>) -> io::Result<()> {
        if let Some(k) = self.keepalive {
            let params =
                TcpKeepalive::new().with_time(k.idle).with_interval(k.interval).with_retries(k.count);
            socket.set_tcp_keepalive(&params)?;
        }
        #[cfg(target_os = "linux")]
        if let Some(timeout) = self.user_timeout {
            socket.set_tcp_user_timeout(Some(timeout))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let k = Keepalive { idle: Duration::from_secs(15), interval: Duration::from_secs(15), count: 9 };
        TcpTuning::outbound(Some(k)).apply(SockRef::from(&stream)).unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(15));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(15));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 9);
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(150)));
    }

    #[test]
    fn accepted_clients_get_mtg_keepalive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        TcpTuning::accepted().apply(SockRef::from(&stream)).unwrap();
        let sock = SockRef::from(&stream);
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
    }
}
