//! A small HTTP/1.1 server for the stats API and the Prometheus endpoint, over any
//! `futures-io` stream, with the timers of the engine's [`Runtime`] seam, so it works the same
//! on tokio and smol (and pulls neither). Heads are parsed by `httparse`.
//!
//! ```text
//! accept ─► head (≤ 16 KiB) ─► Content-Length body (≤ 64 KiB) ─► handler ─► response
//!   │  └─ within 10 s of the accept, or of the first byte     │               │
//!   │     of a later request (else closed, nothing sent)      │  keep-alive ◄─┘
//!   └──────────── idle after a response: closed after 30 s ◄──┘
//! ```
//!
//! Bad input gets a JSON error `{"error": "..."}` and the connection is closed: 400 for a
//! malformed head or `Content-Length`, 411 for a body without `Content-Length` (chunked),
//! 431 for a head over 16 KiB or with over 64 headers. A body over 64 KiB is not read: the
//! handler sees [`BodyTooLarge`] (the API answers 413 where it needs a body) and the
//! connection closes after the answer. Answers carry `Content-Length` and `Date`; `HEAD` gets
//! the head only; `Expect: 100-continue` is honoured.

use std::fmt;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::{Either, select};
use futures_util::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::runtime::Runtime;

/// Most connections one HTTP listener serves at once; further ones wait in the listen backlog
/// until one ends, so the HTTP endpoints can never take the proxy's descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Largest request head (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 64;
/// How long a connection that is closing anyway is drained so the peer reads the answer
/// rather than a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

/// The time limits of one HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// A request (head and body) must arrive within this of the accept (the first request)
    /// or of its first byte (later ones); a response must be taken within this too.
    pub(crate) request: Duration,
    /// A keep-alive connection with no request under way is closed this long after its last
    /// response.
    pub(crate) idle: Duration,
}

impl Timeouts {
    /// The limits of every HTTP listener: 10 s for a request, 30 s idle.
    pub(crate) const DEFAULT: Self = Self { request: Duration::from_secs(10), idle: Duration::from_secs(30) };
}

/// A request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `OPTIONS`.
    Options,
    /// Any other method.
    Other,
}

// The route tables of the endpoints match on these; not every one is used by a route yet.
#[allow(dead_code)]
impl Method {
    /// `GET`.
    pub(crate) const GET: Self = Self::Get;
    /// `HEAD`.
    pub(crate) const HEAD: Self = Self::Head;
    /// `POST`.
    pub(crate) const POST: Self = Self::Post;
    /// `PUT`.
    pub(crate) const PUT: Self = Self::Put;
    /// `DELETE`.
    pub(crate) const DELETE: Self = Self::Delete;
    /// `PATCH`.
    pub(crate) const PATCH: Self = Self::Patch;
}

impl Method {
    fn parse(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "PATCH" => Self::Patch,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

/// A response status code (100–999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusCode(u16);

impl StatusCode {
    /// 200.
    pub(crate) const OK: Self = Self(200);
    /// 201.
    pub(crate) const CREATED: Self = Self(201);
    /// 400.
    pub(crate) const BAD_REQUEST: Self = Self(400);
    /// 404.
    pub(crate) const NOT_FOUND: Self = Self(404);
    /// 411.
    pub(crate) const LENGTH_REQUIRED: Self = Self(411);
    /// 431.
    pub(crate) const REQUEST_HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    /// 500.
    pub(crate) const INTERNAL_SERVER_ERROR: Self = Self(500);

    /// The status of a code, if it is a valid one (100–999).
    pub(crate) fn from_u16(code: u16) -> Option<Self> {
        (100..1000).contains(&code).then_some(Self(code))
    }

    /// The numeric code.
    #[cfg(test)]
    pub(crate) fn as_u16(self) -> u16 {
        self.0
    }

    /// The reason phrase of the codes this server uses (empty for others).
    fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Payload Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Entity",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

/// The request body was over [`MAX_BODY`] and was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTooLarge;

/// One parsed request with its whole body. `Debug` shows header names only (an
/// `Authorization` value is a secret).
pub(crate) struct Request {
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Result<Vec<u8>, BodyTooLarge>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

impl Request {
    /// The method.
    pub(crate) fn method(&self) -> Method {
        self.method
    }

    /// The path of the request target, without the query (`/` when the target has none).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Whether the query of the request target has the parameter `name=value`.
    pub(crate) fn has_query(&self, name: &str, value: &str) -> bool {
        self.query.split('&').any(|pair| pair.split_once('=') == Some((name, value)))
    }

    /// The first header field called `name` (any case), when its value is visible ASCII
    /// (spaces and tabs allowed).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        if !value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return None;
        }
        std::str::from_utf8(value).ok()
    }

    /// The body (empty without one), or [`BodyTooLarge`] when it was over [`MAX_BODY`].
    pub(crate) fn body(&self) -> Result<&[u8], BodyTooLarge> {
        self.body.as_deref().map_err(|&e| e)
    }
}

/// A response: status, headers (`Content-Type` first) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with a `Content-Type` and a body.
    pub(crate) fn new(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: vec![("content-type", content_type.to_owned())], body: body.into() }
    }

