//! Property tests of the middle-proxy core: every encoder/decoder pair round-trips in any
//! chunking, and every parser is total on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mtg_proto::middle::cbc::{CbcDecryptor, CbcEncryptor};
use mtg_proto::middle::frame::{self, MAX_FRAME_LEN, PADDING_WORD};
use mtg_proto::middle::rpc::{self, ProxyReq};
use mtg_proto::middle::transport::{self, Transport, TransportDeframer};
use mtg_proto::middle::{ProxyMap, RpcDeframer, RpcReader, RpcWriter, proxy_config};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// Splits `data` into pieces whose sizes cycle through `sizes` (0 counts as 1).
fn pieces<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(usize::MAX).max(1);
        i += 1;
        let end = at.saturating_add(size).min(data.len());
        let piece = &data[at..end];
        at = end;
        Some(piece)
    })
}

fn words(max_words: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max_words).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4))
}

fn chunking() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..4, 1usize..40, 1usize..5000], 1..8)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            let ip = Ipv6Addr::from(ip);
            // A mapped address decodes as IPv4: generate only the IPv6 ones that stay IPv6.
            let ip = if ip.to_ipv4_mapped().is_some() { Ipv6Addr::LOCALHOST } else { ip };
            SocketAddr::new(IpAddr::V6(ip), port)
        }),
    ]
}

fn transport_kind() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Abridged), Just(Transport::Intermediate), Just(Transport::PaddedIntermediate)]
}

