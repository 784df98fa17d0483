//! The fronting site's first flight: reading it (`ObservedFlight`), the shape learned from
//! several (`FlightStats`), and the proxy's fake flight shaped after it.

mod common;

use std::time::Duration;

use mtg_proto::client::FakeTlsHello;
use mtg_proto::doppel::flight_shape::{GROUP_X25519, GROUP_X25519_MLKEM768, MAX_ENCRYPTED_RECORD};
use mtg_proto::doppel::{FlightProfile, FlightStats, HelloKind};
use mtg_proto::tls::server_flight::{EXT_KEY_SHARE, EXT_SUPPORTED_VERSIONS, ObserveError, ObservedFlight};
use mtg_proto::{HandshakeConfig, NoReplayCheck, UserTable};
use proptest::prelude::*;
use rand::RngCore;

use common::*;

/// What a test site's flight is made of.
#[derive(Debug, Clone)]
struct SiteFlight {
    cipher: u16,
    key_share_first: bool,
    group: u16,
    key_len: u16,
    ccs: bool,
    records: Vec<u16>,
}

/// Encodes a TLS 1.3 server flight as a real site sends it (random bytes where it encrypts).
fn encode(site: &SiteFlight, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let mut key = vec![0u8; usize::from(site.key_len)];
    r.fill_bytes(&mut key);
    let mut key_share = Vec::new();
    key_share.extend_from_slice(&EXT_KEY_SHARE.to_be_bytes());
    key_share.extend_from_slice(&(4 + site.key_len).to_be_bytes());
    key_share.extend_from_slice(&site.group.to_be_bytes());
    key_share.extend_from_slice(&site.key_len.to_be_bytes());
    key_share.extend_from_slice(&key);
    let versions = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    let mut ext = Vec::new();
    if site.key_share_first {
        ext.extend_from_slice(&key_share);
        ext.extend_from_slice(&versions);
    } else {
        ext.extend_from_slice(&versions);
        ext.extend_from_slice(&key_share);
    }
    let mut body = vec![0x03, 0x03];
    let mut random = [0u8; 32];
    r.fill_bytes(&mut random);
    body.extend_from_slice(&random);
    body.push(32);
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&site.cipher.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut out = vec![0x16, 0x03, 0x03];
    out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    out.push(0x02);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    if site.ccs {
        out.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    }
    for &len in &site.records {
        out.extend_from_slice(&[0x17, 0x03, 0x03]);
        out.extend_from_slice(&len.to_be_bytes());
        let at = out.len();
        out.resize(at + usize::from(len), 0);
        r.fill_bytes(&mut out[at..]);
    }
    out
}

fn site_flight() -> impl Strategy<Value = SiteFlight> {
    (
        prop::sample::select(vec![0x1301u16, 0x1302, 0x1303]),
        any::<bool>(),
        prop::sample::select(vec![(GROUP_X25519, 32u16), (GROUP_X25519_MLKEM768, 1120), (0x0017, 65)]),
        any::<bool>(),
        prop::collection::vec(17u16..6000, 1..7),
    )
        .prop_map(|(cipher, key_share_first, (group, key_len), ccs, records)| SiteFlight {
            cipher,
            key_share_first,
            group,
            key_len,
            ccs,
            records,
        })
}

/// A fixed "now" (mtg-proto takes the time as an argument; the tests pick one).
fn now() -> Duration {
    Duration::from_secs(1_790_000_000)
}

/// The proxy's flight for a hello of `kind` from `secret`, with `profile` learned; checks that
/// the client's encoder verifies it.
fn proxy_flight(profile: FlightProfile, kind: HelloKind, seed: u64) -> Vec<u8> {
    let secret = secret(3, "site.example");
    let table = UserTable::new([&secret]);
    let mut r = rng(seed);
    let mut hello_bytes = Vec::new();
    let unix = now().as_secs() as u32;
    let hello =
        FakeTlsHello::build_kind(&secret, "site.example", unix, 517, kind, &mut r, &mut hello_bytes).unwrap();
    let config = HandshakeConfig { flight: profile, ..HandshakeConfig::default() };
    let fed = feed(&table, &mut NoReplayCheck, config, now(), &hello_bytes, &[hello_bytes.len()], seed);
    assert!(matches!(fed.events.first(), Some(Event::Authenticated { .. })), "{:?}", fed.events);
    assert_eq!(
        hello.verify_flight(&fed.flight),
        Ok(Some(fed.flight.len())),
        "the client verifies the flight"
    );
    fed.flight
}

