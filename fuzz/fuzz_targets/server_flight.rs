//! The fronting site's first flight as learning reads it, over arbitrary bytes.
//!
//! Properties: no panic; a parsed flight fits the input (its wire length is at most the
//! input's); the shape learned from it reproduces its record count, and the fake record drawn
//! from that shape stays within TLS's ciphertext limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::doppel::flight_shape::MAX_ENCRYPTED_RECORD;
use mtg_proto::doppel::{FlightStats, HelloKind};
use mtg_proto::tls::server_flight::ObservedFlight;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Ok(flight) = ObservedFlight::parse(data) else {
        return;
    };
    assert!(flight.wire_len() as usize <= data.len());
    assert!(flight.record_types().count() >= 2);
    let mut stats = FlightStats::new();
    stats.add(HelloKind::X25519, flight);
    let shape = stats.shape(HelloKind::X25519).expect("one observation gives a shape");
    assert_eq!(shape.record_ranges().len(), flight.encrypted.as_slice().len());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(data.len() as u64);
    let drawn = shape.draw_encrypted_len(&mut rng);
    assert!((1..=MAX_ENCRYPTED_RECORD as usize).contains(&drawn));
});
