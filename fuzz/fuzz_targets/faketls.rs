//! Raw client bytes into the server handshake, the way a socket delivers them.
//!
//! Input: 4 chunk-size bytes (cycled; 0 counts as 1), then the bytes the client sends. The
//! handshake is fed the growing prefix chunk by chunk (it always gets every byte so far, as the
//! API contract says), once with `secured` off and once on, against an `ee` user (the testdata
//! secret, so the real captures validate) and a `dd` user with the same key (so the captured
//! obfuscated2 frame is accepted). Every authenticated client is accepted. Properties:
//! * nothing panics;
//! * the steps, the server flight and, after `Ready`, what the relay makes of the rest of the
//!   input (pushed through `ClientToDc::process` in the same chunks) are identical to feeding
//!   everything in one call;
//! * `Authenticated` comes at most once and first, and `consumed` never exceeds what was fed.
//!   (A stage is consumed by the call that advances it, so one that fronted or rejected cannot
//!   be called again: that is a type error, not a property to check.)
#![no_main]

use std::ops::Range;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::{
    AwaitingFrame, FrameHeader, FrameStep, FrontReason, HandshakeConfig, HandshakeContext, HelloStep, HostId,
    Mode, RejectReason, RelayError, Secret, ServerHandshake, StableBloomFilter, UserId, UserTable,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const EE: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
const DD: &str = "dd367a189aee18fa31c190054efd4a8e95";
/// The time the testdata captures carry.
const NOW: Duration = Duration::from_secs(1_617_181_365);
/// Thirty years: any timestamp a seed or a generated hello carries is accepted.
const SKEW: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// One answer of the handshake that was not `NeedMore`.
#[derive(Debug, PartialEq)]
enum Event {
    Authenticated { user: UserId, mode: Mode },
    Front { reason: FrontReason, host: Option<HostId> },
    Reject(RejectReason),
    Ready { user: UserId, mode: Mode, dc: FrameHeader, consumed: usize },
}

/// A handshake stage between two calls.
#[expect(clippy::large_enum_variant, reason = "one per run, on the stack as in the proxy")]
enum Stage {
    Hello(ServerHandshake),
    Frame(AwaitingFrame),
}

/// Everything observable about one run.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
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
    let mut stage = Stage::Hello(ServerHandshake::new(config));
    let mut outcome = Outcome { events: Vec::new(), flight: Vec::new(), relayed: None };
    for Range { end, .. } in chunks(input.len(), sizes) {
        let fed = &input[..end];
        loop {
            match stage {
                Stage::Hello(hs) => {
                    let mut ctx = HandshakeContext { users, replay: &mut replay, now: NOW, hint: None, full_search: true };
                    match hs.handle_input(fed, &mut ctx) {
                        HelloStep::NeedMore(hs) => {
                            stage = Stage::Hello(hs);
                            break;
                        }
                        HelloStep::Front { reason, host } => {
                            outcome.events.push(Event::Front { reason, host });
                            return outcome;
                        }
                        HelloStep::Authenticated(pending) => {
                            assert!(outcome.events.is_empty(), "Authenticated after {:?}", outcome.events);
                            outcome
                                .events
                                .push(Event::Authenticated { user: pending.user(), mode: pending.mode() });
                            // The contract: go on with the same bytes before reading more.
                            stage = Stage::Frame(pending.accept(&mut rng, &mut outcome.flight));
                        }
                    }
                }
                Stage::Frame(frame) => match frame.handle_input(fed) {
                    FrameStep::NeedMore(frame) => {
                        stage = Stage::Frame(frame);
                        break;
                    }
                    FrameStep::Reject(reason) => {
                        outcome.events.push(Event::Reject(reason));
                        return outcome;
                    }
                    FrameStep::Ready(established) => {
                        let consumed = established.consumed();
                        assert!(consumed <= end, "consumed {consumed} of {end} bytes");
                        let dc = established.dc();
                        outcome.events.push(Event::Ready {
                            user: established.user(),
                            mode: established.mode(),
                            dc,
                            consumed,
                        });
                        let (mut session, _dc_frame) = established.into_session(dc.dc, &mut rng);
                        outcome.relayed = Some(relay(&mut session.client_to_dc, &input[consumed..], sizes));
                        return outcome;
                    }
                },
            }
        }
    }
    outcome
}

/// Pushes `rest` through the client→DC half in the same chunks.
fn relay(half: &mut mtg_proto::ClientToDc, rest: &[u8], sizes: &[u8]) -> Result<Vec<u8>, RelayError> {
    let mut relayed = Vec::new();
    for chunk in chunks(rest.len(), sizes) {
        let mut buf = rest[chunk].to_vec();
        let range = half.process(&mut buf)?;
        relayed.extend_from_slice(&buf[range]);
    }
    Ok(relayed)
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
