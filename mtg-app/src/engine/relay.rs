//! The relay future: one task moves bytes both ways between two streams through a transform
//! (the core's relay halves for Telegram, identity for fronting), with one idle clock shared by
//! both directions. No allocation, lock or log per chunk: byte counts go to the user's and the
//! metrics' atomic counters, resolved before the relay starts; buffers only while data is in
//! flight.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::Stream;
use mtg_proto::{ClientToDc, DcToClient, FastDcToClient, RelayError};

use crate::metrics::Traffic;
use crate::runtime::Runtime;
use crate::users::accounting::Admitted;

use super::buffer_pool;
use super::rate_gate::RateGate;
use crate::users::rate_limit::Direction;

/// Most chunks one direction moves per wake-up before yielding to other tasks.
pub(crate) const CHUNKS_PER_POLL: usize = 16;
/// Read size of the plain (fronting) direction and of middle-proxy sessions' client reads.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Read size of the client→DC direction: several of the client's records per read (the
/// deframer joins their payloads for one write to the DC).
pub(crate) const CLIENT_READ: usize = buffer_pool::BUF_LEN;

/// How one direction turns bytes read into bytes to write, in place.
pub(crate) trait Transform: Send + Unpin {
    /// Where reads go in the buffer.
    const READ_AT: usize;
    /// Most bytes one read may bring.
    const READ_MAX: usize;
    /// Transforms `n` bytes read into `buf[READ_AT..READ_AT + n]`; returns the range to write.
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError>;
    /// Payload bytes moved so far.
    fn bytes(&self) -> u64;
    /// Most bytes the next read may bring, once it may happen (doppelganger shaping, see
    /// `shaper.rs`); `Pending` holds the read back.
    fn poll_read_limit(&mut self, _cx: &mut Context<'_>) -> Poll<usize> {
        Poll::Ready(Self::READ_MAX)
    }
    /// Whether this direction passes bytes unchanged (only framed), so they may move
    /// without a user-space copy (`zero_copy.rs`).
    fn passes_through(&self) -> bool {
        false
    }
    /// For a direction that [passes bytes through](Transform::passes_through): accounts `n`
    /// bytes read (as [`Transform::transform`] would) and returns the record header to send
    /// before them, of the given length (0: none).
    fn pass_through(&mut self, _n: usize) -> ([u8; RECORD_HEADER], usize) {
        ([0; RECORD_HEADER], 0)
    }
}

/// Length of a TLS record header (what [`Transform::pass_through`] may put before a chunk).
pub(crate) const RECORD_HEADER: usize = 5;

/// One direction of a relay (a flow) over streams `S`, with rate gates on runtime `Rt`'s timers.
pub(crate) trait Flow<Rt: Runtime, S>: Send + Unpin {
    /// Moves what it can. `Ready(Ok(()))` once the source ended and everything was written.
    /// With a `gate` (an admitted user's session), each read waits for the user's rate.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut S,
        to: &mut S,
        active: &mut bool,
        gate: Option<&mut RateGate<Rt>>,
    ) -> Poll<Result<(), End>>;
    /// Payload bytes moved so far.
    fn bytes(&self) -> u64;
}

impl<Rt: Runtime, S: AsyncRead + AsyncWrite + Unpin, T: Transform> Flow<Rt, S> for Pump<T> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut S,
        to: &mut S,
        active: &mut bool,
        gate: Option<&mut RateGate<Rt>>,
    ) -> Poll<Result<(), End>> {
        Self::poll_pump(self, cx, from, to, active, gate)
    }
    fn bytes(&self) -> u64 {
        self.transform.bytes()
    }
}

impl Transform for ClientToDc {
    const READ_AT: usize = 0;
    const READ_MAX: usize = CLIENT_READ;
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.process(&mut buf[..n])
    }
    fn bytes(&self) -> u64 {
        Self::bytes(self)
    }
}

impl Transform for DcToClient {
    const READ_AT: usize = Self::HEADROOM;
    const READ_MAX: usize = Self::MAX_READ;
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.process_records(buf, n)
    }
    fn bytes(&self) -> u64 {
        Self::bytes(self)
    }
}

/// A Telegram session's DC→client half: re-encrypting, or fast mode's framing only. Both
/// read into the same place and at most one record per read, so the shaper and the pump
/// treat them alike.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per session, inside the relay future: boxing the keystreams would add an allocation per session"
)]
pub(crate) enum Downlink {
    /// Decrypt the DC leg, encrypt the client leg.
    Crypto(DcToClient),
    /// Fast mode: the DC's bytes as they are, in records for FakeTLS.
    Fast(FastDcToClient),
}

impl From<DcToClient> for Downlink {
    fn from(half: DcToClient) -> Self {
        Self::Crypto(half)
    }
}