    /// Sets a header (`name` in lower case), replacing one of the same name.
    pub(crate) fn insert_header(&mut self, name: &'static str, value: &str) {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
    }

    /// The status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The response head and (unless `head_only`) body as sent, with `Content-Length`,
    /// `Date` and, when the connection ends after it, `Connection: close`.
    fn encode(&self, head_only: bool, keep_alive: bool, now: SystemTime) -> Vec<u8> {
        use std::fmt::Write;
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status.0, self.status.reason());
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "content-length: {}\r\ndate: {}\r\n", self.body.len(), http_date(now));
        if !keep_alive {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        if !head_only {
            wire.extend_from_slice(&self.body);
        }
        wire
    }
}

/// A JSON error answer `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let mut body = serde_json::to_string(&serde_json::json!({ "error": message })).unwrap_or_default();
    body.push('\n');
    Response::new(status, "application/json", body)
}

/// Answers the requests of one endpoint.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// The answer to one request.
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Serves one accepted connection until the peer closes it, a limit of `timeouts` passes, or
/// bad input ends it.
pub(crate) async fn serve_connection<R: Runtime, H: Handler>(
    stream: R::Stream,
    handler: H,
    timeouts: Timeouts,
) {
    let mut connection = Connection::<R, R::Stream>::new(stream, timeouts);
    match connection.run(&handler).await {
        Ok(()) => {}
        Err(End::TimedOut) => debug!("HTTP connection timed out"),
        Err(End::Io(e)) => debug!(error = %e, "HTTP connection ended with an error"),
    }
}

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    TimedOut,
    Io(io::Error),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// What the head of the buffered bytes is.
enum Head {
    /// A request whose head takes the first `len` bytes.
    Complete { parsed: ParsedHead, len: usize },
    /// Not all of it yet.
    Partial,
    /// Bad input: answer this and close.
    Bad(Response),
}

/// The parts of a head the server keeps.
struct ParsedHead {
    method: Method,
    path: String,
    query: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
}

struct Connection<R: Runtime, S> {
    stream: S,
    timeouts: Timeouts,
    /// Received bytes not used yet (the rest of a head, a body, pipelined requests).
    buf: Vec<u8>,
    /// When the current wait ends, and its timer.
    deadline: Instant,
    timer: R::Timer,
}

impl<R: Runtime, S: AsyncRead + AsyncWrite + Unpin> Connection<R, S> {
    fn new(stream: S, timeouts: Timeouts) -> Self {
        let deadline = Instant::now() + timeouts.request;
        Self { stream, timeouts, buf: Vec::with_capacity(1024), deadline, timer: R::timer_at(deadline) }
    }

