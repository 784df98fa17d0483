//! obfuscated2: the 64-byte frame that opens both legs and keys their AES-CTR streams
//! (reference §4.b).
//!
//! ```text
//! offset  0      8                40          56     60    62   64
//!         | rand | key material K | IV        | tag  | dc  | rnd |
//!                                             '---- encrypted ---'
//! ```
//! The initiator encrypts the whole frame with its send keystream and puts the plaintext of
//! bytes 0..56 back, so the wire carries plaintext 0..56 and ciphertext 56..64. The responder
//! runs its receive keystream over all 64 bytes to read the tag and DC id; both keystreams are
//! then at position 64 for what follows.

use rand_core::RngCore;

use crate::cipher::{Keystream, LegKeys, StreamKey};
use crate::secret::KEY_LEN;

/// Size of the obfuscated2 frame.
pub const FRAME_LEN: usize = 64;

/// Protocol tag of the padded intermediate transport, the only one the proxy speaks.
pub const TAG_PADDED_INTERMEDIATE: [u8; 4] = [0xdd; 4];

/// First four bytes (little-endian u32) a generated frame must never start with, because they
/// look like another protocol: HTTP verbs, a TLS record and the transport tags.
pub const FORBIDDEN_PREFIXES: [u32; 7] = [
    0x4441_4548, // "HEAD"
    0x5453_4f50, // "POST"
    0x2054_4547, // "GET "
    0x4954_504f, // "OPTI"
    0x0201_0316, // 16 03 01 02: a TLS handshake record
    0xdddd_dddd, // padded intermediate tag
    0xeeee_eeee, // intermediate tag
];

/// Whether a frame's plaintext is one obfuscated2 forbids (first byte `ef`, a forbidden
/// four-byte prefix, or zero bytes 4..8).
pub fn is_forbidden_frame(frame: &[u8; FRAME_LEN]) -> bool {
    let head = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    frame[0] == 0xef || FORBIDDEN_PREFIXES.contains(&head) || frame[4..8] == [0, 0, 0, 0]
}

/// What the responder read from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The 4-byte transport tag.
    pub tag: [u8; 4],
    /// The DC id as sent (signed; negative ids are media DCs).
    pub dc: i16,
}

impl FrameHeader {
    /// The DC to dial: the absolute value, with 0 meaning DC 2 (reference §4.b).
    pub fn target_dc(&self) -> u16 {
        match self.dc.unsigned_abs() {
            0 => 2,
            dc => dc,
        }
    }
}

/// The two keystreams of one leg, seen from one end.
#[derive(Debug)]
pub struct LegCipher {
    /// Keystream for bytes this end sends.
    pub(crate) send: Keystream,
    /// Keystream for bytes this end receives.
    pub(crate) recv: Keystream,
}

impl LegCipher {
    /// Encrypts `data` in place for sending.
    pub fn encrypt(&mut self, data: &mut [u8]) {
        self.send.apply(data);
    }

    /// Decrypts received `data` in place.
    pub fn decrypt(&mut self, data: &mut [u8]) {
        self.recv.apply(data);
    }
}

/// Generates an initiator's frame for `tag` and `dc` from `rng`, skipping forbidden prefixes.
///
/// `secret` is `None` on the proxy→DC leg (keys used raw) and the user's key on a client leg.
/// Returns the 64 wire bytes and the initiator's cipher (send keystream already at 64).
pub fn initiate(
    rng: &mut (impl RngCore + ?Sized),
    tag: [u8; 4],
    dc: i16,
    secret: Option<&[u8; KEY_LEN]>,
) -> ([u8; FRAME_LEN], LegCipher) {
    let mut frame = [0u8; FRAME_LEN];
    draw(rng, &mut frame, false);
    finish(frame, tag, dc, secret)
}

/// Fast mode's proxy→DC frame: the DC, answering without a secret, keys its answers with
/// `answer` (the client leg's proxy→client key and IV), so its bytes reach the client as
/// they are.
///
/// `frame[8..56]` is `answer`'s key ‖ IV reversed (the responder derives its answer keystream
/// from those 48 bytes reversed); bytes 0..8 are drawn from `rng` until the frame is not
/// forbidden, bytes 62..64 are random, 56..62 carry `tag` and `dc` as usual. The DC's answer
/// keystream starts at position 0, like the client leg's download one. The returned cipher's
/// `send` is the proxy→DC keystream (at 64), its `recv` the DC→proxy one, unused in fast mode.
pub(crate) fn initiate_fast(
    rng: &mut (impl RngCore + ?Sized),
    tag: [u8; 4],
    dc: i16,
    answer: &StreamKey,
) -> ([u8; FRAME_LEN], LegCipher) {
    let mut frame = [0u8; FRAME_LEN];
    rng.fill_bytes(&mut frame);
    answer.write_as_answer_material(&mut frame[8..56]);
    draw(rng, &mut frame, true);
    finish(frame, tag, dc, None)
}

/// Draws the random bytes of `frame` (only bytes 0..8 when `head_only`) until the frame is not
/// forbidden: the check reads bytes 0..8 alone, so re-drawing them suffices.
fn draw(rng: &mut (impl RngCore + ?Sized), frame: &mut [u8; FRAME_LEN], head_only: bool) {
    loop {
        if head_only {
            rng.fill_bytes(&mut frame[..8]);
        } else {
            rng.fill_bytes(frame);
        }
        if !is_forbidden_frame(frame) {
            break;
        }
    }
}

