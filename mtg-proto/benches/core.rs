//! Criterion benchmarks of the core: handshake search cost by user count, and relay cost per
//! byte for 16 KiB chunks, and the middle-proxy leg's CBC per byte.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mtg_proto::client::{ClientSession, FakeTlsHello};
use mtg_proto::{
    DcToClient, FrameStep, HandshakeConfig, HandshakeContext, HelloStep, NoReplayCheck, Secret,
    ServerHandshake, Session, UserId, UserTable,
};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const NOW: u32 = 1_700_000_000;
const HOST: &str = "bench.example";

fn users(n: usize, rng: &mut SmallRng) -> Vec<Secret> {
    (0..n)
        .map(|_| {
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            key[0] |= 1;
            Secret::fake_tls(key, HOST).unwrap()
        })
        .collect()
}

/// One hello through the hello stage; an authenticated client is accepted (its flight written
/// to `out`), as the proxy does. Returns the authenticated user.
fn run(
    table: &UserTable,
    hello: &[u8],
    hint: Option<UserId>,
    rng: &mut SmallRng,
    out: &mut Vec<u8>,
) -> Option<UserId> {
    out.clear();
    let hs = ServerHandshake::new(HandshakeConfig::default());
    let mut ctx = HandshakeContext {
        users: table,
        replay: &mut NoReplayCheck,
        now: Duration::from_secs(u64::from(NOW)),
        hint,
        full_search: true,
    };
    match hs.handle_input(hello, &mut ctx) {
        HelloStep::Authenticated(pending) => {
            let user = pending.user();
            black_box(pending.accept(rng, out));
            Some(user)
        }
        HelloStep::NeedMore(_) | HelloStep::Front { .. } => None,
    }
}

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    let mut rng = SmallRng::seed_from_u64(1);
    for n in [1usize, 100, 1000, 10_000] {
        let secrets = users(n, &mut rng);
        let table = UserTable::new(&secrets);
        let last = &secrets[n - 1];
        let mut valid = Vec::new();
        FakeTlsHello::build(last, NOW, &mut rng, &mut valid).unwrap();
        let stranger = users(1, &mut rng).remove(0);
        let mut probe = Vec::new();
        FakeTlsHello::build(&stranger, NOW, &mut rng, &mut probe).unwrap();
        let mut out = Vec::with_capacity(8192);
        let last_id = UserId((n - 1) as u32);

        group.bench_with_input(BenchmarkId::new("hint_hit", n), &n, |b, _| {
            b.iter(|| {
                let v = run(&table, black_box(&valid), Some(last_id), &mut rng, &mut out);
                assert_eq!(v, Some(last_id));
            });
        });
        // Worst case for a valid client: no hint, it is the last user of its hostname.
        group.bench_with_input(BenchmarkId::new("last_user_no_hint", n), &n, |b, _| {
            b.iter(|| run(&table, black_box(&valid), None, &mut rng, &mut out));
        });
        // Worst case for a probe: a well-formed hello with the right SNI and a wrong key tries
        // every user of the hostname. Time / n = cost per user tried.
        group.bench_with_input(BenchmarkId::new("probe_all_users", n), &n, |b, _| {
            b.iter(|| run(&table, black_box(&probe), None, &mut rng, &mut out));
        });
    }
    group.finish();
}

/// Bytes per relay case: one 16 KiB read.
const CHUNK: usize = 16 * 1024;

