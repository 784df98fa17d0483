//! The doppelganger's record tap and flight observer over arbitrary server bytes.
//!
//! Input: 6 chunk-size bytes (cycled; 0 counts as 1), then arbitrary bytes fed in those
//! chunks, with the chunk also shown as a client write when its size byte is odd. Properties: no panic;
//! the records found in chunks equal those found in one whole-input feed; every record's
//! length fits what was fed; the certificate size never exceeds the ApplicationData payload
//! seen.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::doppel::{FlightObserver, RecordTap};

fuzz_target!(|data: &[u8]| {
    let (sizes, input) = data.split_at(data.len().min(6));
    let mut whole = Vec::new();
    RecordTap::new().feed(input, |r| whole.push(r));

    let mut tap = RecordTap::new();
    let mut chunked = Vec::new();
    let mut observer = FlightObserver::new();
    let t0 = Duration::ZERO;
    let mut start = 0;
    for (i, &size) in sizes.iter().cycle().enumerate() {
        if start == input.len() {
            break;
        }
        let end = (start + usize::from(size).max(1)).min(input.len());
        tap.feed(&input[start..end], |r| chunked.push(r));
        observer.server_bytes(&input[start..end], t0 + Duration::from_millis(i as u64), |d| {
            assert!(d <= Duration::from_millis(i as u64));
        });
        if size % 2 == 1 {
            observer.client_bytes(&input[start..end]);
        }
        start = end;
    }
    assert_eq!(chunked, whole);
    let fed: usize = whole.iter().map(|r| 5 + usize::from(r.len)).sum();
    assert!(fed <= input.len());
    let app_data: u32 = whole.iter().filter(|r| r.kind == 0x17).map(|r| u32::from(r.len)).sum();
    assert!(observer.cert_size().unwrap_or(0) <= app_data);
});