proptest! {
    #[test]
    fn frames_round_trip_in_any_chunking(
        payloads in proptest::collection::vec(words(300).prop_filter("non-empty", |p| !p.is_empty()), 0..12),
        first_seq in any::<i32>(),
        padding in proptest::collection::vec(0usize..4, 12),
        sizes in chunking(),
    ) {
        let mut wire = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            for _ in 0..padding[i] {
                wire.extend_from_slice(&PADDING_WORD);
            }
            frame::encode_frame(first_seq.wrapping_add(i as i32), p, &mut wire).unwrap();
        }
        frame::pad_to_block(&mut wire, 0);
        prop_assert_eq!(wire.len() % 16, 0);
        let mut d = RpcDeframer::new(first_seq);
        let mut got = Vec::new();
        for piece in pieces(&wire, &sizes) {
            let mut input = piece;
            while let Some(p) = d.next(&mut input).unwrap() {
                got.push(p.to_vec());
            }
            prop_assert!(input.is_empty());
        }
        prop_assert_eq!(got, payloads.clone());
        prop_assert!(d.at_boundary());
        prop_assert_eq!(d.next_seq(), first_seq.wrapping_add(payloads.len() as i32));
    }

    #[test]
    fn deframer_is_total(data in proptest::collection::vec(any::<u8>(), 0..600), sizes in chunking()) {
        let mut d = RpcDeframer::with_max_len(0, 256);
        for piece in pieces(&data, &sizes) {
            let mut input = piece;
            loop {
                match d.next(&mut input) {
                    Ok(Some(p)) => prop_assert!(p.len() <= 256),
                    Ok(None) => { prop_assert!(input.is_empty()); break }
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn cbc_round_trips_across_calls(
        key in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
        blocks in proptest::collection::vec(any::<[u8; 16]>(), 0..200),
        sizes in chunking(),
    ) {
        let plain: Vec<u8> = blocks.concat();
        let mut whole = plain.clone();
        CbcEncryptor::from_raw(&key, &iv).encrypt_in_place(&mut whole).unwrap();
        // Encrypting block-aligned pieces gives the same ciphertext.
        let mut enc = CbcEncryptor::from_raw(&key, &iv);
        let mut pieced = plain.clone();
        let block_sizes: Vec<usize> = sizes.iter().map(|s| s.div_ceil(16) * 16).collect();
        let mut at = 0;
        for size in block_sizes.iter().cycle() {
            if at >= pieced.len() { break }
            let end = (at + size).min(pieced.len());
            enc.encrypt_in_place(&mut pieced[at..end]).unwrap();
            at = end;
        }
        prop_assert_eq!(&pieced, &whole);
        // Decrypting with a held-back ragged tail gives the plaintext back.
        let mut dec = CbcDecryptor::from_raw(&key, &iv);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in pieces(&whole, &sizes) {
            buf.extend_from_slice(piece);
            let n = dec.decrypt_prefix(&mut buf);
            out.extend_from_slice(&buf[..n]);
            buf.drain(..n);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, plain);
    }

    #[test]
    fn encrypted_frames_round_trip_in_any_chunking(
        payloads in proptest::collection::vec(words(200), 1..10),
        batch_sizes in proptest::collection::vec(1usize..4, 10),
        sizes in chunking(),
        key in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
    ) {
        let payloads: Vec<Vec<u8>> = payloads.into_iter().map(|mut p| { if p.is_empty() { p = vec![0; 4] } p }).collect();
        let mut w = RpcWriter::new(CbcEncryptor::from_raw(&key, &iv), 0);
        let mut wire = Vec::new();
        let mut batches = batch_sizes.iter().cycle();
        let mut rest = &payloads[..];
        while !rest.is_empty() {
            let n = (*batches.next().unwrap()).min(rest.len());
            let mut b = w.batch(&mut wire);
            for p in &rest[..n] {
                b.payload(p).unwrap();
            }
            let range = b.finish();
            prop_assert_eq!(range.len() % 16, 0);
            rest = &rest[n..];
        }
        let mut r = RpcReader::new(CbcDecryptor::from_raw(&key, &iv), 0, MAX_FRAME_LEN);
        let mut got = Vec::new();
        for piece in pieces(&wire, &sizes) {
            let mut input = piece;
            while let Some(p) = r.next(&mut input).unwrap() {
                got.push(p.to_vec());
            }
            prop_assert!(input.is_empty());
        }
        prop_assert_eq!(got, payloads);
        prop_assert!(r.at_boundary());
    }

    #[test]
    fn client_transports_round_trip_in_any_chunking(
        kind in transport_kind(),
        packets in proptest::collection::vec(words(400).prop_filter("non-empty", |p| !p.is_empty()), 0..10),
        quick_acks in proptest::collection::vec(any::<bool>(), 10),
        sizes in chunking(),
        seed in any::<u64>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut wire = Vec::new();
        for (p, &qa) in packets.iter().zip(&quick_acks) {
            let at = wire.len();
            transport::encode_packet(kind, p, &mut rng, &mut wire).unwrap();
            if qa {
                // The client's quick-ack bit: top bit of the first byte (abridged) or of the u32.
                let i = if kind == Transport::Abridged { at } else { at + 3 };
                wire[i] |= 0x80;
            }
        }
        let mut d = TransportDeframer::new(kind);
        let mut got = Vec::new();
        for piece in pieces(&wire, &sizes) {
            let mut input = piece;
            while let Some(p) = d.next(&mut input).unwrap() {
                got.push((p.data.to_vec(), p.quick_ack));
            }
            prop_assert!(input.is_empty());
        }
        let want: Vec<(Vec<u8>, bool)> = packets.into_iter().zip(quick_acks.iter().copied()).collect();
        prop_assert_eq!(got, want);
        prop_assert!(d.at_boundary());
    }

    #[test]
    fn transport_deframers_are_total(data in proptest::collection::vec(any::<u8>(), 0..600), sizes in chunking()) {
        for kind in Transport::ALL {
            let mut d = TransportDeframer::new(kind);
            'outer: for piece in pieces(&data, &sizes) {
                let mut input = piece;
                loop {
                    match d.next(&mut input) {
                        Ok(Some(p)) => prop_assert!(p.data.len() <= rpc::MAX_POST_SIZE),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
        }
    }

    #[test]
    fn proxy_req_round_trips(
        conn_id in any::<u64>(), kind in transport_kind(), quick_ack in any::<bool>(),
        client in socket_addr(), ours in socket_addr(), ad_tag in any::<Option<[u8; 16]>>(),
        packet in words(100),
    ) {
        let req = ProxyReq { conn_id, transport: kind, quick_ack, client, ours, ad_tag };
        let mut out = Vec::new();
        rpc::encode_proxy_req(&req, &packet, &mut out).unwrap();
        let rpc::ToMiddle::ProxyReq(view) = rpc::decode_to_middle(&out).unwrap() else {
            return Err(TestCaseError::fail("not a request"));
        };
        prop_assert_eq!(view.flags, req.flags(&packet));
        prop_assert_eq!(view.flags & rpc::FLAG_PAD, 0);
        prop_assert_eq!(view.flags & rpc::FLAG_QUICKACK != 0, quick_ack);
        prop_assert_eq!(view.conn_id, conn_id);
        prop_assert_eq!(view.client, client);
        prop_assert_eq!(view.ours, ours);
        prop_assert_eq!(view.ad_tag, ad_tag);
        prop_assert_eq!(view.extra_size, ad_tag.map(|_| 24));
        prop_assert_eq!(view.packet, &packet[..]);
    }

    #[test]
    fn message_decoders_are_total(data in proptest::collection::vec(any::<u8>(), 0..200), kind in 0usize..8) {
        let mut payload = data;
        let types = [rpc::RPC_PROXY_ANS, rpc::RPC_SIMPLE_ACK, rpc::RPC_CLOSE_EXT, rpc::RPC_CLOSE_CONN,
                     rpc::RPC_PING, rpc::RPC_PONG, rpc::RPC_PROXY_REQ, 0];
        if payload.len() >= 4 && types[kind] != 0 {
            payload[..4].copy_from_slice(&types[kind].to_le_bytes());
        }
        let _ = rpc::decode_from_middle(&payload);
        let _ = rpc::decode_to_middle(&payload);
        let _ = rpc::forwardable(&payload);
    }

    #[test]
    fn proxy_config_round_trips(
        entries in proptest::collection::btree_map(
            any::<i16>(), proptest::collection::vec(socket_addr().prop_filter("port", |a| a.port() != 0), 1..4), 0..8),
        default in any::<Option<i16>>(),
    ) {
        let map = ProxyMap { by_dc: entries, default };
        let parsed = proxy_config::parse(&map.render());
        prop_assert_eq!(parsed.warnings, vec![]);
        prop_assert_eq!(parsed.map, map);
    }

    #[test]
    fn proxy_config_parser_is_total(text in "[ -~\t\n#;:\\[\\]]{0,300}") {
        let parsed = proxy_config::parse(&text);
        for addrs in parsed.map.by_dc.values() {
            prop_assert!(addrs.iter().all(|a| a.port() != 0));
        }
    }
}