/// A FakeTLS relay session as the proxy builds it after a real handshake.
fn relay_session() -> Session {
    let mut rng = SmallRng::seed_from_u64(2);
    let secret = users(1, &mut rng).remove(0);
    let table = UserTable::new([&secret]);
    let mut wire = Vec::new();
    FakeTlsHello::build(&secret, NOW, &mut rng, &mut wire).unwrap();
    let _client = ClientSession::start(&secret, 2, &mut rng, &mut wire);
    let hs = ServerHandshake::new(HandshakeConfig::default());
    let mut out = Vec::new();
    let mut r2 = SmallRng::seed_from_u64(3);
    let mut ctx = HandshakeContext {
        users: &table,
        replay: &mut NoReplayCheck,
        now: Duration::from_secs(u64::from(NOW)),
        hint: None,
        full_search: true,
    };
    let HelloStep::Authenticated(pending) = hs.handle_input(&wire, &mut ctx) else {
        panic!("not authenticated")
    };
    let FrameStep::Ready(established) = pending.accept(&mut r2, &mut out).handle_input(&wire) else {
        panic!("not ready")
    };
    let dc = established.dc();
    established.into_session(dc.dc, &mut rng).0
}

fn relay(c: &mut Criterion) {
    let mut session = relay_session();
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    // Client→DC: one 16 KiB record per read (header + payload), deframed and re-keyed in place.
    let mut record = vec![0u8; CHUNK + 5];
    group.bench_function("client_to_dc_16k", |b| b.iter(|| client_to_dc(&mut session, &mut record)));
    // DC→client: 16 KiB read from the DC, re-keyed and framed as 2 records' worth in 2 calls
    // (one record holds at most 16379 bytes).
    let mut buf = vec![0u8; DcToClient::BUFFER_LEN];
    group.bench_function("dc_to_client_16k", |b| b.iter(|| dc_to_client(&mut session, &mut buf)));
    group.finish();
}

/// One client→DC case: a 16 KiB record (header + payload) deframed and re-keyed in place.
fn client_to_dc(session: &mut Session, record: &mut [u8]) {
    record[..5].copy_from_slice(&[0x17, 3, 3, (CHUNK >> 8) as u8, CHUNK as u8]);
    black_box(session.client_to_dc.process(black_box(record)).unwrap());
}

/// One DC→client case: 16 KiB re-keyed and framed in two calls (a record holds 16379 bytes).
fn dc_to_client(session: &mut Session, buf: &mut [u8]) {
    let first = session.dc_to_client.process(black_box(buf), DcToClient::MAX_CHUNK).unwrap();
    let second = session.dc_to_client.process(black_box(buf), CHUNK - DcToClient::MAX_CHUNK).unwrap();
    black_box((first, second));
}

/// Runs each relay case `iterations` times and nothing else: instruction counts under
/// `valgrind --tool=callgrind` (repeatable on a loaded machine), taken as the difference of two
/// iteration counts so that the setup cancels out.
fn relay_fixed(iterations: u64) {
    let mut session = relay_session();
    let mut record = vec![0u8; CHUNK + 5];
    let mut buf = vec![0u8; DcToClient::BUFFER_LEN];
    for _ in 0..iterations {
        client_to_dc(&mut session, &mut record);
        dc_to_client(&mut session, &mut buf);
    }
}

/// The middle-proxy leg's AES-256-CBC: 32 KiB each way (one RPC frame's worth).
fn middle_cbc(c: &mut Criterion) {
    use mtg_proto::middle::cbc::{CbcDecryptor, CbcEncryptor};
    const LEN: usize = 32 * 1024;
    let mut group = c.benchmark_group("middle_cbc");
    group.throughput(Throughput::Bytes(LEN as u64));
    let mut data = vec![0x5au8; LEN];
    let mut enc = CbcEncryptor::from_raw(&[7; 32], &[9; 16]);
    group.bench_function("encrypt_32k", |b| b.iter(|| enc.encrypt_in_place(black_box(&mut data)).unwrap()));
    let mut dec = CbcDecryptor::from_raw(&[7; 32], &[9; 16]);
    group.bench_function("decrypt_32k", |b| b.iter(|| dec.decrypt_in_place(black_box(&mut data)).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = handshake, relay, middle_cbc
}

fn main() {
    // `MTG_RELAY_ITERATIONS=N`: the relay cases N times without criterion (see `relay_fixed`).
    if let Some(n) = std::env::var("MTG_RELAY_ITERATIONS").ok().and_then(|n| n.parse().ok()) {
        relay_fixed(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
