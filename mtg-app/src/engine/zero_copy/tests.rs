//! The zero-copy direction over real loopback sockets on the selected runtime: byte-exact
//! transfers with their record headers and sizes checked, a slow reader (partial splices), a
//! source that closes mid-record, the copy fallback, and no pipe held while idle.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::RelayError;
use rand::RngCore;

use super::Spliced;
use crate::engine::relay::{End, Plain, Pump, RECORD_HEADER, Relay, Transform};
use crate::runtime::{Runtime, Selected};

type Stream = <Selected as Runtime>::Stream;

/// Largest record payload (a TLS record as the proxy sends it).
const MAX_PAYLOAD: usize = 16379;
/// Long enough that the relay's idle timer never fires in a test.
const IDLE: Duration = Duration::from_secs(3600);
/// Bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

/// FakeTLS-like framing with a record-size schedule, as doppelganger shaping gives one: the
/// `i`-th read may bring at most `limits[i % len]` bytes; every chunk is framed as one
/// ApplicationData record. Records the size of every record it framed.
struct Records {
    limits: Vec<usize>,
    framed: Vec<usize>,
    bytes: u64,
}

impl Records {
    fn new(limits: &[usize]) -> Self {
        Self { limits: limits.to_vec(), framed: Vec::new(), bytes: 0 }
    }

    fn limit(&self) -> usize {
        self.limits[self.framed.len() % self.limits.len()]
    }

    /// Accounts a record of `n` bytes and returns its header.
    fn record(&mut self, n: usize) -> [u8; RECORD_HEADER] {
        assert!(n <= self.limit(), "a read brought {n} bytes, more than the limit {}", self.limit());
        self.framed.push(n);
        self.bytes += n as u64;
        let len = (n as u16).to_be_bytes();
        [0x17, 0x03, 0x03, len[0], len[1]]
    }
}

