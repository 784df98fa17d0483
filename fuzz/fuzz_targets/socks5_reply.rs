//! SOCKS5 server replies: parsing arbitrary bytes never panics; a parsed reply's length never
//! exceeds the input and re-encodes to the same bytes (but the reserved byte); a request for
//! more always asks for more than there is. The whole client negotiation, driven the way
//! mtg-app drives it over the input as the server's byte stream, never panics and never asks
//! for a read of zero bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::socks5::{Connect, Credentials, Progress, Reply, Target, encode_reply, parse_reply};

fuzz_target!(|data: &[u8]| {
    match parse_reply(data) {
        Ok(Reply::Bound(bound, len)) => {
            assert!(len <= data.len());
            let mut expected = data[..len].to_vec();
            expected[2] = 0;
            assert_eq!(encode_reply(0, &bound), expected);
        }
        Ok(Reply::NeedMore(total)) => assert!(total > data.len()),
        Err(_) => {}
    }

    let credentials = Credentials { user: "user".into(), password: "pass".into() };
    let target = Target::Ip("10.0.0.1:443".parse().expect("literal"));
    let Ok((mut connect, first)) = Connect::new(target, Some(credentials)) else { return };
    let mut stream = data;
    let mut want = first.read;
    let mut buf = Vec::new();
    for _ in 0..16 {
        assert!(want > buf.len(), "asked to read nothing");
        let take = (want - buf.len()).min(stream.len());
        buf.extend_from_slice(&stream[..take]);
        stream = &stream[take..];
        if buf.len() < want {
            return; // the server closed early
        }
        match connect.handle_input(&buf) {
            Ok(Progress::NeedMore(total)) => want = total,
            Ok(Progress::Next(next)) => {
                buf.clear();
                want = next.read;
            }
            Ok(Progress::Connected(_)) | Err(_) => return,
        }
    }
    panic!("the negotiation did not end within 16 steps");
});
