//! Dynamic record sizing: how many payload bytes the next proxy→client record may carry.
//!
//! With DRS on, a burst starts with small records like a TLS server warming up its congestion
//! window: records 1–40 carry up to `1450 − r`, records 41–60 up to `4096 − r` (`r` uniform in
//! [0, 100), drawn per record), then [`MAX_RECORD_PAYLOAD`]. After more than
//! [`RESET_AFTER`] without a record the schedule starts again. With DRS off every record may
//! be full.

use core::time::Duration;

use rand_core::RngCore;

use crate::tls::record::MAX_RECORD_PAYLOAD;

/// A pause longer than this restarts the schedule.
pub const RESET_AFTER: Duration = Duration::from_secs(1);
/// Records of the first (small) phase.
const SMALL_RECORDS: u32 = 40;
/// Records of the first two phases together.
const SMALL_AND_MEDIUM_RECORDS: u32 = 60;
/// Base size of the first phase.
const SMALL: usize = 1450;
/// Base size of the second phase.
const MEDIUM: usize = 4096;
/// The random reduction is below this.
const JITTER_SPAN: u32 = 100;

/// The record-size schedule of one connection.
///
/// [`RecordSizer::limit`] may be asked any number of times (it does not advance the
/// schedule); [`RecordSizer::record_sent`] advances it once per record.
#[derive(Debug, Clone)]
pub struct RecordSizer {
    drs: bool,
    /// Records sent in the current burst.
    sent: u32,
    /// When the previous record was sent.
    last: Option<Duration>,
    /// The reduction for the next record, in [0, 100).
    jitter: u16,
}

impl RecordSizer {
    /// A schedule at its start; `drs = false` always allows full records.
    pub fn new(drs: bool, rng: &mut (impl RngCore + ?Sized)) -> Self {
        Self { drs, sent: 0, last: None, jitter: draw_jitter(rng) }
    }

    /// Whether dynamic sizing is on.
    pub fn drs(&self) -> bool {
        self.drs
    }

    /// The largest payload the next record may carry if it is sent at `now` (time since any
    /// fixed origin, the same for every call).
    pub fn limit(&self, now: Duration) -> usize {
        if !self.drs {
            return MAX_RECORD_PAYLOAD;
        }
        let reduce = usize::from(self.jitter);
        match self.position(now) {
            n if n < SMALL_RECORDS => SMALL - reduce,
            n if n < SMALL_AND_MEDIUM_RECORDS => MEDIUM - reduce,
            _ => MAX_RECORD_PAYLOAD,
        }
    }

    /// Advances the schedule: a record was sent at `now`.
    pub fn record_sent(&mut self, now: Duration, rng: &mut (impl RngCore + ?Sized)) {
        if !self.drs {
            return;
        }
        self.sent = self.position(now).saturating_add(1);
        self.last = Some(now);
        self.jitter = draw_jitter(rng);
    }

    /// Records already sent in the burst a record sent at `now` belongs to.
    fn position(&self, now: Duration) -> u32 {
        match self.last {
            Some(last) if now.saturating_sub(last) > RESET_AFTER => 0,
            _ => self.sent,
        }
    }
}

fn draw_jitter(rng: &mut (impl RngCore + ?Sized)) -> u16 {
    // Modulo bias of a 32-bit draw over 100 values is below 2^-25: irrelevant here.
    (rng.next_u32() % JITTER_SPAN) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// The (smallest, largest) limit of the 1-based record `n` of a burst.
    fn bounds(n: u32) -> (usize, usize) {
        match n {
            1..=40 => (1351, 1450),
            41..=60 => (3997, 4096),
            _ => (16379, 16379),
        }
    }

    #[test]
    fn drs_off_is_always_a_full_record() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut sizer = RecordSizer::new(false, &mut rng);
        let t = Duration::from_secs(1000);
        for i in 0..100 {
            let now = t + Duration::from_millis(i * 10);
            assert_eq!(sizer.limit(now), 16379);
            sizer.record_sent(now, &mut rng);
        }
    }

    #[test]
    fn asking_twice_gives_the_same_limit() {
        let mut rng = SmallRng::seed_from_u64(2);
        let sizer = RecordSizer::new(true, &mut rng);
        let t = Duration::from_secs(1000);
        assert_eq!(sizer.limit(t), sizer.limit(t + Duration::from_millis(500)));
    }

    #[test]
    fn a_pause_of_exactly_one_second_keeps_the_burst_and_longer_restarts_it() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut sizer = RecordSizer::new(true, &mut rng);
        let t = Duration::from_secs(1000);
        for _ in 0..60 {
            sizer.record_sent(t, &mut rng);
        }
        assert_eq!(sizer.limit(t + RESET_AFTER), 16379);
        let later = t + RESET_AFTER + Duration::from_millis(1);
        assert!(sizer.limit(later) <= 1450);
        sizer.record_sent(later, &mut rng);
        assert!(sizer.limit(later) <= 1450, "record 2 of the new burst is small too");
    }

    proptest! {
        #[test]
        fn every_record_follows_the_schedule(
            seed: u64,
            gaps_ms in proptest::collection::vec(prop_oneof![9 => 0u64..1000, 1 => 1001u64..3000], 1..200),
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut sizer = RecordSizer::new(true, &mut rng);
            let mut now = Duration::from_secs(1000);
            let mut in_burst = 0u32;
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                if gap > 1000 {
                    in_burst = 0;
                }
                in_burst += 1;
                let (lo, hi) = bounds(in_burst);
                let limit = sizer.limit(now);
                prop_assert!(lo <= limit && limit <= hi, "record {} of a burst: {}", in_burst, limit);
                sizer.record_sent(now, &mut rng);
            }
        }
    }
}
