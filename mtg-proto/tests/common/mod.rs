//! A deterministic simulation of a client, the core and a DC without sockets.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mtg_proto::client::{ClientSession, FakeTlsHello};
use mtg_proto::obfs2::{self, LegCipher};
use mtg_proto::{
    HandshakeConfig, HandshakeContext, ReplayCache, Secret, ServerHandshake, Session, UserId, UserTable,
    Verdict,
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

/// Feeds `input` to a fresh handshake in the given chunk sizes (cycled) and returns every
/// verdict that was not `NeedMore`, the server flight bytes, and the handshake.
pub struct Fed {
    pub verdicts: Vec<Verdict>,
    pub flight: Vec<u8>,
    pub handshake: ServerHandshake,
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
    let mut hs = ServerHandshake::new(config);
    let mut r = rng(seed);
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    let mut end = 0;
    let mut i = 0;
    let mut again = false;
    while end < input.len() || again {
        if !again {
            let step = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(input.len()).max(1);
            i += 1;
            end = (end + step).min(input.len());
        }
        again = false;
        let mut ctx =
            HandshakeContext { users, replay: &mut *replay, rng: &mut r, now, hint: None, full_search: true };
        let v = hs.handle_input(&input[..end], &mut ctx, &mut out);
        match v {
            Verdict::NeedMore => {}
            Verdict::ServerHello { .. } => {
                // The contract: after writing the flight, call again before reading more.
                verdicts.push(v);
                again = true;
            }
            _ => {
                verdicts.push(v);
                break;
            }
        }
    }
    Fed { verdicts, flight: out, handshake: hs }
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
pub fn dc_accept(frame: &[u8; 64]) -> (obfs2::FrameHeader, LegCipher) {
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
    let Some(&Verdict::Accepted { user, dc, consumed, .. }) = fed.verdicts.last() else {
        panic!("not accepted: {:?}", fed.verdicts);
    };
    let (session, frame) = fed.handshake.into_session(dc.dc, &mut rng(8)).unwrap();
    (user, session, frame, consumed)
}
