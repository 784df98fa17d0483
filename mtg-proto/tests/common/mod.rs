//! A deterministic simulation of a client, the core and a DC without sockets.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mtg_proto::client::{ClientSession, FakeTlsHello};
use mtg_proto::obfs2::{self, LegCipher};
use mtg_proto::{
    Established, FrameHeader, FrameStep, FrontReason, FrontTarget, HandshakeConfig, HandshakeContext,
    HelloStep, HostId, Mode, RejectReason, ReplayCache, Secret, ServerHandshake, Session, UserId, UserTable,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// The secret of the real captures in `tests/data`.
pub const MTG_SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

pub fn secret(key_byte: u8, host: &str) -> Secret {
    let mut key = [key_byte; 16];
    key[0] = 1;
    Secret::fake_tls(key, host).unwrap()
}

/// Every answer of a handshake run that was not `NeedMore`, and the app's refusal, as a
/// comparable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `HelloStep::Authenticated`.
    Authenticated { user: UserId, mode: Mode },
    /// `HelloStep::Front`.
    Front { reason: FrontReason, host: Option<HostId> },
    /// `Pending::refuse`.
    Refused(FrontTarget),
    /// `FrameStep::Reject`.
    Reject(RejectReason),
    /// `FrameStep::Ready`.
    Ready { user: UserId, mode: Mode, dc: FrameHeader, consumed: usize },
}

/// What the simulated app answers to `Authenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Refuse,
}

/// Feeds `input` to a fresh handshake in the given chunk sizes (cycled) and returns every
/// event, the server flight bytes, and the established handshake if it got that far.
pub struct Fed {
    pub events: Vec<Event>,
    pub flight: Vec<u8>,
    pub established: Option<Established>,
}

/// A handshake stage between two calls.
#[expect(clippy::large_enum_variant, reason = "one per simulated handshake, on the stack as in the proxy")]
enum Stage {
    Hello(ServerHandshake),
    Frame(mtg_proto::AwaitingFrame),
}

pub fn feed(
    users: &UserTable,
    replay: &mut dyn ReplayCache,
    config: HandshakeConfig,
    now: Duration,
    input: &[u8],
    chunks: &[usize],
    seed: u64,
) -> Fed {
    feed_deciding(users, replay, config, now, input, chunks, seed, Decision::Accept)
}

/// [`feed`] with the app's answer to `Authenticated`.
#[expect(clippy::too_many_arguments, reason = "a test driver: every knob of one run")]
pub fn feed_deciding(
    users: &UserTable,
    replay: &mut dyn ReplayCache,
    config: HandshakeConfig,
    now: Duration,
    input: &[u8],
    chunks: &[usize],
    seed: u64,
    decision: Decision,
) -> Fed {
    let mut r = rng(seed);
    let mut fed = Fed { events: Vec::new(), flight: Vec::new(), established: None };
    let mut stage = Stage::Hello(ServerHandshake::new(config));
    let mut end = 0;
    let mut i = 0;
    let mut need_more = true;
    loop {
        if need_more {
            if end == input.len() {
                return fed;
            }
            let step = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(input.len()).max(1);
            i += 1;
            end = (end + step).min(input.len());
        }
        need_more = false;
        stage = match stage {
            Stage::Hello(hs) => {
                let mut ctx =
                    HandshakeContext { users, replay: &mut *replay, now, hint: None, full_search: true };
                match hs.handle_input(&input[..end], &mut ctx) {
                    HelloStep::NeedMore(hs) => {
                        need_more = true;
                        Stage::Hello(hs)
                    }
                    HelloStep::Front { reason, host } => {
                        fed.events.push(Event::Front { reason, host });
                        return fed;
                    }
                    HelloStep::Authenticated(pending) => {
                        fed.events.push(Event::Authenticated { user: pending.user(), mode: pending.mode() });
                        if decision == Decision::Refuse {
                            fed.events.push(Event::Refused(pending.refuse()));
                            return fed;
                        }
                        // The contract: after writing the flight, go on with the same bytes.
                        Stage::Frame(pending.accept(&mut r, &mut fed.flight))
                    }
                }
            }
            Stage::Frame(frame) => match frame.handle_input(&input[..end]) {
                FrameStep::NeedMore(frame) => {
                    need_more = true;
                    Stage::Frame(frame)
                }
                FrameStep::Reject(reason) => {
                    fed.events.push(Event::Reject(reason));
                    return fed;
                }
                FrameStep::Ready(established) => {
                    fed.events.push(Event::Ready {
                        user: established.user(),
                        mode: established.mode(),
                        dc: established.dc(),
                        consumed: established.consumed(),
                    });
                    fed.established = Some(established);
                    return fed;
                }
            },
        };
    }
}

/// A client transcript: hello, then (after the flight) CCS + frame record + first payload.
pub struct Transcript {
    pub hello: FakeTlsHello,
    pub bytes: Vec<u8>,
    pub hello_len: usize,
    pub client: ClientSession,
}

pub fn transcript(secret: &Secret, unix: u32, dc: i16, payload: &[u8], seed: u64) -> Transcript {
    let mut r = rng(seed);
    let mut bytes = Vec::new();
    let hello = FakeTlsHello::build(secret, unix, &mut r, &mut bytes).unwrap();
    let hello_len = bytes.len();
    let mut client = ClientSession::start(secret, dc, &mut r, &mut bytes);
    client.seal(payload, &mut bytes);
    Transcript { hello, bytes, hello_len, client }
}

/// The fake DC's end of the proxy→DC leg.
pub fn dc_accept(frame: &[u8; 64]) -> (FrameHeader, LegCipher) {
    obfs2::respond(frame, None)
}

/// Runs a whole handshake in one go and opens the session.
pub fn accept(
    users: &UserTable,
    replay: &mut dyn ReplayCache,
    now: Duration,
    input: &[u8],
) -> (UserId, Session, [u8; 64], usize) {
    let fed = feed(users, replay, HandshakeConfig::default(), now, input, &[input.len()], 7);
    let (Some(&Event::Ready { user, dc, consumed, .. }), Some(established)) =
        (fed.events.last(), fed.established)
    else {
        panic!("not accepted: {:?}", fed.events);
    };
    let (session, frame) = established.into_session(dc.dc, &mut rng(8));
    (user, session, frame, consumed)
}
