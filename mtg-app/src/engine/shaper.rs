//! Doppelganger shaping of the DC→client direction (FakeTLS only): how many bytes the next
//! record may carry (DRS) and when it may be read (Weibull pacing).
//!
//! The pump asks [`Shaped::poll_read_limit`] before every read from the DC and reads at most
//! that much, so one record is one read: nothing is queued beyond the pump's one buffer, and a
//! client that does not read stops the reads from the DC (back-pressure). With pacing, the
//! next read waits for a timer re-armed with a fresh draw at every record, so the gap between
//! records is at least the drawn delay, or the wait for data when that is longer. With neither
//! DRS nor pacing the shaper takes no time readings and holds no timer, and one read may bring
//! up to [`DcToClient::MAX_RECORDS`] full records, framed for one write (fast mode: one).

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use mtg_proto::doppel::{RecordSizer, Weibull};
use mtg_proto::{DcToClient, RelayError};

use super::relay::{Downlink, RECORD_HEADER, Transform};
use crate::runtime::Runtime;

/// The DC→client transform (re-encrypting or fast mode's) with its shaping.
pub(crate) struct Shaped<R: Runtime> {
    inner: Downlink,
    /// When the session's shaping started: the origin of the sizer's clock.
    origin: Instant,
    sizer: Option<RecordSizer>,
    pacer: Option<Pacer<R>>,
}

struct Pacer<R: Runtime> {
    delays: Weibull,
    timer: R::Timer,
    /// The timer fired since the last record: the next read may go ahead.
    open: bool,
    records: u64,
}

impl<R: Runtime> Shaped<R> {
    /// No shaping (secured clients, or nothing asked for).
    pub(crate) fn off(inner: Downlink) -> Self {
        Self { inner, origin: Instant::now(), sizer: None, pacer: None }
    }

    /// Shaping with dynamic record sizing (`drs`) and pacing by `delays` (when `Some`).
    pub(crate) fn new(inner: Downlink, drs: bool, pacing: Option<Weibull>) -> Self {
        let mut rng = rand::rng();
        let origin = Instant::now();
        let sizer = drs.then(|| RecordSizer::new(true, &mut rng));
        let pacer = pacing.map(|delays| Pacer {
            delays,
            timer: R::timer_at(origin + delays.delay(&mut rng)),
            open: false,
            records: 0,
        });
        Self { inner, origin, sizer, pacer }
    }

    /// MTProto payload bytes relayed so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.bytes()
    }

    /// Records that waited for the pacing timer.
    pub(crate) fn paced_records(&self) -> u64 {
        self.pacer.as_ref().map_or(0, |p| p.records)
    }
}

impl<R: Runtime> Transform for Shaped<R> {
    const READ_AT: usize = Downlink::READ_AT;
    const READ_MAX: usize = Downlink::READ_MAX;

    fn poll_read_limit(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        if let Some(pacer) = &mut self.pacer
            && !pacer.open
        {
            if Pin::new(&mut pacer.timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            pacer.open = true;
        }
        // Shaped: one record per read, of the size drawn. Unshaped: several records per read.
        Poll::Ready(match (&self.sizer, &self.pacer) {
            (Some(sizer), _) => sizer.limit(self.origin.elapsed()).min(DcToClient::MAX_CHUNK),
            (None, Some(_)) => DcToClient::MAX_CHUNK,
            (None, None) => return self.inner.poll_read_limit(cx),
        })
    }

    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        self.record_sent();
        self.inner.transform(buf, n)
    }

    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }

    fn passes_through(&self) -> bool {
        self.inner.passes_through()
    }

    fn pass_through(&mut self, n: usize) -> ([u8; RECORD_HEADER], usize) {
        self.record_sent();
        self.inner.pass_through(n)
    }
}

impl<R: Runtime> Shaped<R> {
    /// Moves the shaping on by one record (read from the DC, about to go to the client): the
    /// sizer's next limit, the pacer's next delay. The copy and the zero-copy path alike.
    fn record_sent(&mut self) {
        if self.sizer.is_some() || self.pacer.is_some() {
            let now = Instant::now();
            let mut rng = rand::rng();
            if let Some(sizer) = &mut self.sizer {
                sizer.record_sent(now.saturating_duration_since(self.origin), &mut rng);
            }
            if let Some(pacer) = &mut self.pacer {
                pacer.records += 1;
                pacer.open = false;
                R::reset(&mut pacer.timer, now + pacer.delays.delay(&mut rng));
            }
        }
    }
}
