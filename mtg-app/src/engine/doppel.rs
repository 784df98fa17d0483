//! The doppelganger's engine side: the statistics every new session shapes with (built in, or
//! swapped in by learning) and the shaping counters. Whether sessions shape at all is
//! `[defense.doppelganger] drs` / `pacing`, read from the config; what learning does is
//! [`LearnSettings`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use mtg_proto::doppel::{FlightStats, HelloKind, Samples, Statistics};
use mtg_proto::tls::server_flight::ObservedFlight;

use crate::doppel_learn::{self, LearnSettings, RaidReport};

/// The statistics in use and the shaping counters, shared by all sessions.
#[derive(Debug, Default)]
pub struct Doppelganger {
    statistics: RwLock<Statistics>,
    paced_records: AtomicU64,
    /// What every raid so far measured (bounded: the last 4096 of each kind).
    samples: Mutex<Samples>,
    /// The fronting site's flights seen so far (bounded per kind of hello).
    flights: Mutex<FlightStats>,
}

impl Doppelganger {
    /// The statistics new sessions use.
    pub fn statistics(&self) -> Statistics {
        // A poisoned lock only means a panic elsewhere mid-swap: the value is whole (Copy).
        *self.statistics.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Swaps in new statistics for the sessions that start from now on.
    pub fn set_statistics(&self, statistics: Statistics) {
        *self.statistics.write().unwrap_or_else(std::sync::PoisonError::into_inner) = statistics;
    }

    /// One raid over `settings.urls` (blocking: seconds to minutes), then the statistics are
    /// refitted from everything measured so far and swapped in.
    pub fn learn(&self, settings: &LearnSettings, tls: &Arc<rustls::ClientConfig>) -> RaidReport {
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let report = doppel_learn::raid(
            &settings.urls,
            settings.repeats_per_raid,
            tls,
            settings.http_timeout,
            &mut samples,
        );
        self.set_statistics(samples.refit(self.statistics()));
        report
    }

    /// Adds a flight the fronting site sent to a hello of `kind`; sessions from now on shape
    /// their fake flight after the refitted shapes.
    pub fn add_flight(&self, kind: HelloKind, flight: ObservedFlight) {
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        flights.add(kind, flight);
        let mut statistics = self.statistics();
        statistics.flight = flights.profile();
        self.set_statistics(statistics);
    }

    /// A copy of the fronting site's flights seen so far.
    pub fn flights(&self) -> FlightStats {
        self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records of ended sessions that waited for a pacing timer.
    pub fn paced_records(&self) -> u64 {
        self.paced_records.load(Ordering::Relaxed)
    }

    /// Counts an ended session's paced records.
    pub(crate) fn add_paced_records(&self, n: u64) {
        self.paced_records.fetch_add(n, Ordering::Relaxed);
    }
}
