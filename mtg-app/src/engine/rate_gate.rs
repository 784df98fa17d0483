//! A session direction's way through its user's `rate-limit`: before each read the pump asks
//! [`RateGate::poll_grant`] how much it may read; with no tokens the read waits on a runtime
//! timer (the pump holds no buffer meanwhile), and after the read [`RateGate::settle`] says how
//! much moved, giving the rest back. A user without a rate costs one atomic load per read; the
//! timer is made only when a read first has to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::metrics::Waited;
use crate::runtime::Runtime;
use crate::users::accounting::UserStats;
use crate::users::rate_bucket::Grant;
use crate::users::rate_limit::{Direction, instant_at, now_ns};

/// One direction of one session, limited by its user's rate (whatever it is now).
pub(crate) struct RateGate<R: Runtime> {
    user: Arc<UserStats>,
    direction: Direction,
    /// Made on the first wait.
    timer: Option<R::Timer>,
    /// A reservation not settled yet.
    held: Option<Grant>,
    /// The last read found nothing: the next reservation is a probe.
    idle: bool,
    /// The user's metric of time spent waiting, and the part of a millisecond not counted.
    waited: Option<(Waited, u64)>,
}

impl<R: Runtime> RateGate<R> {
    /// A gate for `direction` of one of `user`'s sessions; waits are counted into `waited`.
    pub(crate) fn new(user: Arc<UserStats>, direction: Direction, waited: Option<Waited>) -> Self {
        Self { user, direction, timer: None, held: None, idle: false, waited: waited.map(|w| (w, 0)) }
    }

    /// How many bytes (at most `want`, at least 1) the next read may bring, once it may
    /// happen; `Pending` until the user's bucket has them (the timer wakes the task).
    pub(crate) fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        let Some(rate) = self.user.rate().get() else {
            if let Some(grant) = self.held.take() {
                // The limit went away while this reservation waited.
                self.user.rate().settle(self.direction, grant, 0);
            }
            return Poll::Ready(want);
        };
        let mut now = now_ns();
        let grant = match self.held {
            Some(grant) => grant,
            None => {
                let grant = self.user.rate().reserve(self.direction, rate, now, want as u64, self.idle);
                if let Some((waited, carry)) = &mut self.waited
                    && grant.ready_at > now
                {
                    waited.add_ns(carry, grant.ready_at - now);
                }
                self.held = Some(grant);
                grant
            }
        };
        while grant.ready_at > now {
            let at = instant_at(grant.ready_at);
            let timer = match &mut self.timer {
                Some(timer) => {
                    R::reset(timer, at);
                    timer
                }
                None => self.timer.insert(R::timer_at(at)),
            };
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            now = now_ns();
        }
        Poll::Ready((grant.bytes as usize).min(want).max(1))
    }

    /// The read after a grant moved `used` bytes (0: it found nothing or failed).
    pub(crate) fn settle(&mut self, used: usize) {
        if let Some(grant) = self.held.take() {
            self.user.rate().settle(self.direction, grant, used as u64);
            self.idle = used == 0;
        }
    }

    /// Waits until `bytes` may be written (in steps of the user's quantum), taking them.
    pub(crate) async fn take(&mut self, mut bytes: usize) {
        while bytes > 0 {
            let granted = std::future::poll_fn(|cx| self.poll_grant(cx, bytes)).await;
            if let Some(grant) = self.held.take() {
                self.user.rate().settle(self.direction, grant, granted as u64);
            }
            bytes = bytes.saturating_sub(granted);
        }
    }
}

impl<R: Runtime> Drop for RateGate<R> {
    fn drop(&mut self) {
        self.settle(0);
    }
}
