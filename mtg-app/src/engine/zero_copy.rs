//! A relay direction without user-space copies (Linux): for a direction whose bytes pass
//! unchanged ([`Transform::passes_through`]: fronting, fast mode's download), `splice(2)` the
//! source socket into a pipe, send the record header for the bytes obtained (`MSG_MORE`, so
//! header and payload leave together) and splice the pipe into the destination socket.
//!
//! Readiness-driven through the runtime seam ([`Runtime::poll_read_with`] and
//! [`Runtime::poll_write_with`]): every syscall is nonblocking and `EAGAIN` waits for the
//! socket. Each read is at most what the transform allows (doppelganger record sizing, the
//! user's rate), exactly as the copy path reads, so the records are the same. Pipes come from
//! [`pipes`], a bounded pool, only while bytes are in flight: an idle session holds none, and
//! when the pool is exhausted the burst takes the copy path. Where splicing is not supported
//! (no Linux, a socket type without splice), the direction falls back to the copy path for
//! the rest of the session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::AsyncWrite;

use tracing::debug;

use crate::runtime::Runtime;

use super::rate_gate::RateGate;
use super::relay::{CHUNKS_PER_POLL, End, Flow, Pump, RECORD_HEADER, Transform};

pub(crate) mod pipes;

use pipes::Pipe;

/// A relay direction that splices when it can and copies (through its [`Pump`]) when not.
pub(crate) struct Spliced<T> {
    /// The copy path, and the transform both paths account in.
    copy: Pump<T>,
    /// Splicing is on (configured, supported by the transform, not failed).
    splice: bool,
    /// Held only while bytes are in flight.
    pipe: Option<Pipe>,
    /// Bytes in the pipe not yet sent.
    in_pipe: usize,
    /// The record header of the chunk in the pipe, its length and how much of it was sent.
    header: [u8; RECORD_HEADER],
    header_len: u8,
    header_sent: u8,
    eof: bool,
    done: bool,
    /// Test knob: the first splice fails as unsupported (the fallback's test).
    #[cfg(test)]
    fail_first: bool,
    /// Splices into the destination that moved less than the pipe held.
    #[cfg(test)]
    partial_splices: u64,
    /// Bytes spliced from the source.
    #[cfg(test)]
    spliced: u64,
}

impl<T: Transform> Spliced<T> {
    /// A direction over `transform` that splices when `enabled` (the `zero-copy` setting) and
    /// the transform passes its bytes through; the copy path otherwise.
    pub(crate) fn new(transform: T, enabled: bool) -> Self {
        let splice = enabled && pipes::SUPPORTED && transform.passes_through();
        Self {
            copy: Pump::new(transform, &[]),
            splice,
            pipe: None,
            in_pipe: 0,
            header: [0; RECORD_HEADER],
            header_len: 0,
            header_sent: 0,
            eof: false,
            done: false,
            #[cfg(test)]
            fail_first: false,
            #[cfg(test)]
            partial_splices: 0,
            #[cfg(test)]
            spliced: 0,
        }
    }

    /// The transform (byte counts, shaping figures).
    pub(crate) fn transform(&self) -> &T {
        &self.copy.transform
    }

    /// Whether the direction holds a pipe now (bytes in flight on the zero-copy path).
    #[cfg(test)]
    pub(crate) fn holds_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    /// Whether the direction still splices (false once it fell back to copying).
    #[cfg(test)]
    pub(crate) fn splices(&self) -> bool {
        self.splice
    }

