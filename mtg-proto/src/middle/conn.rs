//! An established middle-proxy connection: the encrypting writer and the decrypting reader.
//!
//! The two halves are independent (no shared state), so they can run in two tasks. Both keep
//! their CBC chaining value and `seq` counter for the connection's life.

use core::fmt;
use core::ops::Range;

use crate::middle::cbc::{self, CbcDecryptor, CbcEncryptor};
use crate::middle::frame::{self, EncodeError, FrameError, MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::middle::rpc::{self, ProxyReq};

/// An established connection: write with [`RpcWriter`], read with [`RpcReader`].
#[derive(Debug)]
pub struct MiddleConnection {
    /// Our sending half (`seq` starts at 0).
    pub writer: RpcWriter,
    /// Our receiving half (expects `seq` 0 next).
    pub reader: RpcReader,
}

/// The sending half: frames payloads with the next `seq` and encrypts them.
#[derive(Debug)]
pub struct RpcWriter {
    cbc: CbcEncryptor,
    seq: i32,
}

impl RpcWriter {
    /// A writer over an encryptor, numbering frames from `first_seq` (the handshake builds
    /// these; public for tools and tests).
    pub fn new(cbc: CbcEncryptor, first_seq: i32) -> Self {
        Self { cbc, seq: first_seq }
    }

    /// The `seq` of the next frame.
    pub fn next_seq(&self) -> i32 {
        self.seq
    }

    /// Starts a batch of frames appended to `out`; the batch is padded and encrypted when it
    /// is finished (or dropped), so `out` only ever holds ciphertext between batches.
    pub fn batch<'a>(&'a mut self, out: &'a mut Vec<u8>) -> Batch<'a> {
        let start = out.len();
        Batch { writer: self, out, start, sealed: false }
    }
}

/// Frames on their way into one write. Add messages, then [`Batch::finish`]: one run of
/// padding words brings the batch to a 16-byte multiple and it is encrypted in place.
/// Dropping a batch finishes it too.
pub struct Batch<'a> {
    writer: &'a mut RpcWriter,
    out: &'a mut Vec<u8>,
    start: usize,
    sealed: bool,
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("start", &self.start)
            .field("len", &self.out.len().saturating_sub(self.start))
            .finish()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.seal();
    }
}

impl Batch<'_> {
    /// Adds one frame whose payload `body` appends to the buffer (no copy). If `body` fails,
    /// or the payload is not whole words or too long, the frame is removed and `seq` not used.
    pub fn push_with<E: From<EncodeError>>(
        &mut self,
        body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = frame::begin_frame(self.out);
        if let Err(e) = body(self.out) {
            self.out.truncate(at);
            return Err(e);
        }
        frame::finish_frame(self.out, at, self.writer.seq)?;
        self.writer.seq = self.writer.seq.wrapping_add(1);
        Ok(())
    }

    /// Adds one frame carrying `payload`.
    pub fn payload(&mut self, payload: &[u8]) -> Result<(), EncodeError> {
        self.push_with(|out| {
            out.extend_from_slice(payload);
            Ok::<_, EncodeError>(())
        })
    }

    /// Adds an `RPC_PROXY_REQ` for one client packet.
    pub fn proxy_req(&mut self, req: &ProxyReq, packet: &[u8]) -> Result<(), EncodeError> {
        self.push_with(|out| rpc::encode_proxy_req(req, packet, out))
    }

    /// Adds an `RPC_CLOSE_CONN` (we closed this client).
    pub fn close_conn(&mut self, conn_id: u64) {
        self.infallible(|out| rpc::encode_close_conn(conn_id, out));
    }

    /// Adds an `RPC_PING`.
    pub fn ping(&mut self, ping_id: i64) {
        self.infallible(|out| rpc::encode_ping(ping_id, out));
    }

    /// Adds an `RPC_PONG` (answer a ping with its id).
    pub fn pong(&mut self, ping_id: i64) {
        self.infallible(|out| rpc::encode_pong(ping_id, out));
    }

    /// The middle proxy's side: adds an `RPC_PROXY_ANS`.
    pub fn proxy_ans(&mut self, flags: u32, conn_id: u64, data: &[u8]) -> Result<(), EncodeError> {
        self.push_with(|out| rpc::encode_proxy_ans(flags, conn_id, data, out))
    }

    /// The middle proxy's side: adds an `RPC_SIMPLE_ACK`.
    pub fn simple_ack(&mut self, conn_id: u64, confirm: [u8; 4]) {
        self.infallible(|out| rpc::encode_simple_ack(conn_id, confirm, out));
    }

    /// The middle proxy's side: adds an `RPC_CLOSE_EXT`.
    pub fn close_ext(&mut self, conn_id: u64) {
        self.infallible(|out| rpc::encode_close_ext(conn_id, out));
    }

    /// Pads and encrypts the batch; returns where its ciphertext lies in the buffer.
    pub fn finish(mut self) -> Range<usize> {
        self.seal();
        self.start.min(self.out.len())..self.out.len()
    }

    /// Fixed-size word payloads cannot fail to frame.
    fn infallible(&mut self, body: impl FnOnce(&mut Vec<u8>)) {
        let _ = self.push_with(|out| {
            body(out);
            Ok::<_, EncodeError>(())
        });
    }

    fn seal(&mut self) {
        if self.sealed {
            return;
        }
        self.sealed = true;
        frame::pad_to_block(self.out, self.start);
        // Frames and padding words are whole words, and the padding made them whole blocks.
        // (`get_mut`: a `push_with` body could have shrunk the buffer below the batch start.)
        if let Some(batch) = self.out.get_mut(self.start..) {
            let _ = self.writer.cbc.encrypt_in_place(batch);
        }
    }
}