impl From<FastDcToClient> for Downlink {
    fn from(half: FastDcToClient) -> Self {
        Self::Fast(half)
    }
}

impl Transform for Downlink {
    const READ_AT: usize = {
        assert!(DcToClient::HEADROOM == FastDcToClient::HEADROOM);
        DcToClient::HEADROOM
    };
    const READ_MAX: usize = {
        assert!(DcToClient::MAX_CHUNK == FastDcToClient::MAX_CHUNK);
        DcToClient::MAX_READ
    };
    /// Re-encrypting: several records per read. Fast mode: one record per read.
    fn poll_read_limit(&mut self, _cx: &mut Context<'_>) -> Poll<usize> {
        Poll::Ready(match self {
            Self::Crypto(_) => DcToClient::MAX_READ,
            Self::Fast(_) => FastDcToClient::MAX_CHUNK,
        })
    }
    #[inline]
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        match self {
            Self::Crypto(half) => half.process_records(buf, n),
            Self::Fast(half) => half.process(buf, n),
        }
    }
    fn bytes(&self) -> u64 {
        match self {
            Self::Crypto(half) => half.bytes(),
            Self::Fast(half) => half.bytes(),
        }
    }
    fn passes_through(&self) -> bool {
        matches!(self, Self::Fast(_))
    }
    fn pass_through(&mut self, n: usize) -> ([u8; RECORD_HEADER], usize) {
        match self {
            Self::Fast(half) => half.header(n),
            // Never called: `passes_through` is false (nothing counted, no header).
            Self::Crypto(_) => ([0; RECORD_HEADER], 0),
        }
    }
}

/// Bytes pass unchanged (fronting), counted.
#[derive(Debug, Default)]
pub(crate) struct Plain {
    pub(crate) bytes: u64,
}

impl Transform for Plain {
    const READ_AT: usize = 0;
    const READ_MAX: usize = READ_CHUNK;
    fn transform(&mut self, _buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.bytes += n as u64;
        Ok(0..n)
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn passes_through(&self) -> bool {
        true
    }
    fn pass_through(&mut self, n: usize) -> ([u8; RECORD_HEADER], usize) {
        self.bytes += n as u64;
        ([0; RECORD_HEADER], 0)
    }
}

/// One direction: read from one stream, transform, write to the other.
///
/// The buffer is borrowed from [`buffer_pool`] only while bytes are in flight: it is given
/// back when a read finds nothing to read and nothing is left to write, so an idle session
/// holds none. While data flows the pump keeps it (no pool traffic per chunk).
pub(crate) struct Pump<T> {
    pub(crate) transform: T,
    /// `Some` whenever `pending` is not empty.
    buf: Option<Box<[u8]>>,
    pending: Range<usize>,
    eof: bool,
    done: bool,
}

impl<T: Transform> Pump<T> {
    /// A pump whose first write is `initial` (already transformed bytes, e.g. the replayed
    /// prefix for fronting).
    pub(crate) fn new(transform: T, initial: &[u8]) -> Self {
        const { assert!(T::READ_AT + T::READ_MAX <= buffer_pool::BUF_LEN, "pooled buffers too short") };
        let buf = (!initial.is_empty()).then(|| {
            let mut buf = if initial.len() <= buffer_pool::BUF_LEN {
                buffer_pool::take()
            } else {
                vec![0u8; initial.len()].into_boxed_slice()
            };
            buf[..initial.len()].copy_from_slice(initial);
            buf
        });
        Self { transform, buf, pending: 0..initial.len(), eof: false, done: false }
    }

    /// Whether the pump holds a buffer (bytes in flight, or a read under way).
    pub(crate) fn in_flight(&self) -> bool {
        self.buf.is_some()
    }