    /// Gives the (empty) pipe back to the pool.
    fn release(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            pipes::give(pipe);
        }
    }

    /// Sends the header and the pipe's bytes; `Ready(Ok)` once both are out.
    fn poll_drain<R: Runtime>(
        &mut self,
        cx: &mut Context<'_>,
        to: &R::Stream,
        active: &mut bool,
    ) -> Poll<Result<(), End>> {
        while self.header_sent < self.header_len {
            let header = &self.header[usize::from(self.header_sent)..usize::from(self.header_len)];
            match R::poll_write_with(to, cx, &mut |fd| pipes::send_more(fd, header)) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(End::Io(io::ErrorKind::WriteZero.into()))),
                // At most RECORD_HEADER bytes.
                Poll::Ready(Ok(n)) => self.header_sent += n as u8,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Bytes in the pipe imply a pipe.
        while let (Some(pipe), left @ 1..) = (&self.pipe, self.in_pipe) {
            match R::poll_write_with(to, cx, &mut |fd| pipe.splice_out(fd, left)) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(End::Io(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    #[cfg(test)]
                    if n < left {
                        self.partial_splices += 1;
                    }
                    self.in_pipe -= n.min(left);
                    *active = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The zero-copy path; `None` when this burst must take the copy path instead (no pipe
    /// to be had, or splicing turned out unsupported).
    fn poll_splice<R: Runtime>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R::Stream,
        to: &mut R::Stream,
        active: &mut bool,
        gate: &mut Option<&mut RateGate<R>>,
    ) -> Option<Poll<Result<(), End>>> {
        for _ in 0..CHUNKS_PER_POLL {
            match self.poll_drain::<R>(cx, to, active) {
                Poll::Ready(Ok(())) => {}
                other => return Some(other),
            }
            if self.eof {
                self.release();
                return Some(match Pin::new(&mut *to).poll_close(cx) {
                    Poll::Ready(_) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                });
            }
            if self.pipe.is_none() {
                self.pipe = Some(pipes::take()?);
            }
            let mut limit = match self.copy.transform.poll_read_limit(cx) {
                Poll::Ready(limit) => limit.min(T::READ_MAX),
                Poll::Pending => {
                    // Paced: nothing in flight until the timer fires.
                    self.release();
                    return Some(Poll::Pending);
                }
            };
            if let Some(gate) = gate.as_deref_mut() {
                match gate.poll_grant(cx, limit) {
                    Poll::Ready(granted) => limit = granted.min(limit),
                    Poll::Pending => {
                        self.release();
                        return Some(Poll::Pending);
                    }
                }
            }
            let Some(pipe) = &self.pipe else {
                // Taken above: never here (were it, the copy path would do).
                return None;
            };
            #[cfg(test)]
            let read = if std::mem::take(&mut self.fail_first) {
                Poll::Ready(Err(io::Error::from_raw_os_error(22)))
            } else {
                R::poll_read_with(from, cx, &mut |fd| pipe.splice_in(fd, limit))
            };
            #[cfg(not(test))]
            let read = R::poll_read_with(from, cx, &mut |fd| pipe.splice_in(fd, limit));
            if let Some(gate) = gate.as_deref_mut() {
                gate.settle(match read {
                    Poll::Ready(Ok(n)) => n,
                    _ => 0,
                });
            }
            match read {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(n)) => {
                    #[cfg(test)]
                    {
                        self.spliced += n as u64;
                    }
                    *active = true;
                    let (header, len) = self.copy.transform.pass_through(n);
                    (self.header, self.header_len, self.header_sent) = (header, len as u8, 0);
                    self.in_pipe = n;
                }
                Poll::Ready(Err(e)) if pipes::unsupported(&e) => {
                    // Nothing moved: the copy path takes over, for good.
                    debug!(error = %e, "splice unsupported here, relaying by copy");
                    self.splice = false;
                    self.release();
                    return None;
                }
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(End::Io(e)))),
                Poll::Pending => {
                    // Nothing in flight: an idle direction holds no pipe.
                    self.release();
                    return Some(Poll::Pending);
                }
            }
        }
        // Budget spent: let other tasks run, come back at once.
        cx.waker().wake_by_ref();
        Some(Poll::Pending)
    }
}

impl<R: Runtime, T: Transform> Flow<R, R::Stream> for Spliced<T> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R::Stream,
        to: &mut R::Stream,
        active: &mut bool,
        gate: Option<&mut RateGate<R>>,
    ) -> Poll<Result<(), End>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let mut gate = gate;
        // A burst on the copy path finishes there (its buffer holds bytes, or a read).
        if self.splice
            && !self.copy.in_flight()
            && let Some(poll) = self.poll_splice::<R>(cx, from, to, active, &mut gate)
        {
            return poll;
        }
        let poll = self.copy.poll_pump(cx, from, to, active, gate);
        self.done = matches!(poll, Poll::Ready(Ok(())));
        poll
    }

    fn bytes(&self) -> u64 {
        self.copy.transform.bytes()
    }
}

impl<T> Drop for Spliced<T> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            // A pipe with bytes left in it is closed, never lent again.
            if self.in_pipe == 0 { pipes::give(pipe) } else { pipes::discard(pipe) }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