impl Transform for Records {
    const READ_AT: usize = RECORD_HEADER;
    const READ_MAX: usize = MAX_PAYLOAD;
    fn poll_read_limit(&mut self, _cx: &mut Context<'_>) -> Poll<usize> {
        Poll::Ready(self.limit())
    }
    fn transform(&mut self, buf: &mut [u8], n: usize) -> Result<Range<usize>, RelayError> {
        let header = self.record(n);
        buf[..RECORD_HEADER].copy_from_slice(&header);
        Ok(0..RECORD_HEADER + n)
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn passes_through(&self) -> bool {
        true
    }
    fn pass_through(&mut self, n: usize) -> ([u8; RECORD_HEADER], usize) {
        (self.record(n), RECORD_HEADER)
    }
}

/// Runs `test` on a fresh runtime of the selected kind.
fn run<F: Future<Output = ()>>(test: impl FnOnce(Selected) -> F) {
    Selected::run(test).expect("the runtime starts");
}

/// A connected pair of loopback streams: (the proxy's end, the peer's end).
async fn connected(rt: &Selected) -> (Stream, Stream) {
    let listener = rt.bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = Selected::listener_addr(&listener).expect("bound address");
    let (dialed, accepted) =
        futures_util::future::join(Selected::connect(addr), Selected::accept(&listener)).await;
    (accepted.expect("accept").0, dialed.expect("connect"))
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// Splits what the client received into records: (their payload sizes, the payload bytes).
fn parse_records(mut wire: &[u8]) -> (Vec<usize>, Vec<u8>) {
    let (mut sizes, mut payload) = (Vec::new(), Vec::new());
    while !wire.is_empty() {
        assert!(wire.len() >= RECORD_HEADER, "a truncated record header: {wire:?}");
        assert_eq!(wire[..3], [0x17, 0x03, 0x03], "an ApplicationData record header");
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        assert!(len <= MAX_PAYLOAD && wire.len() >= RECORD_HEADER + len, "record of {len} bytes");
        sizes.push(len);
        payload.extend_from_slice(&wire[RECORD_HEADER..RECORD_HEADER + len]);
        wire = &wire[RECORD_HEADER + len..];
    }
    (sizes, payload)
}

/// A download relay as the proxy wires one: client ⇄ DC, the DC→client direction spliced.
type Download = Relay<Selected, Stream, Pump<Plain>, Spliced<Records>>;

/// What one download delivered.
struct Delivered {
    end: End,
    wire: Vec<u8>,
    relay: Download,
}

/// The DC sends `data` then closes; the client reads everything (in `read_piece` pieces);
/// the relay runs until it ends. With `small_buffers`, the proxy's client socket sends and
/// the client receives through 4 KiB buffers.
async fn download(
    rt: &Selected,
    data: &[u8],
    down: Spliced<Records>,
    read_piece: usize,
    small_buffers: bool,
) -> Delivered {
    let (client, mut client_peer) = connected(rt).await;
    let (dc, mut dc_peer) = connected(rt).await;
    if small_buffers {
        Selected::socket(&client).set_send_buffer_size(4096).expect("SO_SNDBUF");
        Selected::socket(&client_peer).set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    let (sent_tx, sent_rx) = async_channel::bounded(1);
    let to_send = data.to_vec();
    rt.spawn(async move {
        dc_peer.write_all(&to_send).await.expect("the DC writes");
        // Closed mid-record: the relay must deliver every byte, then close the client.
        drop(dc_peer);
        sent_tx.send(()).await.expect("the test waits");
    });
    let (got_tx, got_rx) = async_channel::bounded(1);
    rt.spawn(async move {
        let mut wire = Vec::new();
        let mut piece = vec![0u8; read_piece];
        loop {
            match client_peer.read(&mut piece).await.expect("the client reads") {
                0 => break,
                n => wire.extend_from_slice(&piece[..n]),
            }
        }
        got_tx.send(wire).await.expect("the test waits");
    });
    let mut relay: Download = Relay::new(client, dc, Pump::new(Plain::default(), &[]), down, IDLE);
    let end = within(rt, &mut relay).await.expect("the relay ends when the DC closes");
    within(rt, sent_rx.recv()).await.expect("the DC finished").expect("sent");
    let wire = within(rt, got_rx.recv()).await.expect("the client finished").expect("received");
    Delivered { end, wire, relay }
}

/// `fut`, or `None` after [`DEADLINE`].
async fn within<F: Future>(_rt: &Selected, fut: F) -> Option<F::Output> {
    crate::engine::with_timeout::<Selected, _>(DEADLINE, fut).await
}

/// Checks a FakeTLS download: the payload is `data`, every record is one the transform
/// framed, in order, each within its limit (checked as it was framed).
fn check_records(delivered: &Delivered, data: &[u8]) {
    assert!(matches!(delivered.end, End::UpstreamClosed), "ended by the DC closing, not {}", delivered.end);
    let (sizes, payload) = parse_records(&delivered.wire);
    assert_eq!(payload.len(), data.len());
    assert!(payload == data, "the payload arrives byte for byte");
    let transform = delivered.relay.down.transform();
    assert_eq!(sizes, transform.framed, "the records are exactly the ones the transform framed");
    assert_eq!(transform.bytes, data.len() as u64);
}

/// Record sizes like dynamic record sizing's: small first records, then full ones, with odd
/// sizes in between.
const SHAPED: &[usize] = &[1369, 1369, 4096, MAX_PAYLOAD, 700, MAX_PAYLOAD, 9000];

#[test]
fn an_8_mib_download_is_spliced_byte_exact_in_the_shaped_records() {
    run(|rt| async move {
        let data = random(8 << 20);
        let delivered = download(&rt, &data, Spliced::new(Records::new(SHAPED), true), 64 << 10, false).await;
        check_records(&delivered, &data);
        assert!(delivered.relay.down.splices(), "the zero-copy path stayed on");
        assert_eq!(delivered.relay.down.spliced, data.len() as u64, "every byte was spliced");
        assert!(!delivered.relay.down.holds_pipe(), "the pipe is given back at the end");
    });
}

#[test]
fn a_slow_reader_gets_partial_splices_and_every_byte() {
    run(|rt| async move {
        // Not a multiple of any record size: the DC closes in the middle of a record.
        let data = random((1 << 20) + 3);
        let delivered =
            download(&rt, &data, Spliced::new(Records::new(&[MAX_PAYLOAD]), true), 1000, true).await;
        check_records(&delivered, &data);
        assert!(delivered.relay.down.splices());
        assert!(
            delivered.relay.down.partial_splices > 0,
            "a full record does not fit a small send buffer: some splices move part of the pipe"
        );
    });
}

#[test]
fn where_splice_fails_the_direction_copies_with_the_same_records() {
    run(|rt| async move {
        let data = random(2 << 20);
        let mut down = Spliced::new(Records::new(SHAPED), true);
        down.fail_first = true;
        let delivered = download(&rt, &data, down, 64 << 10, false).await;
        check_records(&delivered, &data);
        assert!(!delivered.relay.down.splices(), "fell back to the copy path for the session");
        assert_eq!(delivered.relay.down.spliced, 0, "nothing was spliced");
    });
}

#[test]
fn switched_off_the_direction_copies() {
    run(|rt| async move {
        let data = random(1 << 20);
        let delivered =
            download(&rt, &data, Spliced::new(Records::new(SHAPED), false), 64 << 10, false).await;
        check_records(&delivered, &data);
        assert!(!delivered.relay.down.splices());
    });
}

#[test]
fn plain_bytes_pass_unchanged_without_headers() {
    run(|rt| async move {
        let data = random(3 << 20);
        let (client, mut client_peer) = connected(&rt).await;
        let (site, site_peer) = connected(&rt).await;
        let site_rx = send_and_stay(&rt, site_peer, &data);
        let (got_tx, got_rx) = async_channel::bounded(1);
        let len = data.len();
        rt.spawn(async move {
            let mut wire = vec![0u8; len];
            client_peer.read_exact(&mut wire).await.expect("the client reads");
            got_tx.send((wire, client_peer)).await.expect("the test waits");
        });
        let mut relay: Relay<Selected, Stream, Pump<Plain>, Spliced<Plain>> = Relay::new(
            client,
            site,
            Pump::new(Plain::default(), &[]),
            Spliced::new(Plain::default(), true),
            IDLE,
        );
        let (wire, _client_peer) = until_received(&rt, &mut relay, got_rx).await;
        let _site_peer = within(&rt, site_rx.recv()).await.expect("the site wrote").expect("sent");
        assert!(wire == data, "the bytes arrive unchanged");
        assert_eq!(relay.down.transform().bytes, data.len() as u64);
        assert_eq!(relay.down.spliced, data.len() as u64, "every byte was spliced");
    });
}

#[test]
fn an_idle_session_holds_no_pipe() {
    run(|rt| async move {
        let data = random(1 << 20);
        let (client, mut client_peer) = connected(&rt).await;
        let (dc, dc_peer) = connected(&rt).await;
        // The DC stays open and silent: the session is idle, not over.
        let dc_rx = send_and_stay(&rt, dc_peer, &data);
        let (got_tx, got_rx) = async_channel::bounded(1);
        let len = data.len();
        rt.spawn(async move {
            let mut wire = Vec::new();
            let mut piece = vec![0u8; 64 << 10];
            while payload_len(&wire) < len {
                let n = client_peer.read(&mut piece).await.expect("the client reads");
                assert_ne!(n, 0, "the client is not closed while the DC is open");
                wire.extend_from_slice(&piece[..n]);
            }
            got_tx.send((wire, client_peer)).await.expect("the test waits");
        });
        let mut relay: Download = Relay::new(
            client,
            dc,
            Pump::new(Plain::default(), &[]),
            Spliced::new(Records::new(&[1369]), true),
            IDLE,
        );
        let (wire, _client_peer) = until_received(&rt, &mut relay, got_rx).await;
        let (_, payload) = parse_records(&wire);
        assert!(payload == data);
        let _dc_peer = within(&rt, dc_rx.recv()).await.expect("the DC wrote").expect("sent");
        // Everything was delivered: the relay gives its pipe back once the DC has nothing more.
        let released = poll_relay_until(&rt, &mut relay, |relay| !relay.down.holds_pipe()).await;
        assert!(released, "an idle session gives its pipe back");
        assert!(relay.down.splices());
    });
}

/// Writes `data` to `peer` in a task, then hands `peer` over, still open (the relay must not
/// end before the test looked).
fn send_and_stay(rt: &Selected, mut peer: Stream, data: &[u8]) -> async_channel::Receiver<Stream> {
    let (tx, rx) = async_channel::bounded(1);
    let data = data.to_vec();
    rt.spawn(async move {
        peer.write_all(&data).await.expect("the peer writes");
        tx.send(peer).await.expect("the test waits");
    });
    rx
}

/// Payload bytes in the complete records at the start of `wire`.
fn payload_len(wire: &[u8]) -> usize {
    let (mut at, mut payload) = (0, 0);
    while wire.len() >= at + RECORD_HEADER {
        let len = usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
        if wire.len() < at + RECORD_HEADER + len {
            break;
        }
        at += RECORD_HEADER + len;
        payload += len;
    }
    payload
}

/// Polls `relay` (which must not end) until `received` yields, within [`DEADLINE`].
async fn until_received<T, F: Future + Unpin>(
    rt: &Selected,
    relay: &mut F,
    received: async_channel::Receiver<T>,
) -> T
where
    F::Output: std::fmt::Display,
{
    let mut recv = Box::pin(received.recv());
    let both = std::future::poll_fn(|cx| {
        if let Poll::Ready(end) = Pin::new(&mut *relay).poll(cx) {
            panic!("the relay ended early: {end}");
        }
        recv.as_mut().poll(cx)
    });
    within(rt, Box::pin(both)).await.expect("the client got everything in time").expect("sent")
}

/// Polls `relay` (which must not end) until `done(relay)` holds after a poll; `false` if that
/// did not happen within [`DEADLINE`]. The relay is woken by its sockets and timers only, so
/// the condition is also checked on a short timer.
async fn poll_relay_until(rt: &Selected, relay: &mut Download, done: impl Fn(&Download) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        let mut tick = Box::pin(Selected::sleep(Duration::from_millis(10)));
        let polled = std::future::poll_fn(|cx| {
            if let Poll::Ready(end) = Pin::new(&mut *relay).poll(cx) {
                panic!("the relay ended early: {end}");
            }
            tick.as_mut().poll(cx)
        });
        within(rt, Box::pin(polled)).await.expect("a tick");
        if done(relay) {
            return true;
        }
    }
    false
}