/// Puts `tag` and `dc` in a drawn frame, keys the leg and encrypts bytes 56..64.
fn finish(
    mut frame: [u8; FRAME_LEN],
    tag: [u8; 4],
    dc: i16,
    secret: Option<&[u8; KEY_LEN]>,
) -> ([u8; FRAME_LEN], LegCipher) {
    frame[56..60].copy_from_slice(&tag);
    frame[60..62].copy_from_slice(&dc.to_le_bytes());
    let keys = LegKeys::derive(&frame, secret);
    let mut cipher = LegCipher { send: keys.initiator_to_responder, recv: keys.responder_to_initiator };
    let mut encrypted = frame;
    cipher.send.apply(&mut encrypted);
    frame[56..].copy_from_slice(&encrypted[56..]);
    (frame, cipher)
}

/// A leg as its responder sees it, with the key and IV of its send keystream (fast mode hands
/// them to the DC; zeroized on drop).
#[derive(Debug)]
pub(crate) struct ResponderLeg {
    pub(crate) cipher: LegCipher,
    pub(crate) send_key: StreamKey,
}

/// Reads an initiator's frame as the responder: derives the keys, decrypts the tag and DC id.
///
/// Any 64 bytes give a header; whether the tag is acceptable is the caller's decision.
pub fn respond(frame: &[u8; FRAME_LEN], secret: Option<&[u8; KEY_LEN]>) -> (FrameHeader, LegCipher) {
    let (header, leg) = respond_keyed(frame, secret);
    (header, leg.cipher)
}

/// [`respond`], keeping the send keystream's key and IV.
pub(crate) fn respond_keyed(
    frame: &[u8; FRAME_LEN],
    secret: Option<&[u8; KEY_LEN]>,
) -> (FrameHeader, ResponderLeg) {
    let keys = LegKeys::derive(frame, secret);
    let mut cipher = LegCipher { send: keys.responder_to_initiator, recv: keys.initiator_to_responder };
    let mut plain = *frame;
    cipher.recv.apply(&mut plain);
    let header = FrameHeader {
        tag: [plain[56], plain[57], plain[58], plain[59]],
        dc: i16::from_le_bytes([plain[60], plain[61]]),
    };
    (header, ResponderLeg { cipher, send_key: keys.answer_key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// Forbidden heads an RNG may draw: the ones `is_forbidden_frame` must make us skip.
    const FORBIDDEN_HEADS: [[u8; 8]; 9] = [
        *b"HEAD\x01\x01\x01\x01",
        *b"POST\x01\x01\x01\x01",
        *b"GET \x01\x01\x01\x01",
        *b"OPTI\x01\x01\x01\x01",
        [0x16, 3, 1, 2, 1, 1, 1, 1],
        [0xdd, 0xdd, 0xdd, 0xdd, 1, 1, 1, 1],
        [0xee, 0xee, 0xee, 0xee, 1, 1, 1, 1],
        [0xef, 1, 2, 3, 1, 1, 1, 1],
        [1, 2, 3, 4, 0, 0, 0, 0],
    ];

    /// An RNG whose next draws start with the forced heads, in order, then are random.
    struct Rigged {
        forced: Vec<[u8; 8]>,
        inner: SmallRng,
    }

    impl RngCore for Rigged {
        fn next_u32(&mut self) -> u32 {
            self.inner.next_u32()
        }
        fn next_u64(&mut self) -> u64 {
            self.inner.next_u64()
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            self.inner.fill_bytes(dst);
            if dst.len() >= 8
                && let Some(head) = self.forced.pop()
            {
                dst[..8].copy_from_slice(&head);
            }
        }
    }

    proptest! {
        /// Fast mode's whole premise: for any client frame and secret, the DC frame we choose is
        /// never forbidden, carries the tag and DC, and the DC (answering it with the same
        /// `respond`, no secret) encrypts with exactly our client leg's download keystream.
        #[test]
        fn the_fast_dc_frame_keys_the_dc_with_the_client_download_stream(
            client_frame in any::<[u8; FRAME_LEN]>(),
            secret in any::<[u8; KEY_LEN]>(),
            tag in any::<[u8; 4]>(),
            dc in any::<i16>(),
            seed in any::<u64>(),
            forced in prop::collection::vec(prop::sample::select(FORBIDDEN_HEADS.to_vec()), 0..12),
            len in 0usize..5000,
        ) {
            let (_, client_leg) = respond_keyed(&client_frame, Some(&secret));
            let mut rng = Rigged { forced, inner: SmallRng::seed_from_u64(seed) };
            let (dc_frame, mut proxy_dc_leg) = initiate_fast(&mut rng, tag, dc, &client_leg.send_key);
            prop_assert!(!is_forbidden_frame(&dc_frame), "{:02x?}", &dc_frame[..8]);

            let (header, mut dc_side) = respond(&dc_frame, None);
            prop_assert_eq!(header, FrameHeader { tag, dc });

            // DC → proxy keystream == the client leg's proxy → client keystream.
            let mut from_dc = vec![0u8; len];
            dc_side.encrypt(&mut from_dc);
            let mut to_client = vec![0u8; len];
            let mut ours = client_leg.cipher;
            ours.encrypt(&mut to_client);
            prop_assert_eq!(&from_dc, &to_client);

            // Proxy → DC keeps its own key: the DC decrypts what we encrypt, and that stream
            // is not the client's download one.
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire = plain.clone();
            proxy_dc_leg.encrypt(&mut wire);
            dc_side.decrypt(&mut wire);
            prop_assert_eq!(&wire, &plain);
        }
    }
}
