//! Relay buffers lent per worker thread: a pump holds one only while it has bytes in flight
//! and gives it back when its source has nothing to read, so an idle session holds no buffer.
//! Taking and giving are a `Vec` pop and push on the current thread: no lock, and no
//! allocation once the thread's free list has warmed up.

use std::cell::RefCell;

/// Length of every pooled buffer: at least every transform's read offset plus read size, and
/// a DC→client read of several records framed in place (64 KiB).
pub(crate) const BUF_LEN: usize = mtg_proto::DcToClient::RECORDS_BUFFER_LEN;
/// Most free buffers a thread keeps; more are freed (bounds memory after a burst: 1 MiB).
const KEEP: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`BUF_LEN`] bytes: a free one of this thread, else a new one.
pub(crate) fn take() -> Box<[u8]> {
    FREE.with(|free| free.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; BUF_LEN].into_boxed_slice())
}

/// Returns a buffer to this thread's free list (dropped if the list is full or the buffer
/// is not of the pooled size).
pub(crate) fn give(buf: Box<[u8]>) {
    if buf.len() != BUF_LEN {
        return;
    }
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            if free.capacity() == 0 {
                free.reserve_exact(KEEP);
            }
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again() {
        let buf = take();
        assert_eq!(buf.len(), BUF_LEN);
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the same allocation comes back");
    }

    #[test]
    fn the_free_list_is_bounded() {
        let bufs: Vec<_> = (0..KEEP + 10).map(|_| take()).collect();
        bufs.into_iter().for_each(give);
        assert_eq!(FREE.with(|f| f.borrow().len()), KEEP);
        give(vec![0u8; 10].into_boxed_slice());
        assert_eq!(FREE.with(|f| f.borrow().len()), KEEP, "odd sizes are not pooled");
    }
}
