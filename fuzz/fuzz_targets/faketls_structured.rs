//! A valid ClientHello from the client encoder (`FakeTlsHello::build`, stamped with the same
//! time the handshake uses as `now`), with one fuzz-chosen mutation.
//!
//! Input: `[op, builder seed, args...]`. Properties, besides never panicking:
//! * flip one bit: inside the 28 digest bytes of the client random it is always
//!   `Front(BadDigest)`; anywhere but the 4 timestamp bytes it is never `Authenticated`;
//! * truncate: a proper prefix of a valid hello is always `NeedMore` (never fronted early);
//! * insert bytes: `Authenticated` only if the original hello is still intact at the start;
//! * set a length field (record, handshake, session id, suites, compression, extensions, each
//!   extension, SNI list, SNI name) to another value: never `Authenticated`;
//! * fragment into records of fuzz-chosen sizes with `client::fragment_hello`: still
//!   `Authenticated`, and the server flight that accepting writes verifies on the client side.
#![no_main]

use std::ops::Range;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::client::{FakeTlsHello, fragment_hello};
use mtg_proto::{
    FrontReason, HandshakeConfig, HandshakeContext, HelloStep, NoReplayCheck, Secret, ServerHandshake,
    UserId, UserTable,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const EE: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
const NOW: u32 = 1_617_181_365;
/// The 28 digest bytes of the client random (record header 5 + handshake header 4 + version 2).
const DIGEST: Range<usize> = 11..39;
/// The 4 bytes of the client random that carry the timestamp (XOR digest).
const TIMESTAMP: Range<usize> = 39..43;

/// Fuzz bytes read front to back; missing bytes read as zero.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// What one hello-stage call answered.
#[derive(Debug, PartialEq)]
enum Verdict {
    NeedMore,
    Front(FrontReason),
    Authenticated(UserId),
}

/// One handshake call with all of `input`: the answer and the server flight (written when an
/// authenticated client is accepted).
fn verdict(users: &UserTable, input: &[u8]) -> (Verdict, Vec<u8>) {
    let hs = ServerHandshake::new(HandshakeConfig::default());
    let mut ctx = HandshakeContext {
        users,
        replay: &mut NoReplayCheck,
        now: Duration::from_secs(u64::from(NOW)),
        hint: None,
        full_search: true,
    };
    let mut flight = Vec::new();
    let v = match hs.handle_input(input, &mut ctx) {
        HelloStep::NeedMore(_) => Verdict::NeedMore,
        HelloStep::Front { reason, .. } => Verdict::Front(reason),
        HelloStep::Authenticated(pending) => {
            let user = pending.user();
            let _frame = pending.accept(&mut SmallRng::seed_from_u64(3), &mut flight);
            Verdict::Authenticated(user)
        }
    };
    (v, flight)
}

/// `(offset, width)` of every length field of a hello the encoder built.
fn length_fields(hello: &[u8]) -> Vec<(usize, usize)> {
    let be16 = |at: usize| usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    // Record length, handshake length, session id length.
    let mut fields = vec![(3, 2), (6, 3), (43, 1)];
    let mut pos = 44 + usize::from(hello[43]);
    fields.push((pos, 2)); // cipher suites
    pos += 2 + be16(pos);
    fields.push((pos, 1)); // compression methods
    pos += 1 + usize::from(hello[pos]);
    fields.push((pos, 2)); // extensions
    let end = pos + 2 + be16(pos);
    pos += 2;
    while pos < end {
        fields.push((pos + 2, 2));
        if be16(pos) == 0x0000 {
            // server_name: the list length and the length of its one name.
            fields.push((pos + 4, 2));
            fields.push((pos + 7, 2));
        }
        pos += 4 + be16(pos + 2);
    }
    fields
}

fuzz_target!(|data: &[u8]| {
    let [op, seed, rest @ ..] = data else { return };
    let mut args = Args(rest);
    let secret = Secret::parse(EE).expect("valid secret");
    let users = UserTable::new([&secret]);
    let mut hello = Vec::new();
    let mut rng = SmallRng::seed_from_u64(u64::from(*seed));
    let client = FakeTlsHello::build(&secret, NOW, &mut rng, &mut hello).expect("ee secret");
    match op % 5 {
        0 => {
            let bit = usize::from(args.u16()) % (hello.len() * 8);
            let byte = bit / 8;
            hello[byte] ^= 1 << (bit % 8);
            let (v, _) = verdict(&users, &hello);
            if DIGEST.contains(&byte) {
                assert!(v == Verdict::Front(FrontReason::BadDigest), "digest bit {bit} flipped: {v:?}");
            }
            if !TIMESTAMP.contains(&byte) {
                assert!(!matches!(v, Verdict::Authenticated(_)), "bit {bit} flipped and accepted");
            }
        }
        1 => {
            let len = usize::from(args.u16()) % hello.len();
            let (v, _) = verdict(&users, &hello[..len]);
            assert_eq!(v, Verdict::NeedMore, "valid hello cut to {len} bytes");
        }
        2 => {
            let at = usize::from(args.u16()) % (hello.len() + 1);
            let rest = args.rest();
            let bytes = &rest[..rest.len().min(16)];
            let mut mutated = hello.clone();
            mutated.splice(at..at, bytes.iter().copied());
            let (v, _) = verdict(&users, &mutated);
            if matches!(v, Verdict::Authenticated(_)) {
                assert!(mutated.starts_with(&hello), "{bytes:02x?} inserted at {at} and accepted");
            }
        }
        3 => {
            let fields = length_fields(&hello);
            let (at, width) = fields[usize::from(args.u8()) % fields.len()];
            let value = args.u16().to_be_bytes();
            let old = hello[at..at + width].to_vec();
            match width {
                1 => hello[at] = value[1],
                2 => hello[at..at + 2].copy_from_slice(&value),
                _ => hello[at..at + 3].copy_from_slice(&[0, value[0], value[1]]),
            }
            let (v, _) = verdict(&users, &hello);
            if hello[at..at + width] != old[..] {
                assert!(
                    !matches!(v, Verdict::Authenticated(_)),
                    "length field at {at} set to {value:02x?} and accepted"
                );
            }
        }
        _ => {
            // At most 10 sizes: with the remainder, at most the 11 records the proxy allows.
            let sizes: Vec<usize> = args.rest().iter().take(10).map(|&b| usize::from(b) + 1).collect();
            let fragmented = fragment_hello(&hello, &sizes);
            let (v, flight) = verdict(&users, &fragmented);
            assert_eq!(v, Verdict::Authenticated(UserId(0)), "fragmented at {sizes:?}");
            assert_eq!(client.verify_flight(&flight), Ok(Some(flight.len())), "flight does not verify");
        }
    }
});
