//! Raw bytes, cut into fuzz-chosen chunks, into the server handshake (FakeTLS and `dd`):
//! never panics, and the verdicts are the same however the input is chunked.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::{
    HandshakeConfig, HandshakeContext, Secret, ServerHandshake, StableBloomFilter, UserTable, Verdict,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const SECRET: &str = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";

/// Feeds `input` growing by `chunks` (cycled); returns every decisive verdict.
fn run(users: &UserTable, input: &[u8], chunks: &[u8], secured: bool) -> Vec<Verdict> {
    let config = HandshakeConfig {
        time_skew: Duration::from_secs(60 * 60 * 24 * 365 * 30),
        secured,
        ..Default::default()
    };
    let mut replay = StableBloomFilter::new(4096, 0.001, &mut SmallRng::seed_from_u64(1));
    let mut rng = SmallRng::seed_from_u64(2);
    let mut hs = ServerHandshake::new(config);
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    let (mut end, mut i, mut again) = (0usize, 0usize, false);
    while end < input.len() || again {
        if !again {
            let step = usize::from(chunks.get(i % chunks.len().max(1)).copied().unwrap_or(255)).max(1);
            i += 1;
            end = (end + step).min(input.len());
        }
        again = false;
        let mut ctx = HandshakeContext {
            users,
            replay: &mut replay,
            rng: &mut rng,
            now: Duration::from_secs(1_617_181_365),
            hint: None,
        };
        let v = hs.handle_input(&input[..end], &mut ctx, &mut out);
        match v {
            Verdict::NeedMore => {}
            Verdict::ServerHello { .. } => {
                verdicts.push(v);
                again = true;
            }
            Verdict::Accepted { consumed, dc, .. } => {
                verdicts.push(v);
                assert!(consumed <= end);
                let (mut session, frame) = hs.into_session(dc.dc, &mut rng).expect("accepted");
                assert_eq!(frame.len(), 64);
                let mut rest = input[consumed..].to_vec();
                let _ = session.client_to_dc.process(&mut rest);
                return verdicts;
            }
            _ => {
                verdicts.push(v);
                return verdicts;
            }
        }
    }
    verdicts
}

fuzz_target!(|data: &[u8]| {
    let (chunks, input) = data.split_at(data.len().min(4));
    let ee = Secret::parse(SECRET).expect("valid secret");
    let dd = Secret::secured([0x42; 16]).expect("valid secret");
    let users = UserTable::new([&ee, &dd]);
    for secured in [false, true] {
        let whole = run(&users, input, &[255], secured);
        let split = run(&users, input, chunks, secured);
        // Chunking into 255-byte steps vs fuzz-chosen steps: the decisions must agree.
        assert_eq!(whole, split, "verdict depends on chunking");
    }
});