    fn set_deadline(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.deadline = deadline;
            self.timer = R::timer_at(deadline);
        }
    }

    /// Reads more bytes into `buf` before the deadline; `Ok(0)` at end of stream.
    async fn read_more(&mut self) -> Result<usize, End> {
        let mut scratch = [0u8; 4096];
        let read = self.stream.read(&mut scratch);
        match select(read, &mut self.timer).await {
            Either::Left((Ok(n), _)) => {
                self.buf.extend_from_slice(&scratch[..n]);
                Ok(n)
            }
            Either::Left((Err(e), _)) => Err(End::Io(e)),
            Either::Right(_) => Err(End::TimedOut),
        }
    }

    /// Writes `wire` within the request timeout.
    async fn send(&mut self, wire: &[u8]) -> Result<(), End> {
        self.set_deadline(Instant::now() + self.timeouts.request);
        let stream = &mut self.stream;
        let write = Box::pin(async move {
            stream.write_all(wire).await?;
            stream.flush().await
        });
        match select(write, &mut self.timer).await {
            Either::Left((outcome, _)) => Ok(outcome?),
            Either::Right(_) => Err(End::TimedOut),
        }
    }

    /// Sends a last answer, then closes gently: our side first, then drains what the peer
    /// still sends for a short while, so it reads the answer rather than a reset.
    async fn finish(&mut self, wire: &[u8]) -> Result<(), End> {
        self.send(wire).await?;
        self.stream.close().await?;
        self.set_deadline(Instant::now() + LINGER);
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.buf.clear();
            match self.read_more().await {
                Ok(0) | Err(End::TimedOut) => break,
                Ok(n) => drained += n,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn run(&mut self, handler: &impl Handler) -> Result<(), End> {
        // The first request is timed from the accept; later ones from their first byte.
        let mut idle = false;
        loop {
            let mut scanned = 0;
            let (parsed, head_len) = loop {
                if let Some(end) = head_end(&self.buf, scanned) {
                    match parse_head(&self.buf[..end]) {
                        Head::Complete { parsed, len } => break (parsed, len),
                        Head::Partial => {}
                        Head::Bad(response) => {
                            return self.finish(&response.encode(false, false, now())).await;
                        }
                    }
                }
                scanned = self.buf.len();
                if self.buf.len() >= MAX_HEAD {
                    let response = json_error(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head larger than 16 KiB",
                    );
                    return self.finish(&response.encode(false, false, now())).await;
                }
                if self.read_more().await? == 0 {
                    return Ok(());
                }
                if idle {
                    idle = false;
                    self.set_deadline(Instant::now() + self.timeouts.request);
                }
            };
            let ParsedHead { method, path, query, http10, headers } = parsed;
            let length = match body_length(&headers) {
                Ok(length) => length,
                Err(response) => return self.finish(&response.encode(false, false, now())).await,
            };
            let mut keep_alive = wants_keep_alive(&headers, http10);
            let body = if length > MAX_BODY as u64 {
                keep_alive = false;
                self.buf.truncate(head_len);
                Err(BodyTooLarge)
            } else {
                let total = head_len + length as usize;
                if self.buf.len() < total && expects_continue(&headers) && !http10 {
                    // Sending restarts the clock: the body has a full request timeout.
                    self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                }
                while self.buf.len() < total {
                    if self.read_more().await? == 0 {
                        return Ok(());
                    }
                }
                Ok(self.buf[head_len..total].to_vec())
            };
            let consumed = head_len + body.as_ref().map_or(0, Vec::len);
            self.buf.drain(..consumed);
            let head_only = method == Method::Head;
            let response = handler.handle(Request { method, path, query, headers, body }).await;
            let wire = response.encode(head_only, keep_alive, now());
            if !keep_alive {
                return self.finish(&wire).await;
            }
            self.send(&wire).await?;
            if self.buf.is_empty() {
                idle = true;
                self.set_deadline(Instant::now() + self.timeouts.idle);
            } else {
                // A pipelined request is under way already.
                self.set_deadline(Instant::now() + self.timeouts.request);
            }
        }
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Where the head in `buf` ends (just past its empty line), looking at bytes from `scanned`
/// on (less three, for an end split across reads).
fn head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(3);
    let window = buf.get(from..)?;
    window.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        let next = window.get(i + 1..)?;
        if next.first() == Some(&b'\n') {
            Some(from + i + 2)
        } else if next.starts_with(b"\r\n") {
            Some(from + i + 3)
        } else {
            None
        }
    })
}

