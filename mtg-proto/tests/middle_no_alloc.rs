//! The middle-proxy per-packet paths allocate nothing once their buffers have grown: client
//! transport deframing, request encoding and encryption, decryption and deframing, answer
//! decoding and client framing, counted by a global allocator wrapper. (One test per binary:
//! the counter is process-wide.)

mod alloc_counter;

use mtg_proto::middle::cbc::{CbcDecryptor, CbcEncryptor};
use mtg_proto::middle::frame::MAX_FRAME_LEN;
use mtg_proto::middle::rpc::{self, FromMiddle, ProxyReq, ToMiddle};
use mtg_proto::middle::transport::{self, Transport, TransportDeframer};
use mtg_proto::middle::{RpcReader, RpcWriter};
use rand::SeedableRng;
use rand::rngs::SmallRng;

#[global_allocator]
static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;

/// State of one direction pair and the reusable buffers.
struct Rig {
    client_in: TransportDeframer,
    up_writer: RpcWriter,
    up_reader: RpcReader,
    down_writer: RpcWriter,
    down_reader: RpcReader,
    rng: SmallRng,
    wire: Vec<u8>,
    down_wire: Vec<u8>,
    client_out: Vec<u8>,
}

/// One round: a client packet up through a request, and an answer down to the client.
/// Returns the bytes the client received.
fn round(rig: &mut Rig, client_wire: &[u8], req: &ProxyReq) -> usize {
    let mut input = client_wire;
    let mut sent = 0;
    while let Some(packet) = rig.client_in.next(&mut input).unwrap() {
        rig.wire.clear();
        let mut batch = rig.up_writer.batch(&mut rig.wire);
        batch.proxy_req(req, packet.data).unwrap();
        batch.finish();
        let mut up = &rig.wire[..];
        // The fake middle proxy's side: read the request, answer with its packet.
        let payload = rig.up_reader.next(&mut up).unwrap().unwrap();
        let ToMiddle::ProxyReq(view) = rpc::decode_to_middle(payload).unwrap() else {
            panic!("not a request")
        };
        rig.down_wire.clear();
        let mut batch = rig.down_writer.batch(&mut rig.down_wire);
        batch.proxy_ans(0, view.conn_id, view.packet).unwrap();
        batch.finish();
        let mut down = &rig.down_wire[..];
        rig.client_out.clear();
        while let Some(payload) = rig.down_reader.next(&mut down).unwrap() {
            if let FromMiddle::ProxyAns { data, .. } = rpc::decode_from_middle(payload).unwrap() {
                transport::encode_packet(
                    Transport::PaddedIntermediate,
                    data,
                    &mut rig.rng,
                    &mut rig.client_out,
                )
                .unwrap();
            }
        }
        sent += rig.client_out.len();
    }
    sent
}

#[test]
fn per_packet_paths_allocate_nothing() {
    let (key, iv) = ([1u8; 32], [2u8; 16]);
    let mut rig = Rig {
        client_in: TransportDeframer::new(Transport::PaddedIntermediate),
        up_writer: RpcWriter::new(CbcEncryptor::from_raw(&key, &iv), 0),
        up_reader: RpcReader::new(CbcDecryptor::from_raw(&key, &iv), 0, MAX_FRAME_LEN),
        down_writer: RpcWriter::new(CbcEncryptor::from_raw(&iv.repeat(2).try_into().unwrap(), &iv), 0),
        down_reader: RpcReader::new(
            CbcDecryptor::from_raw(&iv.repeat(2).try_into().unwrap(), &iv),
            0,
            MAX_FRAME_LEN,
        ),
        rng: SmallRng::seed_from_u64(9),
        wire: Vec::with_capacity(64 * 1024),
        down_wire: Vec::with_capacity(64 * 1024),
        client_out: Vec::with_capacity(64 * 1024),
    };
    let req = ProxyReq {
        conn_id: 7,
        transport: Transport::PaddedIntermediate,
        quick_ack: false,
        client: "198.51.100.7:40000".parse().unwrap(),
        ours: "203.0.113.5:443".parse().unwrap(),
        ad_tag: Some([0x5a; 16]),
    };
    // The client's stream: 200 packets of various sizes up to 16 KiB, in padded intermediate.
    let mut rng = SmallRng::seed_from_u64(1);
    let mut client_wire = Vec::new();
    for i in 0..200usize {
        let len = 4 * (1 + (i * 97) % 4096);
        transport::encode_packet(
            Transport::PaddedIntermediate,
            &vec![i as u8; len],
            &mut rng,
            &mut client_wire,
        )
        .unwrap();
    }
    // Warm-up: every buffer grows to its largest size.
    let warm = round(&mut rig, &client_wire, &req);

    let before = alloc_counter::allocations();
    let mut total = 0;
    for piece in client_wire.chunks(1500) {
        total += round(&mut rig, piece, &req);
    }
    let after = alloc_counter::allocations();
    assert!(total > 0 && warm > 0);
    assert_eq!(after - before, 0, "the per-packet paths allocated {} times", after - before);
}
