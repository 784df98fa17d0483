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

use crate::cipher::{Keystream, LegKeys};
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
    loop {
        rng.fill_bytes(&mut frame);
        if !is_forbidden_frame(&frame) {
            break;
        }
    }
    frame[56..60].copy_from_slice(&tag);
    frame[60..62].copy_from_slice(&dc.to_le_bytes());
    let keys = LegKeys::derive(&frame, secret);
    let mut cipher = LegCipher { send: keys.initiator_to_responder, recv: keys.responder_to_initiator };
    let mut encrypted = frame;
    cipher.send.apply(&mut encrypted);
    frame[56..].copy_from_slice(&encrypted[56..]);
    (frame, cipher)
}

/// Reads an initiator's frame as the responder: derives the keys, decrypts the tag and DC id.
///
/// Any 64 bytes give a header; whether the tag is acceptable is the caller's decision.
pub fn respond(frame: &[u8; FRAME_LEN], secret: Option<&[u8; KEY_LEN]>) -> (FrameHeader, LegCipher) {
    let keys = LegKeys::derive(frame, secret);
    let mut cipher = LegCipher { send: keys.responder_to_initiator, recv: keys.initiator_to_responder };
    let mut plain = *frame;
    cipher.recv.apply(&mut plain);
    let header = FrameHeader {
        tag: [plain[56], plain[57], plain[58], plain[59]],
        dc: i16::from_le_bytes([plain[60], plain[61]]),
    };
    (header, cipher)
}