/// The receiving half: decrypts ciphertext in any chunking and yields frame payloads in order,
/// checking length, CRC and `seq`.
///
/// [`RpcReader::next`] takes from its input only the blocks the current frame needs, so the
/// reader buffers at most one frame plus 31 bytes (a partial ciphertext block and the part of
/// the last decrypted block past the frame). After an error every later call returns it again.
pub struct RpcReader {
    cbc: CbcDecryptor,
    /// `buf[..plain]` is decrypted, `buf[plain..]` is a partial ciphertext block.
    buf: Vec<u8>,
    plain: usize,
    /// The last call returned the frame `buf[..emitted]`; drop it before reading on.
    emitted: usize,
    next_seq: i32,
    max_len: usize,
    failed: Option<FrameError>,
}

impl fmt::Debug for RpcReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcReader")
            .field("buffered", &self.buf.len())
            .field("next_seq", &self.next_seq)
            .field("max_len", &self.max_len)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl RpcReader {
    /// A reader over a decryptor expecting `first_seq` next and frames up to `max_len` (the
    /// handshake builds these; public for tools and tests).
    pub fn new(cbc: CbcDecryptor, first_seq: i32, max_len: usize) -> Self {
        let mut r = Self {
            cbc,
            buf: Vec::new(),
            plain: 0,
            emitted: 0,
            next_seq: first_seq,
            max_len: 0,
            failed: None,
        };
        r.set_max_len(max_len);
        r
    }

    /// The `seq` the next frame must carry.
    pub fn next_seq(&self) -> i32 {
        self.next_seq
    }

    /// Sets the largest frame accepted (clamped to 16..=2^24; 2^24 after the handshake).
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN);
    }

    /// Whether no partial frame or padding word is buffered (decrypted bytes past the last
    /// frame count as buffered).
    pub fn at_boundary(&self) -> bool {
        self.buf.len() == self.emitted
    }

    /// Takes ciphertext from the front of `input` until one frame is complete and returns its
    /// payload (`input` then starts after the last block used), or consumes all of `input` and
    /// returns `None`.
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.emitted > 0 {
            self.drop_front(self.emitted);
            self.emitted = 0;
        }
        loop {
            let plain = &self.buf[..self.plain];
            let want = match frame::unit_len(plain, self.max_len) {
                Ok(Some(len)) => len,
                Ok(None) => 4,
                Err(e) => return Err(*self.failed.insert(e)),
            };
            if self.plain >= want {
                if want == 4 {
                    self.drop_front(4);
                    continue;
                }
                if let Err(e) = frame::check_frame(&self.buf[..want], self.next_seq) {
                    return Err(*self.failed.insert(e));
                }
                self.next_seq = self.next_seq.wrapping_add(1);
                self.emitted = want;
                return Ok(self.buf.get(8..want - 4));
            }
            if input.is_empty() {
                return Ok(None);
            }
            // Whole blocks covering the missing plaintext, less the partial block we hold.
            let missing = (want - self.plain).div_ceil(cbc::BLOCK) * cbc::BLOCK;
            let take = (missing - (self.buf.len() - self.plain)).min(input.len());
            let (head, rest) = input.split_at(take);
            self.buf.extend_from_slice(head);
            *input = rest;
            self.plain += self.cbc.decrypt_prefix(&mut self.buf[self.plain..]);
        }
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.drain(..n);
        self.plain -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RpcWriter, RpcReader) {
        let (key, iv) = ([7u8; 32], [9u8; 16]);
        (
            RpcWriter::new(CbcEncryptor::from_raw(&key, &iv), 0),
            RpcReader::new(CbcDecryptor::from_raw(&key, &iv), 0, MAX_FRAME_LEN),
        )
    }

    #[test]
    fn batches_round_trip_in_any_chunking() {
        let (mut w, _) = pair();
        let mut wire = Vec::new();
        let mut b = w.batch(&mut wire);
        b.ping(1);
        b.payload(&[3; 4000]).unwrap();
        assert_eq!(b.payload(&[3; 5]), Err(EncodeError::NotWords { len: 5 }));
        b.close_conn(77);
        let range = b.finish();
        assert_eq!(range, 0..wire.len());
        assert_eq!(wire.len() % 16, 0);
        {
            let mut b = w.batch(&mut wire);
            b.pong(2);
        } // dropped: sealed
        assert_eq!(wire.len() % 16, 0);
        assert_eq!(w.next_seq(), 4);
        for chunk in [1, 5, 16, 17, 100, wire.len()] {
            let (_, mut r) = pair();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut input = piece;
                while let Some(p) = r.next(&mut input).unwrap() {
                    got.push(p.to_vec());
                }
                assert!(input.is_empty());
            }
            assert_eq!(got.len(), 4, "chunk {chunk}");
            assert_eq!(rpc::decode_from_middle(&got[0]), Ok(rpc::FromMiddle::Ping { ping_id: 1 }));
            assert_eq!(got[1], vec![3; 4000]);
            assert_eq!(rpc::decode_from_middle(&got[2]), Ok(rpc::FromMiddle::CloseConn { conn_id: 77 }));
            assert_eq!(rpc::decode_from_middle(&got[3]), Ok(rpc::FromMiddle::Pong { ping_id: 2 }));
            assert!(r.at_boundary());
            assert_eq!(r.next_seq(), 4);
        }
    }

    #[test]
    fn corrupted_ciphertext_is_an_error_and_sticky() {
        let (mut w, mut r) = pair();
        let mut wire = Vec::new();
        let mut b = w.batch(&mut wire);
        b.ping(1);
        b.finish();
        wire[5] ^= 0x40;
        let e = r.next(&mut &wire[..]).unwrap_err();
        assert_eq!(r.next(&mut &[][..]), Err(e));
    }
}
