//! statsd over UDP, in the line format of the statsd client mtg uses.
//!
//! Nothing is sent per event: the store's counters are read every [`FLUSH_EVERY`] and what
//! changed since the previous flush goes out, several lines (`\n`-separated) per datagram of
//! at most [`MAX_PACKET`] bytes. Lines (prefix `mtg.`, a series with tags `k1=v1`, `k2=v2`):
//!
//! | kind | datadog | influxdb | graphite |
//! |---|---|---|---|
//! | counter (increase) | `mtg.name:30\|c\|#k1:v1,k2:v2` | `mtg.name,k1=v1,k2=v2:30\|c` | `mtg.name;k1=v1;k2=v2:30\|c` |
//! | gauge (change) | `mtg.name:+1\|g\|#k1:v1` / `:-2\|g…` | `mtg.name,k1=v1:+1\|g` | `mtg.name;k1=v1:+1\|g` |
//! | level (`iplist_size`) | `mtg.name:42\|g\|#k1:v1` | `mtg.name,k1=v1:42\|g` | `mtg.name;k1=v1:42\|g` |
//!
//! A series without tags is just `mtg.name:1|c`. Tag values are sanitised: any of
//! `:|,;=#@`, whitespace or control characters becomes `_` (user names are free text).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::config::TagFormat;

/// How often changes are sent.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Largest datagram (fits a 1500-byte MTU with IPv6 and UDP headers to spare).
pub const MAX_PACKET: usize = 1432;

/// Where and how statsd lines are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdSettings {
    /// `[stats.statsd] address`.
    pub address: SocketAddr,
    /// `[stats.statsd] metric-prefix`, prepended verbatim.
    pub prefix: String,
    /// `[stats.statsd] tag-format`.
    pub tag_format: TagFormat,
}

/// What one line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A counter's increase (`|c`).
    Count(i64),
    /// A gauge's change (`+N|g` or `-N|g`).
    Delta(i64),
    /// A level (`N|g`).
    Level(i64),
}

fn sanitized(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            ':' | '|' | ',' | ';' | '=' | '#' | '@' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// One statsd line for the series `name{labels}`.
pub(crate) fn line(
    settings: &StatsdSettings,
    name: &str,
    labels: &[(&'static str, String)],
    change: Change,
) -> String {
    let value = match change {
        Change::Count(n) => format!("{n}|c"),
        Change::Delta(n) => format!("{n:+}|g"),
        Change::Level(n) => format!("{n}|g"),
    };
    let tags = |first: &str, between: &str, pair: &str| {
        let mut out = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            out.push_str(if i == 0 { first } else { between });
            out.push_str(k);
            out.push_str(pair);
            out.push_str(&sanitized(v));
        }
        out
    };
    let prefix = &settings.prefix;
    match settings.tag_format {
        TagFormat::Datadog => format!("{prefix}{name}:{value}{}", tags("|#", ",", ":")),
        TagFormat::Influxdb => format!("{prefix}{name}{}:{value}", tags(",", ",", "=")),
        TagFormat::Graphite => format!("{prefix}{name}{}:{value}", tags(";", ";", "=")),
    }
}

/// Groups lines into datagrams of at most [`MAX_PACKET`] bytes (a longer line goes alone).
pub(crate) fn datagrams(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_PACKET {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A non-blocking UDP socket connected to the statsd address.
#[derive(Debug)]
pub struct StatsdSink {
    socket: UdpSocket,
}

impl StatsdSink {
    /// Opens the socket (never blocks afterwards).
    pub fn open(address: SocketAddr) -> io::Result<Self> {
        let local: SocketAddr = if address.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(address)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    /// Sends the lines; a datagram the socket cannot take now (or an error such as a refused
    /// port) is dropped, as UDP metrics may be. Returns how many datagrams went out.
    pub fn send(&self, lines: &[String]) -> usize {
        datagrams(lines).iter().filter(|d| self.socket.send(d.as_bytes()).is_ok()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tag_format: TagFormat) -> StatsdSettings {
        StatsdSettings { address: "127.0.0.1:8125".parse().unwrap(), prefix: "mtg.".into(), tag_format }
    }

    #[test]
    fn lines_follow_each_tag_format() {
        let labels = vec![
            ("telegram_ip", "10.1.0.10".to_owned()),
            ("dc", "2".to_owned()),
            ("direction", "to_client".to_owned()),
        ];
        let cases = [
            (TagFormat::Datadog, "mtg.telegram_traffic:30|c|#telegram_ip:10.1.0.10,dc:2,direction:to_client"),
            (TagFormat::Influxdb, "mtg.telegram_traffic,telegram_ip=10.1.0.10,dc=2,direction=to_client:30|c"),
            (TagFormat::Graphite, "mtg.telegram_traffic;telegram_ip=10.1.0.10;dc=2;direction=to_client:30|c"),
        ];
        for (format, want) in cases {
            assert_eq!(line(&settings(format), "telegram_traffic", &labels, Change::Count(30)), want);
        }
        let family = vec![("ip_family", "ipv6".to_owned())];
        let datadog = settings(TagFormat::Datadog);
        assert_eq!(
            line(&datadog, "client_connections", &family, Change::Delta(1)),
            "mtg.client_connections:+1|g|#ip_family:ipv6"
        );
        assert_eq!(
            line(&settings(TagFormat::Graphite), "client_connections", &family, Change::Delta(-2)),
            "mtg.client_connections;ip_family=ipv6:-2|g"
        );
        assert_eq!(
            line(
                &settings(TagFormat::Influxdb),
                "iplist_size",
                &[("ip_list", "blocklist".into())],
                Change::Level(0)
            ),
            "mtg.iplist_size,ip_list=blocklist:0|g"
        );
        assert_eq!(line(&datadog, "replay_attacks", &[], Change::Count(3)), "mtg.replay_attacks:3|c");
    }

    #[test]
    fn tag_values_cannot_break_the_line() {
        let labels = vec![("user", "a:b|c,d;e=f#g@h i\nj".to_owned())];
        assert_eq!(
            line(&settings(TagFormat::Datadog), "user_throttled", &labels, Change::Count(1)),
            "mtg.user_throttled:1|c|#user:a_b_c_d_e_f_g_h_i_j"
        );
    }

    #[test]
    fn datagrams_stay_under_the_packet_size() {
        let lines: Vec<String> = (0..100).map(|i| format!("{i:0>40}")).collect();
        let grams = datagrams(&lines);
        assert!(grams.iter().all(|g| g.len() <= MAX_PACKET));
        assert_eq!(grams.join("\n").split('\n').collect::<Vec<_>>(), lines);
        assert_eq!(grams.len(), 3, "40 bytes + newline a line: 34 lines (1393 bytes) per datagram");
        assert!(datagrams(&[]).is_empty());
    }

    #[test]
    fn sink_sends_lines_to_the_address() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sink = StatsdSink::open(server.local_addr().unwrap()).unwrap();
        assert_eq!(sink.send(&["a:1|c".to_owned(), "b:+1|g".to_owned()]), 1);
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c\nb:+1|g");
    }
}