#[test]
fn an_openssl_flight_is_read_record_by_record() {
    let bytes = include_bytes!("data/openssl-server-flight.bin");
    let flight = ObservedFlight::parse(bytes).unwrap();
    assert_eq!(flight.server_hello_len, 122);
    assert!(flight.change_cipher_spec);
    assert_eq!(flight.encrypted.as_slice(), [23, 441, 97, 53]);
    assert_eq!(flight.extensions.as_slice(), [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE]);
    assert_eq!(flight.key_share.map(|k| (k.group, k.len)), Some((GROUP_X25519, 32)));
    assert_eq!(flight.wire_len() as usize, bytes.len());
    assert_eq!(flight.record_types().collect::<Vec<_>>(), [0x16, 0x14, 0x17, 0x17, 0x17, 0x17]);
    // A record cut short at the end is not counted; anything after another record type neither.
    assert_eq!(ObservedFlight::parse(&bytes[..bytes.len() - 1]).unwrap().encrypted.as_slice(), [23, 441, 97]);
    let mut alert_after = bytes.to_vec();
    alert_after
        .extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28, 0x17, 0x03, 0x03, 0x00, 0x01, 0]);
    assert_eq!(ObservedFlight::parse(&alert_after).unwrap().encrypted.as_slice(), [23, 441, 97, 53]);
}

#[test]
fn flights_that_cannot_be_imitated_are_named() {
    let site = SiteFlight {
        cipher: 0x1301,
        key_share_first: false,
        group: GROUP_X25519,
        key_len: 32,
        ccs: true,
        records: vec![100],
    };
    let good = encode(&site, 1);
    assert!(ObservedFlight::parse(&good).is_ok());
    assert_eq!(ObservedFlight::parse(&good[..4]), Err(ObserveError::Incomplete));
    assert_eq!(ObservedFlight::parse(&[0x15, 3, 3, 0, 2, 2, 40]), Err(ObserveError::Alert));
    assert_eq!(ObservedFlight::parse(&[0x17, 3, 3, 0, 1, 0]), Err(ObserveError::NotHandshake));
    let mut not_hello = good.clone();
    not_hello[5] = 0x0b;
    assert_eq!(ObservedFlight::parse(&not_hello), Err(ObserveError::NotServerHello));
    let mut retry = good.clone();
    retry[11..43].copy_from_slice(&[
        0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2,
        0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
    ]);
    assert_eq!(ObservedFlight::parse(&retry), Err(ObserveError::HelloRetryRequest));
    let mut tls12 = good.clone();
    let at = tls12.windows(6).position(|w| w == [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]).unwrap();
    tls12[at + 5] = 0x03;
    assert_eq!(ObservedFlight::parse(&tls12), Err(ObserveError::NotTls13));
    let hello_only = &good[..good.len() - 6 - 105];
    assert_eq!(ObservedFlight::parse(hello_only), Err(ObserveError::NoEncryptedRecords));
    let mut short = good.clone();
    short[8] = 0xff; // the handshake body length points past the record
    assert_eq!(ObservedFlight::parse(&short), Err(ObserveError::Malformed));
}

#[test]
fn without_learning_the_flight_keeps_its_fixed_layout() {
    let flight =
        ObservedFlight::parse(&proxy_flight(FlightProfile::EMPTY, HelloKind::X25519MlKem768, 5)).unwrap();
    assert_eq!(flight.extensions.as_slice(), [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE]);
    assert_eq!(flight.key_share.map(|k| (k.group, k.len)), Some((GROUP_X25519, 32)));
    assert_eq!(flight.cipher_suite, 0x1301);
    let [len] = flight.encrypted.as_slice() else { panic!("one record: {flight:?}") };
    assert!((2500..=4699).contains(len));
}

