//! A fake of Telegram's middle-proxy bootstrap (`core.telegram.org/getProxySecret`,
//! `getProxyConfig`, `getProxyConfigV6`): plain HTTP/1.1 on 127.0.0.1, served by std threads.
//! By default the secret is 128 fixed bytes, the IPv4 config is `default 2;` plus the
//! `proxy_for` lines the test gave, and the IPv6 config answers 404. Bodies, statuses and the
//! `Date` header's offset from our clock can be changed at run time; every answered request
//! is counted per document, so a test waits on requests, not on time.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// One of the three documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// `/getProxySecret`.
    Secret,
    /// `/getProxyConfig` (IPv4).
    Config,
    /// `/getProxyConfigV6`.
    ConfigV6,
}

impl Doc {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Secret => "/getProxySecret",
            Self::Config => "/getProxyConfig",
            Self::ConfigV6 => "/getProxyConfigV6",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The secret served by default: 128 fixed bytes starting `c4 f9 fa ca` like Telegram's.
pub fn default_secret() -> Vec<u8> {
    secret_with(0)
}

/// A 128-byte secret that differs from the default one by `variant` (0 = the default).
pub fn secret_with(variant: u8) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..128u32).map(|i| (i.wrapping_mul(37).wrapping_add(11) >> 1) as u8).collect();
    bytes[..4].copy_from_slice(&[0xc4, 0xf9, 0xfa, 0xca]);
    bytes[4] = variant;
    bytes
}

/// A `getProxyConfig` text: `default 2;` and one `proxy_for DC ADDR;` line per entry.
pub fn config_text(proxies: &[(i16, SocketAddr)]) -> String {
    let mut text = String::from("# fake getProxyConfig\ndefault 2;\n");
    for (dc, addr) in proxies {
        let _ = writeln!(text, "proxy_for {dc} {addr};");
    }
    text
}

#[derive(Debug, Clone)]
struct Route {
    status: u16,
    body: Vec<u8>,
}

#[derive(Debug)]
struct State {
    routes: [Route; 3],
    /// Seconds added to our clock in the `Date` header.
    date_offset: i64,
    /// Answered requests per document.
    answered: [usize; 3],
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Most connections one server accepts (a bound on its accept loop).
const MAX_CONNECTIONS: usize = 10_000;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long a request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running fake bootstrap server; stopped (connections refused) on drop.
#[derive(Debug)]
pub struct FakeBootstrap {
    addr: SocketAddr,
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBootstrap {
    /// Serves the default secret, `config_text(proxies)` and a 404 for IPv6 on a free
    /// loopback port.
    pub fn start(proxies: &[(i16, SocketAddr)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake bootstrap server");
        let addr = listener.local_addr().expect("fake bootstrap address");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                routes: [
                    Route { status: 200, body: default_secret() },
                    Route { status: 200, body: config_text(proxies).into_bytes() },
                    Route { status: 404, body: b"not found\n".to_vec() },
                ],
                date_offset: 0,
                answered: [0; 3],
            }),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let for_thread = inner.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS) {
                if for_thread.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let inner = for_thread.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &inner);
                });
            }
        });
        Self { addr, inner, thread: Some(thread) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `doc`.
    pub fn url(&self, doc: Doc) -> String {
        format!("http://{}{}", self.addr, doc.path())
    }

    /// A `[middle-proxy]` table pointing at this server, with `update-each` and extra keys
    /// (`cache-dir = "…"`, …) appended.
    pub fn section(&self, update_each: &str, extra: &str) -> String {
        middle_section(
            &self.url(Doc::Secret),
            &self.url(Doc::Config),
            &self.url(Doc::ConfigV6),
            update_each,
            extra,
        )
    }

    /// Answers later requests for `doc` with `status` and `body`.
    pub fn set(&self, doc: Doc, status: u16, body: &[u8]) {
        self.inner.state().routes[doc.index()] = Route { status, body: body.to_vec() };
    }

    /// Sends a `Date` header `secs` ahead of our clock (negative: behind).
    pub fn set_date_offset(&self, secs: i64) {
        self.inner.state().date_offset = secs;
    }

    /// Requests for `doc` answered so far.
    pub fn requests(&self, doc: Doc) -> usize {
        self.inner.state().answered[doc.index()]
    }

    /// Waits until at least `n` requests for `doc` were answered, up to `timeout`; whether
    /// they were.
    pub fn wait_requests(&self, doc: Doc, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.inner.state();
        while state.answered[doc.index()] < n {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.inner.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for FakeBootstrap {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `[middle-proxy]` table with these three sources.
pub fn middle_section(secret: &str, config: &str, config_v6: &str, update_each: &str, extra: &str) -> String {
    format!(
        "[middle-proxy]\nsecret-url = {secret:?}\nconfig-url = {config:?}\nconfig-url-v6 = {config_v6:?}\n\
         update-each = {update_each:?}\n{extra}\n"
    )
}

/// An HTTP date (IMF-fixdate) for `secs` after the Unix epoch (may be negative).
fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Reads one request head, answers it by path and closes; counts the answer.
fn answer(mut stream: TcpStream, inner: &Inner) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line =
        String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)]).into_owned();
    let path = line.split(' ').nth(1).unwrap_or("");
    let doc = [Doc::Secret, Doc::Config, Doc::ConfigV6].into_iter().find(|d| d.path() == path);
    let (route, offset) = {
        let state = inner.state();
        let route = doc.map_or(Route { status: 404, body: Vec::new() }, |d| state.routes[d.index()].clone());
        (route, state.date_offset)
    };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut response = format!(
        "HTTP/1.1 {} Fake\r\nDate: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        route.status,
        http_date(now + offset),
        route.body.len()
    )
    .into_bytes();
    response.extend_from_slice(&route.body);
    stream.write_all(&response)?;
    stream.flush()?;
    if let Some(doc) = doc {
        inner.state().answered[doc.index()] += 1;
        inner.changed.notify_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_795_050_000), "Thu, 19 Nov 2026 01:00:00 GMT");
        assert_eq!(http_date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }
}
