//! The client→proxy record deframer against a whole-input reference.
//!
//! Input: 6 chunk-size bytes (cycled; 0 counts as 1), then arbitrary bytes, split into those
//! chunks and pushed through one `Deframer::deframe_in_place` per chunk. The reference parses
//! the whole input at once: it keeps the payloads of type 0x17 records, drops every other
//! record type, and stops at the first header whose version is not 03 03. Properties:
//! * without an error, the joined payload equals the reference's, and the deframer ends at a
//!   record boundary exactly when the input does;
//! * with an error, it is the reference's error, raised by the chunk holding the last byte of
//!   the bad header, and the payload so far is the reference's payload from earlier chunks (the
//!   failing chunk yields nothing);
//! * every returned range lies inside its chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::tls::record::{Deframer, RecordError};

/// What the reference finds in the whole input.
struct Reference {
    /// `(input offset, byte)` of every ApplicationData payload byte, in order.
    payload: Vec<(usize, u8)>,
    /// The offset of the last byte of the first bad header, and the error.
    error: Option<(usize, RecordError)>,
    /// Whether the input ends exactly at a record boundary.
    at_boundary: bool,
}

fn reference(input: &[u8]) -> Reference {
    let mut payload = Vec::new();
    let mut pos = 0;
    while let Some(h) = input.get(pos..pos + 5) {
        if h[1..3] != [0x03, 0x03] {
            let error = Some((pos + 4, RecordError::BadVersion([h[1], h[2]])));
            return Reference { payload, error, at_boundary: false };
        }
        let end = pos + 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
        if h[0] == 0x17 {
            payload.extend((pos + 5..end.min(input.len())).map(|i| (i, input[i])));
        }
        pos = end;
    }
    Reference { payload, error: None, at_boundary: pos == input.len() }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, input) = data.split_at(data.len().min(6));
    let want = reference(input);

    let mut deframer = Deframer::new();
    let mut got = Vec::new();
    let mut start = 0;
    for &size in sizes.iter().cycle() {
        if start == input.len() {
            break;
        }
        let end = (start + usize::from(size).max(1)).min(input.len());
        let mut chunk = input[start..end].to_vec();
        match deframer.deframe_in_place(&mut chunk) {
            Ok(range) => {
                assert!(range.start <= range.end && range.end <= chunk.len(), "{range:?} outside chunk");
                got.extend_from_slice(&chunk[range]);
            }
            Err(e) => {
                let (at, error) = want.error.expect("the deframer failed where the reference did not");
                assert_eq!(e, error);
                assert!((start..end).contains(&at), "error at {at} raised by chunk {start}..{end}");
                let before: Vec<u8> =
                    want.payload.iter().filter(|(i, _)| *i < start).map(|&(_, b)| b).collect();
                assert_eq!(got, before, "payload before the error");
                return;
            }
        }
        start = end;
    }
    assert_eq!(want.error, None, "the reference failed where the deframer did not");
    let payload: Vec<u8> = want.payload.iter().map(|&(_, b)| b).collect();
    assert_eq!(got, payload);
    assert_eq!(deframer.at_boundary(), want.at_boundary, "boundary state");
});
