//! What learning keeps: the last [`KEEP`] inter-record durations and certificate-flight
//! sizes, and the statistics fitted from them.

use std::collections::VecDeque;

use super::flight_shape::FlightProfile;
use super::weibull::Weibull;
use crate::tls::server_hello::AppDataLen;

/// Durations and sizes kept (older ones are dropped first).
pub const KEEP: usize = 4096;
/// Fewest certificate-flight sizes that calibrate the fake certificate record.
pub const MIN_CERT_SIZES: usize = 3;
/// Smallest jitter of the calibrated certificate record.
const MIN_JITTER: u32 = 100;

/// The calibrated size of the fake certificate record: `mean ± jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertSize {
    /// Mean certificate-flight size in bytes.
    pub mean: u16,
    /// Largest distance of a sample from the mean, at least 100.
    pub jitter: u16,
}

impl CertSize {
    /// The length range of the server flight's ApplicationData record.
    pub fn app_data_len(self) -> AppDataLen {
        AppDataLen::calibrated(self.mean, self.jitter)
    }
}

/// The statistics new sessions shape their traffic with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Statistics {
    /// The inter-record delay model.
    pub delays: Weibull,
    /// The fake certificate size; `None` = mtg's uncalibrated range.
    pub cert: Option<CertSize>,
    /// The fronting site's learned first-flight shapes (empty: not learned).
    pub flight: FlightProfile,
}

impl Statistics {
    /// The length range of the server flight's ApplicationData record.
    pub fn app_data_len(&self) -> AppDataLen {
        self.cert.map_or_else(AppDataLen::default, CertSize::app_data_len)
    }
}

/// The samples of every raid so far, bounded.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    durations_ms: VecDeque<f64>,
    cert_sizes: VecDeque<u32>,
}

impl Samples {
    /// No samples.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one inter-record duration in milliseconds.
    pub fn add_duration_ms(&mut self, ms: f64) {
        push_bounded(&mut self.durations_ms, ms);
    }

    /// Adds one certificate-flight size in bytes.
    pub fn add_cert_size(&mut self, bytes: u32) {
        push_bounded(&mut self.cert_sizes, bytes);
    }

    /// Durations kept.
    pub fn durations(&self) -> usize {
        self.durations_ms.len()
    }

    /// Certificate sizes kept.
    pub fn cert_sizes(&self) -> usize {
        self.cert_sizes.len()
    }

    /// The delay model fitted to the durations, when there are enough.
    pub fn delays(&self) -> Option<Weibull> {
        let (a, b) = self.durations_ms.as_slices();
        if b.is_empty() { Weibull::fit(a) } else { Weibull::fit(&[a, b].concat()) }
    }

    /// Mean and jitter of the certificate sizes, with at least [`MIN_CERT_SIZES`] of them.
    pub fn cert(&self) -> Option<CertSize> {
        let n = self.cert_sizes.len();
        if n < MIN_CERT_SIZES {
            return None;
        }
        let mean = self.cert_sizes.iter().map(|&x| u64::from(x)).sum::<u64>() / n as u64;
        let mean = u32::try_from(mean).unwrap_or(u32::MAX);
        let jitter = self.cert_sizes.iter().map(|&x| x.abs_diff(mean)).max().unwrap_or(0).max(MIN_JITTER);
        let to_u16 = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        Some(CertSize { mean: to_u16(mean), jitter: to_u16(jitter) })
    }

    /// `current` with every part that has enough samples replaced by the fitted one.
    pub fn refit(&self, current: Statistics) -> Statistics {
        Statistics {
            delays: self.delays().unwrap_or(current.delays),
            cert: self.cert().or(current.cert),
            flight: current.flight,
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, value: T) {
    if queue.len() == KEEP {
        queue.pop_front();
    }
    queue.push_back(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_size_needs_three_samples_and_a_jitter_of_at_least_100() {
        let mut s = Samples::new();
        s.add_cert_size(4000);
        s.add_cert_size(4010);
        assert_eq!(s.cert(), None);
        s.add_cert_size(4020);
        assert_eq!(s.cert(), Some(CertSize { mean: 4010, jitter: 100 }));
        s.add_cert_size(3000);
        // mean (4000+4010+4020+3000)/4 = 3757; farthest is 3000 → 757.
        assert_eq!(s.cert(), Some(CertSize { mean: 3757, jitter: 757 }));
        assert_eq!(s.cert().unwrap().app_data_len(), AppDataLen { min: 3000, max: 4513 });
    }

    #[test]
    fn huge_cert_sizes_saturate() {
        let mut s = Samples::new();
        for _ in 0..3 {
            s.add_cert_size(u32::MAX);
        }
        assert_eq!(s.cert(), Some(CertSize { mean: u16::MAX, jitter: 100 }));
    }

    #[test]
    fn only_the_last_4096_are_kept() {
        let mut s = Samples::new();
        for i in 0..5000u32 {
            s.add_cert_size(if i < 904 { 60_000 } else { 2000 });
            s.add_duration_ms(f64::from(i));
        }
        assert_eq!((s.durations(), s.cert_sizes()), (4096, 4096));
        assert_eq!(s.cert(), Some(CertSize { mean: 2000, jitter: 100 }));
        assert_eq!(s.durations_ms.front(), Some(&904.0));
    }

    #[test]
    fn refit_keeps_what_has_too_few_samples() {
        let mut s = Samples::new();
        let current = Statistics::default();
        assert_eq!(s.refit(current), current);
        for i in 0..100 {
            s.add_duration_ms(1.0 + f64::from(i % 7));
        }
        let next = s.refit(current);
        assert_ne!(next.delays, current.delays);
        assert_eq!(next.cert, None);
        assert_eq!(next.app_data_len(), AppDataLen::default());
    }
}
