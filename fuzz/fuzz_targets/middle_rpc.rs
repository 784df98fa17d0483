//! The middle-proxy RPC stream: frame deframing (plaintext and CBC), message decoding and the
//! client handshake never panic, and chunking changes nothing.
//!
//! Input: 4 chunk-size bytes (cycled; 0 counts as 1), then the plaintext stream. Every
//! plausible frame in it gets its CRC fixed first (so the fuzzer reaches the seq checks and the
//! message decoders). Properties:
//! * the plaintext deframer yields the same payloads and error whether fed whole or in chunks;
//! * the CBC reader, fed the stream encrypted (zero-padded to a block) in the same chunks,
//!   yields the same payloads and the same error (a zero-padded tail may add a length error);
//! * every payload decodes (or fails) as a message without panicking, and a decoded answer's
//!   data lies inside its payload;
//! * the client handshake fed the stream in chunks fails or waits, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::middle::cbc::{CbcDecryptor, CbcEncryptor};
use mtg_proto::middle::frame::MAX_FRAME_LEN;
use mtg_proto::middle::rpc::{self, FromMiddle};
use mtg_proto::middle::{
    ClientStep, Endpoints, FrameError, MiddleHandshake, ProxySecret, RpcDeframer, RpcReader,
};
use rand::SeedableRng;

/// Rewrites the CRC of every plausible frame (`16 <= len`, whole words, inside the input).
fn fix_crcs(data: &mut [u8]) {
    let mut at = 0;
    while let Some(word) = data.get(at..at + 4) {
        let len = u32::from_le_bytes(word.try_into().unwrap()) as usize;
        if len >= 16 && len % 4 == 0 && at + len <= data.len() {
            let crc = crc(&data[at..at + len - 4]);
            data[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
            at += len;
        } else {
            at += 4;
        }
    }
}

/// CRC-32/IEEE, bitwise (independent of the crate's implementation).
fn crc(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn chunks<'a>(data: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let size = sizes.next().map_or(data.len(), |&s| usize::from(s).max(1));
        let end = (at + size).min(data.len());
        let piece = &data[at..end];
        at = end;
        Some(piece)
    })
}

fn check_message(payload: &[u8]) {
    if let Ok(FromMiddle::ProxyAns { data, .. }) = rpc::decode_from_middle(payload) {
        assert_eq!(data.len() + 16, payload.len());
    }
    let _ = rpc::decode_to_middle(payload);
}

/// Runs `next` over the pieces, collecting payloads until the first error.
fn collect<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    mut next: impl FnMut(&mut &'a [u8]) -> Result<Option<Vec<u8>>, FrameError>,
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut got = Vec::new();
    for piece in pieces {
        let mut input = piece;
        loop {
            match next(&mut input) {
                Ok(Some(p)) => got.push(p),
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
    let mut plain = input.to_vec();
    fix_crcs(&mut plain);

    let mut whole = RpcDeframer::new(0);
    let (want, want_err) =
        collect(std::iter::once(&plain[..]), |i| whole.next(i).map(|p| p.map(<[u8]>::to_vec)));
    let mut pieced = RpcDeframer::new(0);
    let (got, got_err) = collect(chunks(&plain, sizes), |i| pieced.next(i).map(|p| p.map(<[u8]>::to_vec)));
    assert_eq!(got, want);
    assert_eq!(got_err, want_err);
    for p in &want {
        check_message(p);
    }

    // The same stream through CBC.
    let (key, iv) = ([0x42u8; 32], [0x24u8; 16]);
    let mut cipher = plain.clone();
    cipher.resize(plain.len().div_ceil(16) * 16, 0);
    CbcEncryptor::from_raw(&key, &iv).encrypt_in_place(&mut cipher).unwrap();
    let mut reader = RpcReader::new(CbcDecryptor::from_raw(&key, &iv), 0, MAX_FRAME_LEN);
    let (got, got_err) = collect(chunks(&cipher, sizes), |i| reader.next(i).map(|p| p.map(<[u8]>::to_vec)));
    assert_eq!(got, want);
    if want_err.is_some() {
        assert_eq!(got_err, want_err);
    }

    // The client handshake on the same bytes (a nonce reply, then "ciphertext").
    let secret = ProxySecret::new(&[0x11; 64]).unwrap();
    let endpoints = Endpoints::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (mut hs, _) = MiddleHandshake::start(&secret, 0, endpoints, &mut rng);
    let mut out = Vec::new();
    for piece in chunks(&plain, sizes) {
        let mut input = piece;
        match hs.feed(&mut input, &mut out) {
            Ok(ClientStep::NeedMore(next)) => hs = next,
            Ok(ClientStep::Ready(_)) | Err(_) => return,
        }
    }
});
