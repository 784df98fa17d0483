//! A valid hello from the client encoder with one fuzz-chosen mutation: never panics; pure
//! fragmentation keeps it valid; flipping any bit of the 28 digest bytes never passes.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mtg_proto::client::{FakeTlsHello, fragment_hello};
use mtg_proto::{
    HandshakeConfig, HandshakeContext, NoReplayCheck, Secret, ServerHandshake, UserTable, Verdict,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const NOW: u32 = 1_700_000_000;

fn verdict(users: &UserTable, input: &[u8]) -> Verdict {
    let mut hs = ServerHandshake::new(HandshakeConfig::default());
    let mut rng = SmallRng::seed_from_u64(3);
    let mut ctx = HandshakeContext {
        users,
        replay: &mut NoReplayCheck,
        rng: &mut rng,
        now: Duration::from_secs(u64::from(NOW)),
        hint: None,
    };
    hs.handle_input(input, &mut ctx, &mut Vec::new())
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    let secret = Secret::fake_tls([7; 16], "fuzz.example").expect("valid secret");
    let users = UserTable::new([&secret]);
    let seed = rest.iter().take(8).fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let mut hello = Vec::new();
    FakeTlsHello::build(&secret, NOW, &mut SmallRng::seed_from_u64(seed), &mut hello).expect("ee secret");
    let arg = |i: usize| usize::from(rest.get(i).copied().unwrap_or(0));
    match op % 5 {
        0 => {
            // Flip one bit anywhere.
            let bit = (arg(0) << 8 | arg(1)) % (hello.len() * 8);
            hello[bit / 8] ^= 1 << (bit % 8);
            let v = verdict(&users, &hello);
            if (11..11 + 28).contains(&(bit / 8)) {
                assert!(!matches!(v, Verdict::ServerHello { .. }), "digest bit flip accepted");
            }
        }
        1 => {
            // Truncate.
            let cut = (arg(0) << 8 | arg(1)) % hello.len();
            let v = verdict(&users, &hello[..cut]);
            assert!(!matches!(v, Verdict::ServerHello { .. }), "truncated hello accepted");
        }
        2 => {
            // Insert bytes at an offset.
            let at = (arg(0) << 8 | arg(1)) % hello.len();
            let insert: Vec<u8> = rest.iter().skip(2).take(16).copied().collect();
            hello.splice(at..at, insert);
            let _ = verdict(&users, &hello);
        }
        3 => {
            // Overwrite a two-byte length-like field.
            let at = (arg(0) << 8 | arg(1)) % (hello.len() - 1);
            hello[at] = rest.get(2).copied().unwrap_or(0xff);
            hello[at + 1] = rest.get(3).copied().unwrap_or(0xff);
            let _ = verdict(&users, &hello);
        }
        _ => {
            // Fragment into records of fuzz-chosen sizes (at most 11 records in all).
            let sizes: Vec<usize> = rest.iter().take(10).map(|&b| usize::from(b) + 1).collect();
            let split = fragment_hello(&hello, &sizes);
            assert_eq!(verdict(&users, &split), Verdict::ServerHello { user: mtg_proto::UserId(0) });
        }
    }
});
