//! PROXY protocol headers: parsing arbitrary bytes never panics, and a header length never
//! exceeds the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::proxy_protocol::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Header { len, .. }) = parse(data) {
        assert!(len <= data.len());
    }
});