/// Parses a request head.
fn parse_head(buf: &[u8]) -> Head {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Bad(json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "more than 64 header fields",
            ));
        }
        Err(e) => return Head::Bad(json_error(StatusCode::BAD_REQUEST, &format!("malformed request: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Head::Partial;
    };
    let Some(path) = target_path(target) else {
        return Head::Bad(json_error(StatusCode::BAD_REQUEST, "malformed request target"));
    };
    let headers = request.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
    Head::Complete {
        parsed: ParsedHead { method: Method::parse(method), path, query, http10: version == 0, headers },
        len,
    }
}

/// The path of a request target: origin form `/p?q`, absolute form `http://host/p?q`, or `*`.
fn target_path(target: &str) -> Option<String> {
    let path = if target.starts_with('/') || target == "*" {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return None;
        }
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            _ => "/",
        }
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(if path.is_empty() { "/".to_owned() } else { path.to_owned() })
}

/// The body length from `Content-Length` (0 without one); a 400 or 411 answer on bad input.
fn body_length(headers: &[(String, Vec<u8>)]) -> Result<u64, Response> {
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(json_error(
            StatusCode::LENGTH_REQUIRED,
            "a request body needs Content-Length (Transfer-Encoding is not supported)",
        ));
    }
    let mut length = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.len() <= 19 && item.iter().all(u8::is_ascii_digit))
                .then(|| item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')));
            match (parsed, length) {
                (None, _) => return Err(json_error(StatusCode::BAD_REQUEST, "malformed Content-Length")),
                (Some(n), Some(seen)) if n != seen => {
                    return Err(json_error(StatusCode::BAD_REQUEST, "conflicting Content-Length values"));
                }
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(length.unwrap_or(0))
}

/// Whether a header's comma-separated value lists `token` (any case).
fn lists_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 only when asked to keep it.
fn wants_keep_alive(headers: &[(String, Vec<u8>)], http10: bool) -> bool {
    if http10 {
        lists_token(headers, "connection", "keep-alive")
    } else {
        !lists_token(headers, "connection", "close")
    }
}

fn expects_continue(headers: &[(String, Vec<u8>)]) -> bool {
    lists_token(headers, "expect", "100-continue")
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for the `Date` header.
fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::runtime::Selected;

    #[test]
    fn dates_are_imf_fixdates() {
        let at = |secs| http_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn targets_map_to_paths_without_the_query() {
        assert_eq!(target_path("/stats").as_deref(), Some("/stats"));
        assert_eq!(target_path("/stats?x=1&y").as_deref(), Some("/stats"));
        assert_eq!(target_path("/secrets/%2e%2e").as_deref(), Some("/secrets/%2e%2e"));
        assert_eq!(target_path("http://h:9/metrics?q").as_deref(), Some("/metrics"));
        assert_eq!(target_path("http://h:9").as_deref(), Some("/"));
        assert_eq!(target_path("http://h?q").as_deref(), Some("/"));
        assert_eq!(target_path("*").as_deref(), Some("*"));
        assert_eq!(target_path("stats"), None);
        assert_eq!(target_path("://h/"), None);
    }

    #[test]
    fn the_head_end_is_found_across_reads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // The end split over two reads: scanning resumes three bytes back.
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 15), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 17), Some(18));
        assert_eq!(head_end(b"", 0), None);
    }

    #[test]
    fn content_length_is_checked() {
        let h = |values: &[&str]| -> Vec<(String, Vec<u8>)> {
            values.iter().map(|v| ("content-length".to_owned(), v.as_bytes().to_vec())).collect()
        };
        assert_eq!(body_length(&h(&[])).ok(), Some(0));
        assert_eq!(body_length(&h(&["12"])).ok(), Some(12));
        assert_eq!(body_length(&h(&["12", " 12 "])).ok(), Some(12));
        assert_eq!(body_length(&h(&["12, 12"])).ok(), Some(12));
        assert_eq!(body_length(&h(&["99999999999999999999"])).ok(), None);
        for bad in [&["12", "13"][..], &["-1"], &["1e3"], &[""], &["0x10"], &["12,"]] {
            let status = body_length(&h(bad)).err().map(|r| r.status().as_u16());
            assert_eq!(status, Some(400), "{bad:?}");
        }
        let chunked = vec![("transfer-encoding".to_owned(), b"chunked".to_vec())];
        assert_eq!(body_length(&chunked).err().map(|r| r.status().as_u16()), Some(411));
    }

    /// Echoes what it saw: `METHOD PATH BODYLEN x-test-header` in the body, status 200.
    #[derive(Clone)]
    struct Echo(Arc<AtomicUsize>);

    impl Handler for Echo {
        fn handle(&self, request: Request) -> impl Future<Output = Response> + Send {
            self.0.fetch_add(1, Ordering::Relaxed);
            let body = match request.body() {
                Ok(b) => format!("{:?} {} {}", request.method(), request.path(), b.len()),
                Err(BodyTooLarge) => format!("{:?} {} too large", request.method(), request.path()),
            };
            let body = format!("{body} {}", request.header("X-Test").unwrap_or("-"));
            std::future::ready(Response::new(StatusCode::OK, "text/plain", body))
        }
    }

    /// A server on a loopback port with `timeouts`; runs `client` (blocking std sockets, on a
    /// thread) against it and returns what it returns and the number of requests handled.
    fn with_server<T: Send + 'static>(
        timeouts: Timeouts,
        client: impl FnOnce(SocketAddr) -> T + Send + 'static,
    ) -> (T, usize) {
        Selected::run(|runtime| async move {
            let listener = runtime.bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
            let addr = <Selected as Runtime>::listener_addr(&listener).expect("address");
            let handled = Arc::new(AtomicUsize::new(0));
            let echo = Echo(Arc::clone(&handled));
            let server = runtime.clone();
            runtime.spawn(async move {
                while let Ok((stream, _)) = <Selected as Runtime>::accept(&listener).await {
                    server.spawn(serve_connection::<Selected, _>(stream, echo.clone(), timeouts));
                }
            });
            let out = blocking::unblock(move || client(addr)).await;
            (out, handled.load(Ordering::Relaxed))
        })
        .expect("runtime")
    }

    /// Sends `wire`, then reads until the server closes (or 5 s pass); returns what came.
    fn exchange(addr: SocketAddr, wire: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = s.write_all(wire);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    }

    fn statuses(raw: &str) -> Vec<&str> {
        raw.match_indices("HTTP/1.1 ").map(|(i, _)| &raw[i + 9..i + 12]).collect()
    }

    #[test]
    fn keep_alive_pipelining_and_bodies() {
        let wire = b"GET /a?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: one\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            HEAD /c HTTP/1.1\r\n\r\n\
            PUT http://h/d?z HTTP/1.1\r\ncontent-length: 2\r\nConnection: close\r\n\r\nhi";
        let (raw, handled) = with_server(Timeouts::DEFAULT, move |addr| exchange(addr, wire));
        assert_eq!(handled, 4, "{raw}");
        assert_eq!(statuses(&raw), ["200", "200", "200", "200"], "{raw}");
        assert!(raw.contains("\r\n\r\nGet /a 0 one"), "{raw}");
        assert!(raw.contains("\r\n\r\nPost /b 5 -"), "{raw}");
        // HEAD: the length of the body it would have, no body.
        assert!(raw.contains("content-length: 11\r\ndate: "), "{raw}");
        assert!(!raw.contains("Head /c"), "{raw}");
        assert!(raw.ends_with("connection: close\r\n\r\nPut /d 2 -"), "{raw}");
        assert_eq!(raw.matches("connection: close").count(), 1, "{raw}");
    }

    #[test]
    fn http_1_0_closes_unless_asked_and_expect_gets_100() {
        let (raw, _) = with_server(Timeouts::DEFAULT, |addr| exchange(addr, b"GET / HTTP/1.0\r\n\r\n"));
        assert_eq!(statuses(&raw), ["200"]);
        assert!(raw.contains("connection: close"), "{raw}");
        let (raw, handled) = with_server(Timeouts::DEFAULT, |addr| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            s.write_all(
                b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            )
            .expect("head");
            let mut first = [0u8; 25];
            s.read_exact(&mut first).expect("the interim answer");
            s.write_all(b"abc").expect("body");
            let mut rest = String::new();
            let _ = s.read_to_string(&mut rest);
            format!("{}{rest}", String::from_utf8_lossy(&first))
        });
        assert_eq!(handled, 1);
        assert!(raw.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.ends_with("Post /e 3 -"), "{raw}");
    }

    #[test]
    fn bad_input_gets_exact_codes_and_json_errors() {
        let big_head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), "400", "malformed request"),
            (b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(), "400", "malformed request"),
            (b"GET stats HTTP/1.1\r\n\r\n".to_vec(), "400", "request target"),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), "400", "Content-Length"),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
                "400",
                "conflicting",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                "411",
                "Content-Length",
            ),
            (big_head.into_bytes(), "431", "16 KiB"),
            (many.into_bytes(), "431", "64 header"),
        ];
        let (answers, handled) = with_server(Timeouts::DEFAULT, move |addr| {
            cases
                .into_iter()
                .map(|(wire, status, error)| (exchange(addr, &wire), status, error))
                .collect::<Vec<_>>()
        });
        assert_eq!(handled, 0);
        for (raw, status, error) in answers {
            assert_eq!(statuses(&raw), [status], "{raw}");
            assert!(raw.contains("content-type: application/json\r\n"), "{raw}");
            assert!(raw.contains("connection: close\r\n"), "{raw}");
            let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
            assert!(json["error"].as_str().is_some_and(|e| e.contains(error)), "{raw}");
        }
    }

    #[test]
    fn a_body_over_64_kib_is_not_read_and_the_answer_still_arrives() {
        let (raw, handled) = with_server(Timeouts::DEFAULT, |addr| {
            let mut wire =
                format!("POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 200 * 1024).into_bytes();
            wire.resize(wire.len() + 200 * 1024, b' ');
            exchange(addr, &wire)
        });
        assert_eq!(handled, 1);
        assert_eq!(statuses(&raw), ["200"], "{raw}");
        assert!(raw.ends_with("connection: close\r\n\r\nPost /big too large -"), "{raw}");
    }

    #[test]
    fn slow_heads_and_idle_connections_are_cut_in_time() {
        use std::io::{Read, Write};
        let timeouts = Timeouts { request: Duration::from_millis(400), idle: Duration::from_millis(900) };
        let (times, handled) = with_server(timeouts, |addr| {
            let closed_after = |s: &mut std::net::TcpStream| {
                let from = Instant::now();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                (from.elapsed(), sink)
            };
            let connect = || {
                let s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                s
            };
            // Half a head, then silence.
            let mut half = connect();
            half.write_all(b"GET /stats HTTP/1.1\r\nHo").expect("half a head");
            let half = closed_after(&mut half);
            // Nothing at all.
            let mut mute = connect();
            let mute = closed_after(&mut mute);
            // A request, its answer, then an idle keep-alive connection.
            let mut idle = connect();
            idle.write_all(b"GET /x HTTP/1.1\r\n\r\n").expect("request");
            let mut answer = [0u8; 512];
            let n = idle.read(&mut answer).expect("answer");
            assert!(answer[..n].ends_with(b"Get /x 0 -"), "{:?}", String::from_utf8_lossy(&answer[..n]));
            let idle = closed_after(&mut idle);
            (half, mute, idle)
        });
        let ((half, half_rest), (mute, _), (idle, _)) = times;
        assert_eq!(handled, 1);
        assert!(half_rest.is_empty(), "a cut slow head gets no answer: {half_rest:?}");
        for (what, took, limit) in [("half head", half, 400), ("no head", mute, 400), ("idle", idle, 900)] {
            let limit = Duration::from_millis(limit);
            assert!(
                took + Duration::from_millis(20) >= limit && took < limit + Duration::from_millis(500),
                "{what}: {took:?}"
            );
        }
    }
}
