//! A TCP listener that answers nothing and records the first bytes each connection sends:
//! for finding out what a real client sends first (TDLib's ClientHello, Telethon's frame).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::runtime;

/// Bytes kept per connection.
pub const LIMIT: usize = 64 * 1024;
/// A connection's recording ends after this long without new bytes.
pub const QUIET: Duration = Duration::from_secs(3);

/// One connection's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The client's address.
    pub peer: SocketAddr,
    /// What it sent before going quiet for [`QUIET`] (or up to [`LIMIT`]).
    pub bytes: Vec<u8>,
    /// Whether recording finished (quiet, limit, or the client closed).
    pub done: bool,
    /// Wall-clock time (since the Unix epoch) when the first bytes arrived: the `now` to
    /// validate a recorded ClientHello's timestamp against.
    pub first_at: Option<Duration>,
}

/// A running recorder on `127.0.0.1:0`; stops when dropped.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Vec<Recorded>>) -> MutexGuard<'_, Vec<Recorded>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// Starts listening on `127.0.0.1:0`.
    pub fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("recorder address");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&conns);
        let task = runtime::handle().spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("register the recorder");
            let mut tasks = JoinSet::new();
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    continue;
                };
                let index = {
                    let mut list = lock(&shared);
                    list.push(Recorded { peer, bytes: Vec::new(), done: false, first_at: None });
                    list.len() - 1
                };
                let shared = Arc::clone(&shared);
                tasks.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let read = tokio::time::timeout(QUIET, stream.read(&mut buf)).await;
                        let n = match read {
                            Ok(Ok(n)) if n > 0 => n,
                            _ => break,
                        };
                        let mut list = lock(&shared);
                        let entry = &mut list[index];
                        entry.first_at.get_or_insert_with(crate::mtproto::unix_now);
                        let bytes = &mut entry.bytes;
                        let room = LIMIT.saturating_sub(bytes.len());
                        bytes.extend_from_slice(&buf[..n.min(room)]);
                        if bytes.len() >= LIMIT {
                            break;
                        }
                    }
                    lock(&shared)[index].done = true;
                    // Keep the socket open without answering until the recorder is dropped.
                    std::future::pending::<()>().await;
                });
            }
        });
        Self { addr, conns, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What every connection sent so far.
    pub fn snapshot(&self) -> Vec<Recorded> {
        lock(&self.conns).clone()
    }

    /// Blocks until a first connection finished recording or `timeout` passes.
    pub fn wait_first(&self, timeout: Duration) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(r) = lock(&self.conns).iter().find(|r| r.done && !r.bytes.is_empty()) {
                return Some(r.clone());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The server names in the SNI extension of a TLS ClientHello record at the start of
/// `record` (one record, as sent by TDLib); `None` if it does not parse.
pub fn hello_sni(record: &[u8]) -> Option<Vec<String>> {
    let body = record.get(5..)?;
    if *body.first()? != 0x01 {
        return None;
    }
    let mut at = 4 + 2 + 32;
    let sid_len = usize::from(*body.get(at)?);
    at += 1 + sid_len;
    let suites = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2 + suites;
    let comp = usize::from(*body.get(at)?);
    at += 1 + comp;
    let ext_total = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2;
    let end = at + ext_total;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let data = body.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        if kind != 0 {
            continue;
        }
        let mut names = Vec::new();
        let mut p = 2;
        while p + 3 <= data.len() {
            let name_len = usize::from(u16::from_be_bytes([data[p + 1], data[p + 2]]));
            let name = data.get(p + 3..p + 3 + name_len)?;
            names.push(String::from_utf8_lossy(name).into_owned());
            p += 3 + name_len;
        }
        return Some(names);
    }
    Some(Vec::new())
}

/// The extension types of a TLS ClientHello record, in order (for fingerprint notes).
pub fn hello_extensions(record: &[u8]) -> Option<Vec<u16>> {
    let body = record.get(5..)?;
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(*body.get(at)?);
    at += 2 + usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 1 + usize::from(*body.get(at)?);
    let end = at + 2 + usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2;
    let mut out = Vec::new();
    while at + 4 <= end.min(body.len()) {
        out.push(u16::from_be_bytes([body[at], body[at + 1]]));
        at += 4 + usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
    }
    Some(out)
}
