//! MTProto probe answers (what `doctor` reads from a DC): splitting a frame, the unencrypted
//! header, `resPQ` and the probe check never panic on arbitrary bytes, and whatever they accept
//! re-encodes to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::mtproto::{self, ResPq};

fuzz_target!(|data: &[u8]| {
    let nonce: [u8; 16] = data.get(..16).and_then(|n| n.try_into().ok()).unwrap_or([0; 16]);
    if let Ok(Some(answer)) = mtproto::read_probe_answer(data, &nonce) {
        assert_eq!(answer.nonce, nonce);
    }
    if let Ok(Some(frame)) = mtproto::split_frame(data) {
        assert!(frame.consumed <= data.len());
        if let Ok(message) = mtproto::parse_unencrypted(frame.payload) {
            let _ = mtproto::parse_req_pq_multi(message.body);
        }
    }
    if let Ok(res) = ResPq::parse(data) {
        let encoded = res.encode();
        assert_eq!(ResPq::parse(&encoded).as_ref(), Ok(&res));
    }
});
