//! The relay future: one task moves bytes both ways between two streams through a transform
//! (the core's relay halves for Telegram, identity for fronting), with one idle clock shared by
//! both directions. No allocation, lock or log per chunk.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::Stream;
use mtg_proto::{ClientToDc, DcToClient, RelayError};

use crate::runtime::Runtime;
use crate::users::accounting::Admitted;

/// Most chunks one direction moves per wake-up before yielding to other tasks.
const CHUNKS_PER_POLL: usize = 16;
/// Read size of the plain (fronting) and client→DC directions.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

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
}

impl Transform for ClientToDc {
    const READ_AT: usize = 0;
    const READ_MAX: usize = READ_CHUNK;
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.process(&mut buf[..n])
    }
    fn bytes(&self) -> u64 {
        Self::bytes(self)
    }
}

impl Transform for DcToClient {
    const READ_AT: usize = Self::HEADROOM;
    const READ_MAX: usize = Self::MAX_CHUNK;
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.process(buf, n)
    }
    fn bytes(&self) -> u64 {
        Self::bytes(self)
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
}

/// One direction: read from one stream, transform, write to the other.
pub(crate) struct Pump<T> {
    pub(crate) transform: T,
    buf: Box<[u8]>,
    pending: Range<usize>,
    eof: bool,
    done: bool,
}

impl<T: Transform> Pump<T> {
    /// A pump whose first write is `initial` (already transformed bytes, e.g. the replayed
    /// prefix for fronting).
    pub(crate) fn new(transform: T, initial: &[u8]) -> Self {
        let mut buf = vec![0u8; (T::READ_AT + T::READ_MAX).max(initial.len())].into_boxed_slice();
        buf[..initial.len()].copy_from_slice(initial);
        Self { transform, buf, pending: 0..initial.len(), eof: false, done: false }
    }

    /// Moves what it can. `Ready(Ok(()))` once the source ended and everything was written.
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        active: &mut bool,
    ) -> Poll<Result<(), End>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..CHUNKS_PER_POLL {
            while !self.pending.is_empty() {
                match Pin::new(&mut *to).poll_write(cx, &self.buf[self.pending.clone()]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(End::Io(io::ErrorKind::WriteZero.into()))),
                    Poll::Ready(Ok(n)) => {
                        self.pending.start += n;
                        *active = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                    Poll::Pending => return Poll::Pending,
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
            let limit = match self.transform.poll_read_limit(cx) {
                Poll::Ready(limit) => limit.min(T::READ_MAX),
                Poll::Pending => return Poll::Pending,
            };
            let window = &mut self.buf[T::READ_AT..T::READ_AT + limit];
            match Pin::new(&mut *from).poll_read(cx, window) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(n)) => {
                    *active = true;
                    self.pending = self.transform.transform(&mut self.buf, n).map_err(End::Protocol)?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                Poll::Pending => return Poll::Pending,
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
    /// The user was removed, re-keyed or disabled by a reload.
    Revoked,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed => f.write_str("client closed"),
            Self::UpstreamClosed => f.write_str("upstream closed"),
            Self::Idle => f.write_str("idle timeout"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Revoked => f.write_str("user removed, re-keyed or disabled"),
        }
    }
}

/// Both directions of a session and the shared idle clock.
pub(crate) struct Relay<R: Runtime, Up, Down> {
    client: R::Stream,
    upstream: R::Stream,
    pub(crate) up: Pump<Up>,
    pub(crate) down: Pump<Down>,
    idle: Duration,
    last_activity: Instant,
    timer: R::Timer,
    /// The admitted user's slot and counters, with the bytes already reported to them.
    account: Option<(Admitted, u64, u64)>,
    /// Closed when the user is removed, re-keyed or disabled.
    revoked: Option<Pin<Box<async_channel::Receiver<()>>>>,
}

impl<R: Runtime, Up: Transform, Down: Transform> Relay<R, Up, Down> {
    /// A relay between `client` and `upstream`.
    pub(crate) fn new(
        client: R::Stream,
        upstream: R::Stream,
        up: Pump<Up>,
        down: Pump<Down>,
        idle: Duration,
    ) -> Self {
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
            revoked: None,
        }
    }

    /// Counts this relay's payload bytes into an admitted user's counters as they move.
    pub(crate) fn counting(mut self, admitted: Admitted) -> Self {
        self.account = Some((admitted, 0, 0));
        self
    }

    /// Ends the relay when `watch` closes.
    pub(crate) fn revocable(mut self, watch: async_channel::Receiver<()>) -> Self {
        self.revoked = Some(Box::pin(watch));
        self
    }

    fn report(&mut self) {
        if let Some((admitted, up, down)) = &mut self.account {
            let (now_up, now_down) = (self.up.transform.bytes(), self.down.transform.bytes());
            admitted.stats().add_bytes(now_up - *up, now_down - *down);
            (*up, *down) = (now_up, now_down);
        }
    }
}

impl<R: Runtime, Up: Transform, Down: Transform> Future for Relay<R, Up, Down> {
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
        let up = this.up.poll_pump(cx, &mut this.client, &mut this.upstream, &mut active);
        let down = this.down.poll_pump(cx, &mut this.upstream, &mut this.client, &mut active);
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
                    let deadline = this.last_activity + this.idle;
                    if Instant::now() >= deadline {
                        return Poll::Ready(End::Idle);
                    }
                    R::reset(&mut this.timer, deadline);
                }
            }
        }
    }
}
