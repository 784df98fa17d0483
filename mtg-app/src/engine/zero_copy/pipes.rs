//! The pipes the zero-copy path splices through, lent from a bounded pool, and the three
//! nonblocking syscalls it makes (through `rustix`: no `unsafe` here).
//!
//! A direction takes a pipe when a transfer starts and gives it back once the pipe is drained
//! and the source would block, so an idle session holds none. Taking and giving are a `Vec`
//! pop and push on the current thread plus one atomic count of the pipes lent (the bound):
//! no lock, and no syscall once the thread's free list has warmed up. Past the bound, a burst
//! takes the copy path. A pipe holds no memory while empty; each costs two descriptors.

use std::cell::RefCell;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most pipes lent at once, all threads together (each is two descriptors, and up to one
/// record of kernel memory while it holds bytes).
pub(crate) const MAX_LENT: usize = 256;
/// Most free pipes a thread keeps; more are closed (bounds descriptors after a burst).
const KEEP: usize = 8;

/// Pipes lent now.
static LENT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static FREE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Whether this platform can splice (Linux).
pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

/// A pipe: its read and write ends, both nonblocking.
#[derive(Debug)]
pub(crate) struct Pipe {
    #[cfg(target_os = "linux")]
    read: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    write: std::os::fd::OwnedFd,
}

/// A pipe to splice through: a free one of this thread, else a new one; `None` when
/// [`MAX_LENT`] are lent or no pipe can be made (the copy path takes this burst).
pub(crate) fn take() -> Option<Pipe> {
    if LENT.fetch_add(1, Ordering::Relaxed) >= MAX_LENT {
        LENT.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let pipe = FREE.with(|free| free.borrow_mut().pop()).or_else(Pipe::open);
    if pipe.is_none() {
        LENT.fetch_sub(1, Ordering::Relaxed);
    }
    pipe
}

/// Returns an empty pipe to this thread's free list (closed if the list is full).
pub(crate) fn give(pipe: Pipe) {
    LENT.fetch_sub(1, Ordering::Relaxed);
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            if free.capacity() == 0 {
                free.reserve_exact(KEEP);
            }
            free.push(pipe);
        }
    });
}

/// Closes a pipe that still holds bytes (a session that ended mid-transfer).
pub(crate) fn discard(pipe: Pipe) {
    LENT.fetch_sub(1, Ordering::Relaxed);
    drop(pipe);
}

/// Whether a splice error means "not supported here" (nothing moved; copy instead) rather
/// than a socket error.
pub(crate) fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || sys::unsupported_code(e.raw_os_error())
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use rustix::net::SendFlags;
    use rustix::pipe::{PipeFlags, SpliceFlags};

    use rustix::io::Errno;

    /// `EINVAL` (a socket or file type splice does not take), `ENOSYS`, `EOPNOTSUPP`.
    pub(super) fn unsupported_code(code: Option<i32>) -> bool {
        let Some(errno) = code.map(Errno::from_raw_os_error) else { return false };
        matches!(errno, Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
    }

    /// Nonblocking on the pipe side (the sockets are nonblocking themselves); pages are moved
    /// where the kernel can.
    const SPLICE: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

    impl Pipe {
        pub(super) fn open() -> Option<Self> {
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
            Some(Self { read, write })
        }

        /// Moves up to `len` bytes from the socket `from` into this (empty) pipe.
        pub(crate) fn splice_in(&self, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
            Ok(rustix::pipe::splice(from, None, &self.write, None, len, SPLICE)?)
        }

        /// Moves up to `len` of this pipe's bytes into the socket `to`.
        pub(crate) fn splice_out(&self, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
            Ok(rustix::pipe::splice(&self.read, None, to, None, len, SPLICE)?)
        }
    }

    /// Sends `bytes` (a record header) on the socket `to` with `MSG_MORE`: held back until
    /// the payload spliced after it, so both leave in the same segments.
    pub(crate) fn send_more(to: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(to, bytes, SendFlags::MORE | SendFlags::NOSIGNAL)?)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;

    pub(super) fn unsupported_code(_code: Option<i32>) -> bool {
        false
    }

    fn unsupported() -> io::Error {
        io::ErrorKind::Unsupported.into()
    }

    impl Pipe {
        pub(super) fn open() -> Option<Self> {
            None
        }
        pub(crate) fn splice_in(&self, _from: BorrowedFd<'_>, _len: usize) -> io::Result<usize> {
            Err(unsupported())
        }
        pub(crate) fn splice_out(&self, _to: BorrowedFd<'_>, _len: usize) -> io::Result<usize> {
            Err(unsupported())
        }
    }

    pub(crate) fn send_more(_to: BorrowedFd<'_>, _bytes: &[u8]) -> io::Result<usize> {
        Err(unsupported())
    }
}

pub(crate) use sys::send_more;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_given_pipe_is_taken_again_and_the_free_list_is_bounded() {
        let pipe = take().expect("a pipe can be made on Linux");
        give(pipe);
        let taken: Vec<Pipe> = (0..KEEP + 3).filter_map(|_| take()).collect();
        assert_eq!(taken.len(), KEEP + 3);
        taken.into_iter().for_each(give);
        assert_eq!(FREE.with(|f| f.borrow().len()), KEEP, "more free pipes than KEEP are closed");
    }
}
