//! The engine's relay allocates nothing per chunk once warm, both ways, with and without
//! doppelganger shaping, on the runtime this binary was built with (`cargo test -p mtg-app
//! --test relay_alloc` for tokio, `--no-default-features --features smol` for smol).
//!
//! The relay is the proxy's own, wired as a session wires it (`mtg_app::engine::relay_probe`),
//! with the real Telegram transforms (keys from a real FakeTLS handshake: TLS records and
//! obfuscated2 both ways) or the fronting one, between two in-memory ends that allocate
//! nothing themselves: an end produces its side's bytes into preallocated buffers (a fixed
//! pattern, framed and encrypted as a client or a DC would) and checks every byte the relay
//! writes to it after decrypting it as the peer would. The ends now and then answer
//! `Pending` or take part of a write, so the pumps give their buffers back to the pool, take
//! them again and keep bytes pending, as on real sockets.
//!
//! The relay is polled by hand with a no-op waker, on the test's thread, inside the runtime
//! (its timers). A global allocator counts the allocations of the current thread while a
//! measurement is on: the runtime's own threads and the other tests' do not count.
//!
//! The allocator needs `unsafe`, which the `mtg-app` library forbids: that is why this is an
//! integration test of its own rather than a unit test of the relay.

#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use mtg_app::engine::relay_probe::Probe;
use mtg_app::runtime::{Runtime, Selected};
use mtg_proto::client::{ClientSession, FakeTlsHello};
use mtg_proto::doppel::Weibull;
use mtg_proto::obfs2::{self, LegCipher};
use mtg_proto::tls::record::Deframer;
use mtg_proto::{
    ClientToDc, DcToClient, Established, FastDcToClient, FrameStep, HandshakeConfig, HandshakeContext,
    HelloStep, NoReplayCheck, Secret, ServerHandshake, UserTable,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// The system allocator, counting the current thread's allocations while [`allocations_in`]
/// runs.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations since counting was switched on.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one allocation if this thread is counting. `const` thread-locals without a
/// destructor are neither initialised lazily nor torn down: this never allocates (it runs
/// inside the allocator) and never fails.
fn note_allocation() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged; counting only touches
// thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller keeps `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations (`alloc`, `alloc_zeroed`, `realloc`) `f` made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_this_threads_allocations_only() {
    let n = allocations_in(|| {
        let mut v = std::hint::black_box(Vec::<u8>::with_capacity(1));
        v.extend_from_slice(&[1, 2, 3]);
        std::hint::black_box(v);
    });
    assert_eq!(n, 2, "one allocation and one reallocation");
    let other = std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 10])));
    let n = allocations_in(|| other.join().unwrap());
    assert_eq!(n, 0, "the other thread's allocation is not counted");
}

// ---------------------------------------------------------------------------------------------
// The in-memory ends.

/// Payload sizes each end produces, in turn: mostly 16 KiB, some odd.
const SIZES: &[usize] = &[16384, 16384, 16384, 1, 16384, 777, 16384, 16379, 16380, 5, 16384, 3000, 40000];
/// The largest of [`SIZES`].
const MAX_SIZE: usize = 40000;
/// Period of the payload patterns: a prime, so that no chunk size lines up with it.
const PERIOD: usize = 65_521;

/// The bytes an end sends: a fixed pseudo-random sequence of period [`PERIOD`], so the receiver
/// checks each byte against its offset in the stream (a lost, doubled or misplaced byte fails).
struct Pattern(Box<[u8]>);

impl Pattern {
    fn new(seed: u64) -> Self {
        let mut x = seed | 1;
        let bytes = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self(bytes)
    }

    /// The pattern's bytes from stream offset `at` into `out`.
    fn fill(&self, at: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let from = ((at + done as u64) % PERIOD as u64) as usize;
            let n = (PERIOD - from).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.0[from..from + n]);
            done += n;
        }
    }

    /// Whether `got` is the pattern's bytes from stream offset `at`.
    fn matches(&self, at: u64, got: &[u8]) -> bool {
        let mut done = 0;
        while done < got.len() {
            let from = ((at + done as u64) % PERIOD as u64) as usize;
            let n = (PERIOD - from).min(got.len() - done);
            if got[done..done + n] != self.0[from..from + n] {
                return false;
            }
            done += n;
        }
        true
    }
}