proptest! {
    /// Encoding a site's flight and reading it back gives what was encoded.
    #[test]
    fn a_site_flight_reads_back_as_encoded(site in site_flight(), seed in any::<u64>()) {
        let bytes = encode(&site, seed);
        let flight = ObservedFlight::parse(&bytes).unwrap();
        prop_assert_eq!(flight.cipher_suite, site.cipher);
        let order = if site.key_share_first {
            [EXT_KEY_SHARE, EXT_SUPPORTED_VERSIONS]
        } else {
            [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE]
        };
        prop_assert_eq!(flight.extensions.as_slice(), order);
        prop_assert_eq!(flight.key_share.map(|k| (k.group, k.len)), Some((site.group, site.key_len)));
        prop_assert_eq!(flight.change_cipher_spec, site.ccs);
        let sizes: Vec<u32> = site.records.iter().map(|&n| u32::from(n)).collect();
        prop_assert_eq!(flight.encrypted.as_slice(), &sizes[..]);
        prop_assert_eq!(flight.wire_len() as usize, bytes.len());
    }

    /// The shape is the signature seen most often (the latest on a tie), and its ranges cover
    /// exactly the record lengths of the flights that have it.
    #[test]
    fn the_shape_is_the_most_common_signature(
        picks in prop::collection::vec((any::<bool>(), 17u16..3000), 1..20),
        seed in any::<u64>(),
    ) {
        let a = SiteFlight { cipher: 0x1301, key_share_first: false, group: GROUP_X25519, key_len: 32, ccs: true, records: vec![] };
        let b = SiteFlight { cipher: 0x1302, key_share_first: true, group: GROUP_X25519, key_len: 32, ccs: true, records: vec![] };
        let mut stats = FlightStats::new();
        let mut seen_a = Vec::new();
        let mut seen_b = Vec::new();
        for (i, &(is_a, len)) in picks.iter().enumerate() {
            let mut site = if is_a { a.clone() } else { b.clone() };
            site.records = if is_a { vec![23, len] } else { vec![len] };
            let flight = ObservedFlight::parse(&encode(&site, seed ^ i as u64)).unwrap();
            stats.add(HelloKind::X25519, flight);
            if is_a { seen_a.push(len) } else { seen_b.push(len) }
        }
        let shape = stats.shape(HelloKind::X25519).unwrap();
        let last_is_a = picks.last().unwrap().0;
        let a_wins = seen_a.len() > seen_b.len() || (seen_a.len() == seen_b.len() && last_is_a);
        let (winner, lens) = if a_wins { (&a, &seen_a) } else { (&b, &seen_b) };
        prop_assert_eq!(shape.cipher_suite, winner.cipher);
        prop_assert_eq!(shape.observations as usize, lens.len());
        let (min, max) = (u32::from(*lens.iter().min().unwrap()), u32::from(*lens.iter().max().unwrap()));
        let expected: Vec<(u32, u32)> = if a_wins { vec![(23, 23), (min, max)] } else { vec![(min, max)] };
        prop_assert_eq!(shape.record_ranges(), &expected[..]);
        prop_assert!(stats.shape(HelloKind::X25519MlKem768).is_none());
    }

    /// The proxy's flight, read as an observer reads the site's: the learned cipher suite
    /// (when the client offered it), extension order and key share (X25519MLKEM768 only for a
    /// client that offered it), ONE encrypted record as long as the site's records together,
    /// and it still verifies for the client.
    #[test]
    fn the_fake_flight_follows_the_learned_shape(
        sites in prop::collection::vec(site_flight(), 1..4),
        mlkem_client in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut stats = FlightStats::new();
        let learned_kind = if sites[0].group == GROUP_X25519_MLKEM768 { HelloKind::X25519MlKem768 } else { HelloKind::X25519 };
        for (i, site) in sites.iter().enumerate() {
            // The same signature with other record lengths: the first site's layout.
            let mut same = sites[0].clone();
            same.records = sites[0].records.iter().zip(site.records.iter().cycle()).map(|(&a, &b)| a.min(b)).collect();
            stats.add(learned_kind, ObservedFlight::parse(&encode(&same, seed ^ i as u64)).unwrap());
        }
        let shape = stats.shape(learned_kind).unwrap();
        let kind = if mlkem_client { HelloKind::X25519MlKem768 } else { HelloKind::X25519 };
        let flight = ObservedFlight::parse(&proxy_flight(stats.profile(), kind, seed)).unwrap();

        prop_assert_eq!(flight.cipher_suite, sites[0].cipher, "the encoder offers 1301, 1302 and 1303");
        prop_assert_eq!(flight.extensions, shape.extensions);
        let expect_share = if mlkem_client && sites[0].group == GROUP_X25519_MLKEM768 {
            (GROUP_X25519_MLKEM768, 1120)
        } else {
            (GROUP_X25519, 32)
        };
        prop_assert_eq!(flight.key_share.map(|k| (k.group, k.len)), Some(expect_share));
        prop_assert!(flight.change_cipher_spec);
        let [payload] = flight.encrypted.as_slice() else {
            return Err(TestCaseError::fail(format!("one encrypted record: {flight:?}")));
        };
        let (lo, hi) = shape.encrypted_wire_len();
        if hi - 5 <= MAX_ENCRYPTED_RECORD {
            prop_assert!((lo..=hi).contains(&(payload + 5)), "{} not in {lo}..={hi}", payload + 5);
        } else {
            prop_assert!(*payload <= MAX_ENCRYPTED_RECORD);
        }
    }
}
