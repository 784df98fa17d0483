//! The relay allocates nothing: 1 MiB each way after the handshake, counted by a global
//! allocator wrapper. (One test per binary: the counter is process-wide.)

mod alloc_counter;

mod common;

use std::time::Duration;

use mtg_proto::{DcToClient, NoReplayCheck, UserTable};

use common::*;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

#[test]
fn one_mebibyte_each_way_allocates_nothing() {
    const TOTAL: usize = 1 << 20;
    let s = secret(8, "alloc.example");
    let users = UserTable::new([&s]);
    let t = transcript(&s, 1_700_000_000, 2, b"", 1);
    let (_, mut session, frame, _) =
        accept(&users, &mut NoReplayCheck, Duration::from_secs(1_700_000_000), &t.bytes);
    let (_, mut dc_leg) = dc_accept(&frame);
    let mut client = t.client;

    // Everything the measured phase touches is prepared before counting starts.
    let chunk = 16 * 1024;
    let mut up_wire = Vec::with_capacity(TOTAL + TOTAL / 1000);
    client.seal(&vec![0x5a; TOTAL], &mut up_wire);
    let mut down_plain = vec![0xa5u8; TOTAL];
    dc_leg.encrypt(&mut down_plain);
    let mut buf = vec![0u8; DcToClient::BUFFER_LEN];

    let before = alloc_counter::allocations();
    let mut up_bytes = 0;
    for piece in up_wire.chunks_mut(chunk) {
        up_bytes += session.client_to_dc.process(piece).unwrap().len();
    }
    let mut down_bytes = 0;
    for piece in down_plain.chunks(DcToClient::MAX_CHUNK) {
        buf[DcToClient::HEADROOM..DcToClient::HEADROOM + piece.len()].copy_from_slice(piece);
        let range = session.dc_to_client.process(&mut buf, piece.len()).unwrap();
        down_bytes += range.len();
    }
    let after = alloc_counter::allocations();

    assert_eq!(up_bytes, TOTAL);
    assert_eq!(session.client_to_dc.bytes(), TOTAL as u64);
    assert_eq!(session.dc_to_client.bytes(), TOTAL as u64);
    assert_eq!(down_bytes, TOTAL + TOTAL.div_ceil(DcToClient::MAX_CHUNK) * 5);
    assert_eq!(after - before, 0, "the relay allocated {} times", after - before);
}
