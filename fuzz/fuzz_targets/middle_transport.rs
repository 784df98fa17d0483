//! The client transports of middle-proxy mode (abridged, intermediate, padded intermediate):
//! deframing never panics, chunking changes nothing, and every packet re-encodes to itself.
//!
//! Input: 4 chunk-size bytes (cycled; 0 counts as 1), then the client's decrypted stream, read
//! with each of the three deframers. Properties: the same packets and error whole or chunked;
//! packets are at most MAX_POST_SIZE bytes (whole words except `dd` remnants under 4 bytes);
//! encoding a packet and deframing it gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::middle::rpc::MAX_POST_SIZE;
use mtg_proto::middle::transport::{self, Transport, TransportDeframer, TransportError};
use rand::SeedableRng;

type Packets = Vec<(Vec<u8>, bool)>;

fn run(transport: Transport, pieces: impl Iterator<Item = Vec<u8>>) -> (Packets, Option<TransportError>) {
    let mut d = TransportDeframer::new(transport);
    let mut got = Vec::new();
    for piece in pieces {
        let mut input = &piece[..];
        loop {
            match d.next(&mut input) {
                Ok(Some(p)) => got.push((p.data.to_vec(), p.quick_ack)),
                Ok(None) => {
                    assert!(input.is_empty());
                    break;
                }
                Err(e) => return (got, Some(e)),
            }
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let (sizes, input) = data.split_at(data.len().min(4));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for t in Transport::ALL {
        let whole = run(t, std::iter::once(input.to_vec()));
        let mut at = 0;
        let mut cycle = sizes.iter().cycle();
        let chunked = run(
            t,
            std::iter::from_fn(|| {
                if at >= input.len() {
                    return None;
                }
                let size = cycle.next().map_or(input.len(), |&s| usize::from(s).max(1));
                let end = (at + size).min(input.len());
                let piece = input[at..end].to_vec();
                at = end;
                Some(piece)
            }),
        );
        assert_eq!(chunked, whole, "{t:?}");
        for (packet, _) in &whole.0 {
            assert!(packet.len() <= MAX_POST_SIZE);
            assert_eq!(packet.len() % 4, 0);
            if packet.is_empty() {
                continue;
            }
            let mut wire = Vec::new();
            transport::encode_packet(t, packet, &mut rng, &mut wire).unwrap();
            let (again, err) = run(t, std::iter::once(wire));
            assert_eq!(err, None);
            assert_eq!(again, vec![(packet.clone(), false)]);
        }
    }
});
