//! The `getProxyConfig` parser never panics, and whatever it accepts renders to a text that
//! parses back to the same map without warnings.
//!
//! Input: the config text (lossy UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtg_proto::middle::proxy_config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = proxy_config::parse(&text);
    for addrs in parsed.map.by_dc.values() {
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.port() != 0));
    }
    let _ = parsed.map.group(i16::from_le_bytes([data.first().copied().unwrap_or(0), 0]));
    let again = proxy_config::parse(&parsed.map.render());
    assert_eq!(again.warnings, vec![]);
    assert_eq!(again.map, parsed.map);
});
