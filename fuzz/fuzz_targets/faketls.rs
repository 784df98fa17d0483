//! Raw client bytes into the server handshake, the way a socket delivers them.
//!
//! Input: 4 chunk-size bytes (cycled; 0 counts as 1), then the bytes the client sends. The
//! handshake is fed the growing prefix chunk by chunk (it always gets every byte so far, as the
//! API contract says), once with `secured` off and once on, against an `ee` user (the testdata
//! secret, so the real captures validate) and a `dd` user with the same key (so the captured
//! obfuscated2 frame is accepted). Properties:
//! * nothing panics;
//! * the verdicts, the server flight and, after `Accepted`, what the relay makes of the rest of
//!   the input (pushed through `ClientToDc::process` in the same chunks) are identical to
//!   feeding everything in one call;
//! * `ServerHello` comes at most once and first, `consumed` never exceeds what was fed, and a
//!   handshake that fronted or rejected answers `Reject(Finished)` afterwards.
#![no_main]

use std::ops::Range;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::{
    HandshakeConfig, HandshakeContext, RejectReason, RelayError, Secret, ServerHandshake, StableBloomFilter,
    UserTable, Verdict,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const EE: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
const DD: &str = "dd367a189aee18fa31c190054efd4a8e95";
/// The time the testdata captures carry.
const NOW: Duration = Duration::from_secs(1_617_181_365);
/// Thirty years: any timestamp a seed or a generated hello carries is accepted.
const SKEW: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Everything observable about one run.
#[derive(Debug, PartialEq)]
struct Outcome {
    verdicts: Vec<Verdict>,
    flight: Vec<u8>,
    relayed: Option<Result<Vec<u8>, RelayError>>,
}

/// Consecutive chunks covering `len` bytes: `sizes` cycled, or one chunk if `sizes` is empty.
/// Always at least one chunk (an empty one for empty input).
fn chunks(len: usize, sizes: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let size = match sizes {
            [] => len,
            _ => usize::from(sizes[out.len() % sizes.len()]).max(1),
        };
        let end = (start + size).min(len);
        out.push(start..end);
        if end == len {
            return out;
        }
        start = end;
    }
}

fn run(users: &UserTable, input: &[u8], sizes: &[u8], secured: bool) -> Outcome {
    let config = HandshakeConfig { time_skew: SKEW, secured, ..HandshakeConfig::default() };
    // Fresh and identically seeded for every run, so runs differ only in chunking.
    let mut replay = StableBloomFilter::new(4096, 0.001, &mut SmallRng::seed_from_u64(1));
    let mut rng = SmallRng::seed_from_u64(2);
    let mut hs = ServerHandshake::new(config);
    let mut outcome = Outcome { verdicts: Vec::new(), flight: Vec::new(), relayed: None };
    for Range { end, .. } in chunks(input.len(), sizes) {
        loop {
            let mut ctx =
                HandshakeContext { users, replay: &mut replay, rng: &mut rng, now: NOW, hint: None, full_search: true };
            let verdict = hs.handle_input(&input[..end], &mut ctx, &mut outcome.flight);
            match verdict {
                Verdict::NeedMore => break,
                Verdict::ServerHello { .. } => {
                    assert!(outcome.verdicts.is_empty(), "ServerHello after {:?}", outcome.verdicts);
                    outcome.verdicts.push(verdict);
                    // The contract: call again with the same bytes before reading more.
                }
                Verdict::Accepted { consumed, dc, .. } => {
                    assert!(consumed <= end, "consumed {consumed} of {end} bytes");
                    outcome.verdicts.push(verdict);
                    let (mut session, _dc_frame) = hs.into_session(dc.dc, &mut rng).expect("accepted");
                    let rest = &input[consumed..];
                    let mut relayed = Vec::new();
                    let mut result = Ok(());
                    for chunk in chunks(rest.len(), sizes) {
                        let mut buf = rest[chunk].to_vec();
                        match session.client_to_dc.process(&mut buf) {
                            Ok(range) => relayed.extend_from_slice(&buf[range]),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    outcome.relayed = Some(result.map(|()| relayed));
                    return outcome;
                }
                Verdict::Front { .. } | Verdict::Reject(_) => {
                    outcome.verdicts.push(verdict);
                    let mut ctx =
                        HandshakeContext { users, replay: &mut replay, rng: &mut rng, now: NOW, hint: None, full_search: true };
                    let again = hs.handle_input(input, &mut ctx, &mut outcome.flight);
                    assert_eq!(again, Verdict::Reject(RejectReason::Finished));
                    return outcome;
                }
            }
        }
    }
    outcome
}

fuzz_target!(|data: &[u8]| {
    let (sizes, input) = data.split_at(data.len().min(4));
    let ee = Secret::parse(EE).expect("valid secret");
    let dd = Secret::parse(DD).expect("valid secret");
    let users = UserTable::new([&ee, &dd]);
    for secured in [false, true] {
        let whole = run(&users, input, &[], secured);
        let chunked = run(&users, input, sizes, secured);
        assert_eq!(whole, chunked, "outcome depends on chunking (secured = {secured})");
    }
});