/// How an end frames and encrypts what it sends and opens what it receives.
enum Codec {
    /// A FakeTLS client: TLS records around its obfuscated2 leg.
    Client(ClientSession),
    /// The DC: its obfuscated2 leg to the proxy.
    Dc(LegCipher),
    /// A fronting site or its client: bytes as they are.
    Plain,
}

/// One end of the relay (its state; the relay holds an [`End`]).
struct Peer {
    codec: Codec,
    /// What this end sends.
    sends: Pattern,
    /// What the other end sends, to check what arrives here.
    expects: Pattern,
    /// Chunks still to send; with none, reads are `Pending` (an idle peer).
    chunks_left: u64,
    /// Payload bytes produced so far.
    produced: u64,
    /// Chunks produced so far (indexes [`SIZES`]).
    chunks: usize,
    /// The current chunk's payload (client: before sealing).
    payload: Vec<u8>,
    /// The current chunk as it goes to the relay (framed, encrypted).
    wire: Vec<u8>,
    /// What of `wire` the relay has not read yet.
    unread: Range<usize>,
    reads: u64,
    /// Payload bytes received and checked so far.
    checked: u64,
    /// Where a write is copied to be opened in place.
    scratch: Box<[u8]>,
    writes: u64,
    /// The first record header the relay wrote here (FakeTLS client).
    first_header: [u8; 5],
    header_bytes: usize,
    /// Walks the record headers the relay wrote here (FakeTLS client), apart from `codec`.
    records: Deframer,
    /// Payload bytes of the record being walked, and the largest record so far.
    record_len: usize,
    largest_record: usize,
    /// Records walked to their end.
    whole_records: u64,
}

impl Peer {
    fn new(codec: Codec, sends: u64, expects: u64) -> Self {
        Self {
            codec,
            sends: Pattern::new(sends),
            expects: Pattern::new(expects),
            chunks_left: 0,
            produced: 0,
            chunks: 0,
            payload: Vec::with_capacity(MAX_SIZE),
            wire: Vec::with_capacity(2 * MAX_SIZE),
            unread: 0..0,
            reads: 0,
            checked: 0,
            scratch: vec![0; 4 * MAX_SIZE].into_boxed_slice(),
            writes: 0,
            first_header: [0; 5],
            header_bytes: 0,
            records: Deframer::new(),
            record_len: 0,
            largest_record: 0,
            whole_records: 0,
        }
    }

    /// Frames and encrypts the next chunk into `wire`.
    fn next_chunk(&mut self) {
        let len = SIZES[self.chunks % SIZES.len()];
        self.chunks += 1;
        self.chunks_left -= 1;
        self.wire.clear();
        match &mut self.codec {
            Codec::Client(session) => {
                self.payload.clear();
                self.payload.resize(len, 0);
                self.sends.fill(self.produced, &mut self.payload);
                session.seal(&self.payload, &mut self.wire);
            }
            Codec::Dc(cipher) => {
                self.wire.resize(len, 0);
                self.sends.fill(self.produced, &mut self.wire);
                cipher.encrypt(&mut self.wire);
            }
            Codec::Plain => {
                self.wire.resize(len, 0);
                self.sends.fill(self.produced, &mut self.wire);
            }
        }
        self.produced += len as u64;
        self.unread = 0..self.wire.len();
    }

