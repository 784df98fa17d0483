//! Packet captures of loopback traffic: `tcpdump` on `lo` writing a pcap file, and a tiny
//! reader of that file down to the TCP segments (addresses, flags, sequence number, payload
//! length, the MSS option). For tests that run in a loopback-only namespace ([`crate::netns`]).

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Turns off TSO and GSO on `lo` (needs a namespace of its own): otherwise a capture shows the
/// super-packets the stack hands down, larger than the segments TCP sends.
pub fn segment_offloads_off() {
    let out = Command::new("ethtool")
        .args(["-K", "lo", "tso", "off", "gso", "off"])
        .output()
        .expect("ethtool is installed");
    assert!(out.status.success(), "ethtool -K lo: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running `tcpdump -i lo` streaming a pcap file to this process, which keeps it.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    file: Arc<(Mutex<Vec<u8>>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tcpdump {
    /// Starts capturing on `lo` what `filter` (a pcap filter) matches (headers only: 128 bytes
    /// of each packet, delivered at once), and returns once tcpdump says it is listening.
    pub fn start(filter: &str) -> Self {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-nn", "--immediate-mode", "-U", "-s", "128", "-w", "-"])
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump is installed");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stdout = child.stdout.take().expect("piped stdout");
        let file = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let reader = std::thread::spawn({
            let file = file.clone();
            move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    file.0.lock().expect("capture buffer").extend_from_slice(&buf[..n]);
                    file.1.notify_all();
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tcpdump did not start listening: {seen:?}");
                }
            }
        }
        Self { child, file, reader: Some(reader) }
    }

    /// Waits (up to `timeout`) until the segments captured so far satisfy `done`; `false` if
    /// they did not in time.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Segment]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.file;
        let mut file = lock.lock().expect("capture buffer");
        loop {
            if read_pcap_prefix(&file).is_ok_and(|segments| done(&segments)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            file = changed.wait_timeout(file, left).expect("capture buffer").0;
        }
    }

    /// Stops the capture (SIGINT), waits for tcpdump's exit and returns every segment.
    pub fn stop(mut self) -> Vec<Segment> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -INT {pid} failed");
        let status = self.child.wait().expect("wait for tcpdump");
        assert!(status.success(), "tcpdump ended with {status}");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the capture reader");
        }
        let file = self.file.0.lock().expect("capture buffer");
        read_pcap(&file).unwrap_or_else(|e| panic!("the capture: {e}"))
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        // A test that failed before `stop`: no capture left running (after `stop`, a no-op).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One captured IPv4 TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
    /// Sequence number.
    pub seq: u32,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Bytes of TCP payload (from the IP lengths, whatever the snap length kept).
    pub payload: usize,
    /// The MSS option, if the segment carries one (SYN, SYN-ACK).
    pub mss: Option<u16>,
}

impl Segment {
    /// A SYN without ACK.
    pub fn is_syn(&self) -> bool {
        self.flags & 0x12 == 0x02
    }

    /// A SYN-ACK.
    pub fn is_syn_ack(&self) -> bool {
        self.flags & 0x12 == 0x12
    }
}

/// The TCP-over-IPv4 segments of a classic pcap file (Ethernet, Linux cooked v1/v2 or raw IP
/// link types); other packets are skipped. An error names what is malformed.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<Segment>, String> {
    read_records(bytes, false)
}

/// Like [`read_pcap`] for a file still being written: a truncated last record is left out.
pub fn read_pcap_prefix(bytes: &[u8]) -> Result<Vec<Segment>, String> {
    read_records(bytes, true)
}

fn read_records(bytes: &[u8], partial: bool) -> Result<Vec<Segment>, String> {
    let header = bytes.get(..24).ok_or("shorter than the pcap file header")?;
    let magic: [u8; 4] = header[..4].try_into().map_err(|_| "magic")?;
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => return Err(format!("not a pcap file (magic {other:02x?}; pcapng is not read)")),
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) })
    };
    let link = u32_at(header, 20).ok_or("link type")?;
    let link_len = match link {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked v1
        276 => 20, // Linux cooked v2
        101 => 0,  // raw IP
        other => return Err(format!("unsupported link type {other}")),
    };
    let mut segments = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let whole = bytes.get(at..at + 16).and_then(|record| {
            let caplen = u32_at(record, 8)? as usize;
            Some((caplen, bytes.get(at + 16..at + 16 + caplen)?))
        });
        let Some((caplen, data)) = whole else {
            if partial {
                break;
            }
            return Err(format!("truncated record at byte {at}"));
        };
        at += 16 + caplen;
        if let Some(segment) = data.get(link_len..).and_then(tcp_over_ipv4) {
            segments.push(segment);
        }
    }
    Ok(segments)
}

fn tcp_over_ipv4(ip: &[u8]) -> Option<Segment> {
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let addr = |at: usize| -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(*ip.get(at)?, ip[at + 1], ip[at + 2], ip[at + 3]))
    };
    let (src_ip, dst_ip) = (addr(12)?, addr(16)?);
    let tcp = ip.get(ihl..)?;
    let port = |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?])) };
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    let mut mss = None;
    let mut options = tcp.get(20..data_offset).unwrap_or_default();
    while let Some(&kind) = options.first() {
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?).max(2);
                if kind == 2 && len == 4 {
                    mss = Some(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
                }
                options = options.get(len..).unwrap_or_default();
            }
        }
    }
    Some(Segment {
        src: SocketAddrV4::new(src_ip, port(0)?),
        dst: SocketAddrV4::new(dst_ip, port(2)?),
        seq,
        flags,
        payload: total.checked_sub(ihl + data_offset)?,
        mss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_syn_ack_with_its_mss_and_a_data_segment() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend([0; 8]);
        file.extend(128u32.to_le_bytes());
        file.extend(1u32.to_le_bytes());
        let packet = |flags: u8, options: &[u8], payload: usize| {
            let tcp_len = 20 + options.len();
            let total = (20 + tcp_len + payload) as u16;
            let mut p = vec![0u8; 14];
            p[12] = 0x08;
            p.extend([
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0,
                0,
                64,
                6,
                0,
                0,
                127,
                0,
                0,
                1,
                127,
                0,
                0,
                2,
            ]);
            p.extend([
                0x0c,
                0x38,
                0x1f,
                0x90,
                0,
                0,
                0,
                7,
                0,
                0,
                0,
                0,
                ((tcp_len / 4) << 4) as u8,
                flags,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            p.extend(options);
            p
        };
        for p in [packet(0x12, &[2, 4, 0, 92, 1, 1, 4, 2], 0), packet(0x18, &[], 80)] {
            file.extend([0; 8]);
            file.extend((p.len() as u32).to_le_bytes());
            file.extend(((p.len() + 80) as u32).to_le_bytes());
            file.extend(&p);
        }
        let segments = read_pcap(&file).unwrap();
        assert_eq!(segments.len(), 2);
        assert!(segments[0].is_syn_ack() && segments[0].mss == Some(92) && segments[0].payload == 0);
        assert_eq!(segments[0].src, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(segments[0].dst, "127.0.0.2:8080".parse().unwrap());
        assert_eq!((segments[1].seq, segments[1].payload, segments[1].mss), (7, 80, None));
        assert!(read_pcap(&file[..30]).is_err());
        assert_eq!(read_pcap_prefix(&file[..file.len() - 1]).unwrap(), segments[..1]);
        assert!(read_pcap(b"\x0a\x0d\x0d\x0a").is_err());
    }
}
