//! obfuscated2 round trip: what one end encrypts the other decrypts, both ways, for any DC,
//! secret and payloads; and reading arbitrary 64 bytes as a frame never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::obfs2;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 + 2 + 1 {
        return;
    }
    let mut frame = [0u8; 64];
    frame.copy_from_slice(&data[..64]);
    let _ = obfs2::respond(&frame, None);

    let dc = i16::from_le_bytes([data[64], data[65]]);
    let with_secret = data[66] & 1 == 1;
    let rest = &data[67..];
    let mut key = [0x5a; 16];
    for (k, b) in key.iter_mut().zip(rest) {
        *k ^= b;
    }
    let secret = with_secret.then_some(&key);
    let seed = rest.iter().fold(0u64, |a, &b| a.rotate_left(5) ^ u64::from(b));
    let (wire, mut initiator) = obfs2::initiate(&mut SmallRng::seed_from_u64(seed), [0xdd; 4], dc, secret);
    let (header, mut responder) = obfs2::respond(&wire, secret);
    assert_eq!(header.tag, [0xdd; 4]);
    assert_eq!(header.dc, dc);
    assert!(!obfs2::is_forbidden_frame(&{
        let mut f = wire;
        f[56..].fill(1);
        f
    }));

    let (up, down) = rest.split_at(rest.len() / 2);
    let mut a = up.to_vec();
    initiator.encrypt(&mut a);
    responder.decrypt(&mut a);
    assert_eq!(a, up);
    let mut b = down.to_vec();
    responder.encrypt(&mut b);
    initiator.decrypt(&mut b);
    assert_eq!(b, down);
});
