//! Real Telegram client captures (tests/data, from 9seconds/mtg, MIT) through the core.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use mtg_proto::tls::client_hello::HelloRecords;
use mtg_proto::{FrontReason, HandshakeConfig, Mode, NoReplayCheck, Secret, UserTable};
use serde_json::Value;

use common::*;

fn captures(prefix: &str) -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/faketls");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .map(|p| {
            (p.display().to_string(), serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn good_captures_validate_and_yield_their_fields() {
    let secret = Secret::parse(MTG_SECRET).unwrap();
    let users = UserTable::new([&secret]);
    let good = captures("client-hello-ok-");
    assert_eq!(good.len(), 6);
    for (name, c) in good {
        let full = b64(&c["full"]);
        let records = HelloRecords::scan(&full).unwrap().unwrap();
        assert_eq!(records.consumed(), full.len(), "{name}");
        let hello = records.parse(|n| users.host_id(n).map(|h| h.0)).unwrap();
        assert_eq!(hello.random.to_vec(), b64(&c["random"]), "{name}");
        assert_eq!(hello.session_id().to_vec(), b64(&c["sessionId"]), "{name}");
        assert_eq!(u64::from(hello.cipher_suite), c["cipherSuite"].as_u64().unwrap(), "{name}");
        assert_eq!(users.host_name(mtg_proto::HostId(hello.hosts()[0])), c["host"].as_str(), "{name}");

        // Validated against the capture's own time, with mtg's 3 s default tolerance.
        let now = Duration::from_secs(c["time"].as_u64().unwrap());
        let fed = feed(&users, &mut NoReplayCheck, HandshakeConfig::default(), now, &full, &[full.len()], 1);
        assert_eq!(
            fed.events,
            vec![Event::Authenticated { user: mtg_proto::UserId(0), mode: Mode::FakeTls }],
            "{name}"
        );
        // The flight echoes the session id and the chosen cipher suite.
        let sid = b64(&c["sessionId"]);
        assert_eq!(&fed.flight[..3], &[0x16, 3, 3]);
        assert_eq!(fed.flight[43], sid.len() as u8);
        assert_eq!(&fed.flight[44..44 + sid.len()], &sid[..]);
        let cs = (c["cipherSuite"].as_u64().unwrap() as u16).to_be_bytes();
        assert_eq!(&fed.flight[44 + sid.len()..46 + sid.len()], &cs);
    }
}

#[test]
fn good_captures_are_fronted_a_minute_later() {
    let secret = Secret::parse(MTG_SECRET).unwrap();
    let users = UserTable::new([&secret]);
    for (name, c) in captures("client-hello-ok-") {
        let full = b64(&c["full"]);
        let now = Duration::from_secs(c["time"].as_u64().unwrap() + 60);
        let fed = feed(&users, &mut NoReplayCheck, HandshakeConfig::default(), now, &full, &[full.len()], 1);
        assert!(
            matches!(fed.events[..], [Event::Front { reason: FrontReason::TimeSkew, .. }]),
            "{name}: {:?}",
            fed.events
        );
    }
}

#[test]
fn grease_first_capture_skips_grease() {
    let (_, c) = captures("client-hello-ok-grease-first").remove(0);
    let full = b64(&c["full"]);
    let secret = Secret::parse(MTG_SECRET).unwrap();
    let users = UserTable::new([&secret]);
    let hello = HelloRecords::scan(&full).unwrap().unwrap().parse(|n| users.host_id(n).map(|h| h.0)).unwrap();
    assert_eq!(hello.cipher_suite, 4867);
}

#[test]
fn bad_capture_fails_the_digest() {
    let secret = Secret::parse(MTG_SECRET).unwrap();
    let users = UserTable::new([&secret]);
    let bad = captures("client-hello-bad-");
    assert_eq!(bad.len(), 1);
    for (name, c) in bad {
        let full = b64(&c["full"]);
        let now = Duration::from_secs(c["time"].as_u64().unwrap());
        let fed = feed(&users, &mut NoReplayCheck, HandshakeConfig::default(), now, &full, &[full.len()], 1);
        assert!(
            matches!(fed.events[..], [Event::Front { reason: FrontReason::BadDigest, host: Some(_) }]),
            "{name}: {:?}",
            fed.events
        );
    }
}

#[test]
fn obfuscated2_snapshots_decrypt_and_encrypt_like_telegram() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/obfuscated2");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let d = |v: &Value| STANDARD_NO_PAD.decode(v.as_str().unwrap()).unwrap();
        let key: [u8; 16] = d(&c["secret"]).try_into().unwrap();
        let frame: [u8; 64] = d(&c["frame"]).try_into().unwrap();
        let (header, mut cipher) = mtg_proto::obfs2::respond(&frame, Some(&key));
        assert_eq!(header.tag, [0xdd; 4], "{}", path.display());
        assert_eq!(i64::from(header.dc), c["dc"].as_i64().unwrap());
        assert_eq!(header.target_dc(), 2);

        let mut from_client = d(&c["decrypted"]["cipher"]);
        cipher.decrypt(&mut from_client);
        assert_eq!(from_client, d(&c["decrypted"]["text"]), "{}", path.display());

        let mut to_client = d(&c["encrypted"]["text"]);
        cipher.encrypt(&mut to_client);
        assert_eq!(to_client, d(&c["encrypted"]["cipher"]), "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 2);
}

#[test]
fn a_learned_suite_is_copied_only_from_a_site_that_imposes_its_order() {
    use mtg_proto::doppel::{FlightStats, HelloKind};
    use mtg_proto::tls::server_flight::{ExtensionOrder, KeyShare, ObservedFlight, RecordSizes};

    let secret = Secret::parse(MTG_SECRET).unwrap();
    let users = UserTable::new([&secret]);
    // What learning saw: the site answered the probes (0x1301 first) with `suite`.
    let learned = |suite: u16| {
        let mut encrypted = RecordSizes::default();
        encrypted.push(600);
        let flight = ObservedFlight {
            cipher_suite: suite,
            extensions: ExtensionOrder::DEFAULT,
            key_share: Some(KeyShare { group: 0x001d, len: 32 }),
            server_hello_len: 122,
            change_cipher_spec: true,
            encrypted,
        };
        let mut stats = FlightStats::new();
        stats.add(HelloKind::X25519, flight);
        HandshakeConfig { flight: stats.profile(), ..HandshakeConfig::default() }
    };
    // The captures list 0x1303 first, then 0x1301 and 0x1302.
    for (site_choice, answered) in [(0x1301, 0x1303), (0x1302, 0x1302)] {
        for (name, c) in captures("client-hello-ok-") {
            let full = b64(&c["full"]);
            let now = Duration::from_secs(c["time"].as_u64().unwrap());
            let fed = feed(&users, &mut NoReplayCheck, learned(site_choice), now, &full, &[full.len()], 1);
            let flight = ObservedFlight::parse(&fed.flight).unwrap();
            assert_eq!(
                flight.cipher_suite, answered,
                "{name}: the site chose {site_choice:04x} for the probes"
            );
        }
    }
}