    fn read(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.reads += 1;
        // Now and then nothing to read for a moment: the pump gives its buffer back.
        if self.reads.is_multiple_of(7) {
            return Poll::Pending;
        }
        // As a socket with several chunks queued: a read takes what fits, across chunks.
        let mut n = 0;
        while n < buf.len() {
            if self.unread.is_empty() {
                if self.chunks_left == 0 {
                    break;
                }
                self.next_chunk();
            }
            let take = self.unread.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.wire[self.unread.start..self.unread.start + take]);
            self.unread.start += take;
            n += take;
        }
        if n == 0 {
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    /// Follows the record boundaries in `wire` (possibly a part of a record, or several),
    /// noting the largest record's payload length.
    fn walk_records(&mut self, wire: &[u8]) {
        let mut at = 0;
        while at < wire.len() {
            let step = self.records.step(&wire[at..], usize::MAX).expect("well-formed records");
            self.record_len += step.payload.map_or(0, |p| p.len());
            at += step.consumed;
            if self.records.at_boundary() {
                self.largest_record = self.largest_record.max(self.record_len);
                self.record_len = 0;
                self.whole_records += 1;
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writes += 1;
        // Now and then a full socket buffer, or room for part of the write only.
        if self.writes.is_multiple_of(11) {
            return Poll::Pending;
        }
        let n = if self.writes.is_multiple_of(3) { buf.len().min(1000) } else { buf.len() };
        if let Codec::Client(_) = self.codec {
            self.walk_records(&buf[..n]);
        }
        let Self { codec, expects, checked, scratch, first_header, header_bytes, .. } = self;
        let got = &mut scratch[..n];
        got.copy_from_slice(&buf[..n]);
        let take = (first_header.len() - *header_bytes).min(n);
        first_header[*header_bytes..*header_bytes + take].copy_from_slice(&got[..take]);
        *header_bytes += take;
        let payload = match codec {
            Codec::Client(session) => {
                let range = session.open(got).expect("the proxy's records are well formed");
                &got[range]
            }
            Codec::Dc(cipher) => {
                cipher.decrypt(got);
                &*got
            }
            Codec::Plain => &*got,
        };
        assert!(expects.matches(*checked, payload), "wrong bytes at payload offset {checked}");
        *checked += payload.len() as u64;
        Poll::Ready(Ok(n))
    }
}

/// An end as the relay sees it: a stream over a [`Peer`] the test also holds.
#[derive(Clone)]
struct End(Rc<RefCell<Peer>>);

impl End {
    fn new(peer: Peer) -> Self {
        Self(Rc::new(RefCell::new(peer)))
    }

    /// Lets this end send `chunks` more chunks.
    fn send(&self, chunks: u64) {
        self.0.borrow_mut().chunks_left += chunks;
    }

    /// Whether everything this end was let send reached `to`, checked.
    fn delivered(&self, to: &Self) -> bool {
        let (from, to) = (self.0.borrow(), to.0.borrow());
        from.chunks_left == 0 && from.unread.is_empty() && to.checked == from.produced
    }

    fn produced(&self) -> u64 {
        self.0.borrow().produced
    }

    /// Payload length of the largest record the relay wrote here.
    fn largest_record(&self) -> usize {
        self.0.borrow().largest_record
    }

    /// Records the relay wrote here, each to its end (checked by the smol-only pacing test).
    #[cfg(not(feature = "tokio"))]
    fn whole_records(&self) -> u64 {
        self.0.borrow().whole_records
    }

    /// Payload length of the first record the relay wrote here.
    fn first_record_len(&self) -> usize {
        let peer = self.0.borrow();
        assert_eq!(peer.header_bytes, 5);
        assert_eq!(peer.first_header[..3], [0x17, 3, 3], "an ApplicationData record");
        usize::from(u16::from_be_bytes([peer.first_header[3], peer.first_header[4]]))
    }
}

impl AsyncRead for End {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().read(buf)
    }
}

impl AsyncWrite for End {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().write(buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// The measurement.

/// Chunks each way before measuring: the buffer pool, the thread's RNG, the timers' and the
/// counters' first-use state are set up.
const WARM_UP: u64 = 64;
/// Chunks each way measured.
const MEASURED: u64 = 1000;

/// A relay under test and its two ends.
struct Bench {
    relay: Probe<End>,
    client: End,
    far: End,
}

impl Bench {
    /// Polls the relay until everything the ends were let send arrived, checked.
    fn settle(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000_000 {
            if self.client.delivered(&self.far) && self.far.delivered(&self.client) {
                return;
            }
            if let Poll::Ready(end) = Pin::new(&mut self.relay).poll(&mut cx) {
                panic!("the relay ended: {end}");
            }
        }
        panic!("the relay stalled");
    }

    /// `chunks` both ways at once, then half as many from the client only, then from the far
    /// end only (an idle direction next to a busy one).
    fn run(&mut self, chunks: u64) {
        self.client.send(chunks);
        self.far.send(chunks);
        self.settle();
        self.client.send(chunks / 2);
        self.settle();
        self.far.send(chunks / 2);
        self.settle();
    }

    /// Warms up, then asserts that a [`Self::run`] of [`MEASURED`] chunks allocates nothing.
    fn assert_no_allocation_per_chunk(&mut self) {
        self.run(WARM_UP);
        let before = self.client.produced();
        let allocations = allocations_in(|| self.run(MEASURED));
        let chunks = MEASURED * 3 / 2;
        assert_eq!(allocations, 0, "the relay allocated {allocations} times for {chunks} chunks each way");
        let (up, down) = (self.client.produced(), self.far.produced());
        assert_eq!(up, down, "the same sizes each way");
        assert!(up - before > 16 << 20, "{} bytes measured each way", up - before);
        assert_eq!(self.relay.bytes(), (up, down), "every payload byte counted");
    }
}

/// A FakeTLS client accepted by the core: the client's session, the DC's leg and the relay
/// halves, all with real keys.
fn telegram_session() -> (ClientSession, LegCipher, ClientToDc, DcToClient) {
    let (client, established, mut rng) = established();
    let (session, dc_frame) = established.into_session(2, &mut rng);
    let (_, dc_leg) = obfs2::respond(&dc_frame, None);
    (client, dc_leg, session.client_to_dc, session.dc_to_client)
}

/// [`telegram_session`] in fast mode.
fn fast_session() -> (ClientSession, LegCipher, ClientToDc, FastDcToClient) {
    let (client, established, mut rng) = established();
    let (session, dc_frame) = established.into_fast_session(2, &mut rng);
    let (_, dc_leg) = obfs2::respond(&dc_frame, None);
    (client, dc_leg, session.client_to_dc, session.dc_to_client)
}

/// A FakeTLS client's handshake, done: the client's session and the core's end of it.
fn established() -> (ClientSession, Established, StdRng) {
    const NOW: u32 = 1_700_000_000;
    let mut rng = StdRng::seed_from_u64(7);
    let secret = Secret::fake_tls([0x42; 16], "alloc.example").unwrap();
    let users = UserTable::new([&secret]);
    let mut input = Vec::new();
    FakeTlsHello::build(&secret, NOW, &mut rng, &mut input).unwrap();
    let client = ClientSession::start(&secret, 2, &mut rng, &mut input);
    let mut ctx = HandshakeContext {
        users: &users,
        replay: &mut NoReplayCheck,
        now: Duration::from_secs(NOW.into()),
        hint: None,
        full_search: true,
    };
    let HelloStep::Authenticated(pending) =
        ServerHandshake::new(HandshakeConfig::default()).handle_input(&input, &mut ctx)
    else {
        panic!("the hello was not accepted");
    };
    let frame = pending.accept(&mut rng, &mut Vec::new());
    let FrameStep::Ready(established) = frame.handle_input(&input) else {
        panic!("the frame was not accepted");
    };
    assert_eq!(established.consumed(), input.len());
    (client, established, rng)
}

/// Runs `f` on this thread inside the selected runtime (its timers).
fn in_runtime(f: impl FnOnce()) {
    Selected::run(|_| async move { f() }).unwrap();
}

/// A Telegram relay with this shaping, warmed up and measured; returns it for more checks.
fn telegram(drs: bool, pacing: Option<Weibull>) -> Bench {
    telegram_limited(drs, pacing, None)
}

/// [`telegram`] for a user with this `rate-limit`.
fn telegram_limited(drs: bool, pacing: Option<Weibull>, rate: Option<u64>) -> Bench {
    let (client, dc_leg, up, down) = telegram_session();
    let client = End::new(Peer::new(Codec::Client(client), 1, 2));
    let far = End::new(Peer::new(Codec::Dc(dc_leg), 2, 1));
    let relay = Probe::telegram_limited(client.clone(), far.clone(), up, down, drs, pacing, rate);
    let mut bench = Bench { relay, client, far };
    bench.assert_no_allocation_per_chunk();
    bench
}

#[test]
fn a_telegram_relay_without_shaping_allocates_nothing_per_chunk() {
    in_runtime(|| {
        let bench = telegram(false, None);
        assert_eq!(bench.client.first_record_len(), DcToClient::MAX_CHUNK, "full records");
        // Reads of several records' worth are framed as several records, none over the limit.
        assert_eq!(bench.client.largest_record(), DcToClient::MAX_CHUNK, "no record over the limit");
    });
}

#[test]
fn a_telegram_relay_with_drs_allocates_nothing_per_chunk() {
    in_runtime(|| {
        let bench = telegram(true, None);
        assert!(bench.client.first_record_len() <= 1450, "a small first record");
        assert!(bench.client.largest_record() <= DcToClient::MAX_CHUNK, "no record over the limit");
    });
}

/// Pacing with delays of zero: every record still polls its timer, re-arms it with a fresh
/// draw and counts as paced. smol only: an async-io timer whose deadline has passed fires
/// when polled, but a tokio timer fires only when the runtime's time driver turns (1 ms ticks,
/// deadlines rounded up), which is a wall-clock wait per record.
#[cfg(not(feature = "tokio"))]
#[test]
fn a_telegram_relay_with_drs_and_pacing_allocates_nothing_per_chunk() {
    in_runtime(|| {
        let bench = telegram(true, Some(Weibull { shape: 1.0, scale_ms: 0.0 }));
        assert!(bench.client.first_record_len() <= 1450, "a small first record");
        // Reads may join the DC's chunks, but with pacing each read is one record, paced.
        let records = bench.client.whole_records();
        assert!(records >= (WARM_UP + MEASURED) * 3 / 2 / 4, "{records} records");
        assert_eq!(bench.relay.paced_records(), records, "every record paced");
    });
}

/// A rate-limited user whose rate the run stays within (its burst is far larger than the
/// bytes measured): every read reserves tokens from the user's shared bucket and settles them,
/// without allocating. (Waiting for tokens needs the runtime's timer, which this hand-polled
/// loop does not turn on tokio; the timer is made once, at a session's first wait.)
#[test]
fn a_rate_limited_telegram_relay_allocates_nothing_per_chunk() {
    in_runtime(|| {
        let bench = telegram_limited(false, None, Some(1 << 40));
        assert_eq!(bench.client.first_record_len(), DcToClient::MAX_CHUNK, "full records");
    });
}

/// Fast mode: the DC's bytes go to the client as they are, in records; the ends check every
/// byte as without it (the DC encrypts with its leg's keys, the client decrypts with its own).
#[test]
fn a_fast_mode_relay_allocates_nothing_per_chunk() {
    in_runtime(|| {
        for drs in [false, true] {
            let (client, dc_leg, up, down) = fast_session();
            let client = End::new(Peer::new(Codec::Client(client), 1, 2));
            let far = End::new(Peer::new(Codec::Dc(dc_leg), 2, 1));
            let relay = Probe::telegram_fast(client.clone(), far.clone(), up, down, drs, None);
            let mut bench = Bench { relay, client, far };
            bench.assert_no_allocation_per_chunk();
            let first = bench.client.first_record_len();
            if drs {
                assert!(first <= 1450, "a small first record: {first}");
            } else {
                assert_eq!(first, FastDcToClient::MAX_CHUNK, "full records");
            }
        }
    });
}

#[test]
fn a_fronting_relay_allocates_nothing_per_chunk() {
    in_runtime(|| {
        let client = End::new(Peer::new(Codec::Plain, 3, 4));
        let far = End::new(Peer::new(Codec::Plain, 4, 3));
        let relay = Probe::fronting(client.clone(), far.clone());
        Bench { relay, client, far }.assert_no_allocation_per_chunk();
    });
}
