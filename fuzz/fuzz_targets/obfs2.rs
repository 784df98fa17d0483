//! obfuscated2 both ways round.
//!
//! Input: `frame[64] | tag[4] | dc[2, LE] | flags | key[16] | rng seed[8] | segments...`, where
//! each segment is a header byte (bit 0: direction, bits 1..: length) and that many payload
//! bytes. Properties:
//! * `respond` on any 64 bytes never panics, with or without a secret;
//! * `initiate(rng, tag, dc, secret)` never emits a forbidden frame, and `respond` on its frame
//!   with the same secret (flags bit 0; else none) reads back the same tag and DC id;
//! * every segment, encrypted by one end's `LegCipher` and decrypted by the other's, comes out
//!   as it went in, in both directions and however the segments interleave (the keystreams stay
//!   in step).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::obfs2::{self, FRAME_LEN};
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// Takes the next `N` bytes off the front of `data`.
fn take<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = data.split_first_chunk::<N>()?;
    *data = rest;
    Some(*head)
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(frame) = take::<FRAME_LEN>(&mut data) else { return };
    let _ = obfs2::respond(&frame, None);
    let (Some(tag), Some(dc), Some([flags]), Some(key), Some(seed)) =
        (take::<4>(&mut data), take(&mut data), take::<1>(&mut data), take(&mut data), take(&mut data))
    else {
        return;
    };
    let _ = obfs2::respond(&frame, Some(&key));

    let dc = i16::from_le_bytes(dc);
    let secret = (flags & 1 == 1).then_some(&key);
    let mut rng = SmallRng::seed_from_u64(u64::from_le_bytes(seed));
    let (wire, mut initiator) = obfs2::initiate(&mut rng, tag, dc, secret);
    assert!(!obfs2::is_forbidden_frame(&wire), "initiate emitted a forbidden frame");
    let (header, mut responder) = obfs2::respond(&wire, secret);
    assert_eq!((header.tag, header.dc), (tag, dc));

    while let Some((&head, rest)) = data.split_first() {
        let (plain, rest) = rest.split_at(usize::from(head >> 1).min(rest.len()));
        data = rest;
        let mut buf = plain.to_vec();
        if head & 1 == 0 {
            initiator.encrypt(&mut buf);
            responder.decrypt(&mut buf);
        } else {
            responder.encrypt(&mut buf);
            initiator.decrypt(&mut buf);
        }
        assert_eq!(buf, plain, "a segment did not survive the round trip");
    }
});
