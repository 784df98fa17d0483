//! Arbitrary bytes split at arbitrary points through the in-place record deframer, compared
//! with a whole-input reference: same payload, same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::tls::record::{Deframer, RecordError};

/// Parses whole records from the complete input: ApplicationData payloads joined; the first
/// complete header with a version other than 03 03 is the error.
fn reference(input: &[u8]) -> (Vec<u8>, Option<RecordError>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 5 <= input.len() {
        let h = &input[pos..pos + 5];
        if h[1..3] != [3, 3] {
            return (out, Some(RecordError::BadVersion([h[1], h[2]])));
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let end = (pos + 5 + len).min(input.len());
        if h[0] == 0x17 {
            out.extend_from_slice(&input[pos + 5..end]);
        }
        pos += 5 + len;
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = data.split_at(data.len().min(6));
    let mut deframer = Deframer::new();
    let mut got = Vec::new();
    let mut error = None;
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() && error.is_none() {
        let step = usize::from(cuts.get(i % cuts.len().max(1)).copied().unwrap_or(7)).max(1);
        i += 1;
        let end = (pos + step).min(input.len());
        let mut chunk = input[pos..end].to_vec();
        match deframer.deframe_in_place(&mut chunk) {
            Ok(range) => got.extend_from_slice(&chunk[range]),
            Err(e) => error = Some(e),
        }
        pos = end;
    }
    let (want, want_error) = reference(input);
    assert_eq!(error, want_error);
    if error.is_none() {
        assert_eq!(got, want);
    } else {
        // Payload before the bad header is the same; a chunk with the error yields nothing more.
        assert!(want.starts_with(&got));
    }
});