    /// Gives the buffer back to the pool (called with nothing pending).
    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            buffer_pool::give(buf);
        }
    }

    /// Moves what it can. `Ready(Ok(()))` once the source ended and everything was written.
    /// With a `gate` (an admitted user's session), each read waits for the user's rate.
    pub(crate) fn poll_pump<Rt, R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        active: &mut bool,
        mut gate: Option<&mut RateGate<Rt>>,
    ) -> Poll<Result<(), End>>
    where
        Rt: Runtime,
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..CHUNKS_PER_POLL {
            if let Some(buf) = &self.buf {
                while !self.pending.is_empty() {
                    match Pin::new(&mut *to).poll_write(cx, &buf[self.pending.clone()]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(End::Io(io::ErrorKind::WriteZero.into())));
                        }
                        Poll::Ready(Ok(n)) => {
                            self.pending.start += n;
                            *active = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            if self.eof {
                return match Pin::new(&mut *to).poll_close(cx) {
                    Poll::Ready(_) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            let mut limit = match self.transform.poll_read_limit(cx) {
                Poll::Ready(limit) => limit.min(T::READ_MAX),
                Poll::Pending => {
                    // Paced: nothing in flight until the timer fires.
                    self.release();
                    return Poll::Pending;
                }
            };
            if let Some(gate) = gate.as_deref_mut() {
                match gate.poll_grant(cx, limit) {
                    Poll::Ready(granted) => limit = granted.min(limit),
                    Poll::Pending => {
                        // Rate-limited: nothing in flight until the user's bucket has tokens.
                        self.release();
                        return Poll::Pending;
                    }
                }
            }
            let buf = self.buf.get_or_insert_with(buffer_pool::take);
            let read = Pin::new(&mut *from).poll_read(cx, &mut buf[T::READ_AT..T::READ_AT + limit]);
            if let Some(gate) = gate.as_deref_mut() {
                gate.settle(match read {
                    Poll::Ready(Ok(n)) => n,
                    _ => 0,
                });
            }
            match read {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    self.release();
                }
                Poll::Ready(Ok(n)) => {
                    *active = true;
                    self.pending = self.transform.transform(buf, n).map_err(End::Protocol)?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                Poll::Pending => {
                    // Nothing in flight: an idle direction holds no buffer.
                    self.release();
                    return Poll::Pending;
                }
            }
        }
        // Budget spent: let other tasks run, come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Why a relay ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed its side.
    ClientClosed,
    /// The other side (DC or fronting site) closed.
    UpstreamClosed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A socket error.
    Io(io::Error),
    /// The client broke the record framing.
    Protocol(RelayError),
    /// The user was removed, re-keyed or disabled by a reload, or used up its quota.
    Revoked,
    /// The user's `expires` was reached.
    Expired,
    /// The client broke its transport framing (middle-proxy sessions).
    Transport(mtg_proto::middle::TransportError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed => f.write_str("client closed"),
            Self::UpstreamClosed => f.write_str("upstream closed"),
            Self::Idle => f.write_str("idle timeout"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Revoked => f.write_str("user removed, re-keyed, disabled or over quota"),
            Self::Expired => f.write_str("user expired"),
            Self::Transport(e) => write!(f, "client transport error: {e}"),
        }
    }
}

/// Both directions of a session and the shared idle clock.
///
/// `S` is the streams' type: the runtime's TCP stream (`R::Stream`) in the proxy, in-memory
/// streams in the allocation test (`tests/relay_alloc.rs`); `R` gives the idle timer.
pub(crate) struct Relay<R: Runtime, S, Up, Down> {
    client: S,
    upstream: S,
    pub(crate) up: Up,
    pub(crate) down: Down,
    idle: Duration,
    last_activity: Instant,
    timer: R::Timer,
    /// The admitted user's slot and counters.
    account: Option<Admitted>,
    /// Metric byte counters (resolved at session start) this relay adds to.
    meters: Vec<Traffic>,
    /// Bytes (up, down) already reported to the account and the meters.
    reported: (u64, u64),
    /// Closed when the user is removed, re-keyed or disabled, or uses up its quota.
    revoked: Option<Pin<Box<async_channel::Receiver<()>>>>,
    /// The user's rate limit, (up, down): admitted sessions only.
    gates: Option<Box<(RateGate<R>, RateGate<R>)>>,
}

impl<R: Runtime, S: AsyncRead + AsyncWrite + Unpin, Up: Flow<R, S>, Down: Flow<R, S>> Relay<R, S, Up, Down> {
    /// A relay between `client` and `upstream`.
    pub(crate) fn new(client: S, upstream: S, up: Up, down: Down, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            client,
            upstream,
            up,
            down,
            idle,
            last_activity: now,
            timer: R::timer_at(now + idle),
            account: None,
            meters: Vec::new(),
            reported: (0, 0),
            revoked: None,
            gates: None,
        }
    }

    /// Counts this relay's payload bytes into an admitted user's counters as they move (the
    /// user's quota binds it), holds both directions to the user's `rate-limit` (whatever a
    /// reload makes it) and ends it at the user's `expires`.
    pub(crate) fn counting(mut self, admitted: Admitted) -> Self {
        let (user, waited) = (admitted.shared_stats(), admitted.rate_meter());
        self.gates = Some(Box::new((
            RateGate::new(user.clone(), Direction::Up, waited.clone()),
            RateGate::new(user, Direction::Down, waited),
        )));
        if let Some(left) = admitted.until_expiry() {
            let now = Instant::now();
            R::reset(&mut self.timer, (self.last_activity + self.idle).min(now + left));
        }
        self.account = Some(admitted);
        self
    }

    /// Adds this relay's bytes to `traffic` as they move (up = from the client).
    pub(crate) fn metered(mut self, traffic: Traffic) -> Self {
        self.meters.push(traffic);
        self
    }

    /// Ends the relay when `watch` closes.
    pub(crate) fn revocable(mut self, watch: async_channel::Receiver<()>) -> Self {
        self.revoked = Some(Box::pin(watch));
        self
    }

    fn report(&mut self) {
        let (up, down) = (self.up.bytes(), self.down.bytes());
        let (new_up, new_down) = (up - self.reported.0, down - self.reported.1);
        if new_up == 0 && new_down == 0 {
            return;
        }
        self.reported = (up, down);
        if let Some(admitted) = &self.account {
            admitted.add_bytes(new_up, new_down);
        }
        for traffic in &self.meters {
            traffic.add(new_up, new_down);
        }
    }
}

impl<R: Runtime, S: AsyncRead + AsyncWrite + Unpin, Up: Flow<R, S>, Down: Flow<R, S>> Future
    for Relay<R, S, Up, Down>
{
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if let Some(watch) = &mut this.revoked
            && let Poll::Ready(None) = watch.as_mut().poll_next(cx)
        {
            this.report();
            return Poll::Ready(End::Revoked);
        }
        let mut active = false;
        let (up_gate, down_gate) = match this.gates.as_deref_mut() {
            Some((up, down)) => (Some(up), Some(down)),
            None => (None, None),
        };
        let up = this.up.poll_pump(cx, &mut this.client, &mut this.upstream, &mut active, up_gate);
        let down = this.down.poll_pump(cx, &mut this.upstream, &mut this.client, &mut active, down_gate);
        if active {
            this.report();
        }
        // Either direction ending ends the session (mtg closes both legs).
        match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => return Poll::Ready(e),
            (Poll::Ready(Ok(())), _) => return Poll::Ready(End::ClientClosed),
            (_, Poll::Ready(Ok(()))) => return Poll::Ready(End::UpstreamClosed),
            _ => {}
        }
        if active {
            this.last_activity = Instant::now();
        }
        loop {
            match Pin::new(&mut this.timer).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let now = Instant::now();
                    let mut deadline = this.last_activity + this.idle;
                    if now >= deadline {
                        return Poll::Ready(End::Idle);
                    }
                    // The user's `expires` as it is now (a reload may have moved it).
                    if let Some(left) = this.account.as_ref().and_then(Admitted::until_expiry) {
                        if left.is_zero() {
                            this.report();
                            return Poll::Ready(End::Expired);
                        }
                        deadline = deadline.min(now + left);
                    }
                    R::reset(&mut this.timer, deadline);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No rate gate (the pumps of a relay without an admitted user).
    fn no_gate() -> Option<&'static mut RateGate<crate::runtime::Selected>> {
        None
    }

    /// Gives its chunks one per read, then `Pending` forever.
    struct Chunks(Vec<&'static [u8]>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.0.is_empty() {
                return Poll::Pending;
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Poll::Ready(Ok(chunk.len()))
        }
    }

    /// Accepts writes only while `open`.
    struct Gate {
        open: bool,
        got: Vec<u8>,
    }

    impl AsyncWrite for Gate {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            if !self.open {
                return Poll::Pending;
            }
            self.got.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_pump_holds_a_buffer_only_while_bytes_are_in_flight() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut active = false;
        let mut pump = Pump::new(Plain::default(), &[]);
        assert!(pump.buf.is_none(), "a new pump without initial bytes holds no buffer");

        let mut from = Chunks(vec![b"hello", b" world"]);
        let mut to = Gate { open: false, got: Vec::new() };
        assert!(pump.poll_pump(&mut cx, &mut from, &mut to, &mut active, no_gate()).is_pending());
        assert!(pump.buf.is_some(), "bytes waiting for a blocked writer keep the buffer");
        assert!(to.got.is_empty());

        to.open = true;
        assert!(pump.poll_pump(&mut cx, &mut from, &mut to, &mut active, no_gate()).is_pending());
        assert_eq!(to.got, b"hello world");
        assert!(pump.buf.is_none(), "nothing to read and nothing to write: the buffer is given back");
        assert_eq!(pump.transform.bytes, 11);
    }

    #[test]
    fn initial_bytes_are_written_first_then_the_buffer_is_released() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut active = false;
        let mut pump = Pump::new(Plain::default(), b"replayed ");
        assert!(pump.buf.is_some());
        let mut from = Chunks(vec![b"next"]);
        let mut to = Gate { open: true, got: Vec::new() };
        assert!(pump.poll_pump(&mut cx, &mut from, &mut to, &mut active, no_gate()).is_pending());
        assert_eq!(to.got, b"replayed next");
        assert!(pump.buf.is_none());
    }
}
