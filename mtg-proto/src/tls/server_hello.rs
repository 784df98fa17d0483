//! The server's answer flight: ServerHello + ChangeCipherSpec + one ApplicationData record,
//! authenticated by an HMAC written into the server random (reference §4.a), shaped after the
//! fronting site's flight once learning has seen it (`doppel::flight_shape`).

use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use super::client_hello::{ClientHello, RANDOM_LEN};
use super::record::{TYPE_APPLICATION_DATA, TYPE_CHANGE_CIPHER_SPEC, TYPE_HANDSHAKE, VERSION_TLS12};
use super::server_flight::{EXT_KEY_SHARE, EXT_SUPPORTED_VERSIONS, ExtensionOrder};
use crate::doppel::flight_shape::{
    FlightProfile, GROUP_X25519, GROUP_X25519_MLKEM768, PROBE_PREFERRED_SUITE,
};

/// Offset of the server random in the flight (5 record header + 4 handshake header + 2 version).
pub const SERVER_RANDOM_OFFSET: usize = 11;

/// The bounds of the fake "certificate" ApplicationData record's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppDataLen {
    /// Smallest length (inclusive).
    pub min: u16,
    /// Largest length (inclusive).
    pub max: u16,
}

impl Default for AppDataLen {
    /// mtg's uncalibrated range: uniform in [2500, 4699].
    fn default() -> Self {
        Self { min: 2500, max: 4699 }
    }
}

impl AppDataLen {
    /// The calibrated range mtg's doppelganger uses: [mean − jitter, mean + jitter) with a floor
    /// of 1000.
    pub fn calibrated(mean: u16, jitter: u16) -> Self {
        let min = mean.saturating_sub(jitter).max(1000);
        let max = mean.saturating_add(jitter).saturating_sub(1).max(min);
        Self { min, max }
    }

    fn pick(self, rng: &mut (impl RngCore + ?Sized)) -> usize {
        let (lo, hi) = (u32::from(self.min.min(self.max)), u32::from(self.max.max(self.min)));
        let span = hi - lo + 1;
        // Modulo bias over a 16-bit span from a 32-bit draw is below 2^-16: irrelevant here.
        (lo + rng.next_u32() % span) as usize
    }
}

/// Appends the whole server flight for a validated hello to `out` and signs it.
///
/// `mac_key` is the matched user's secret key. The ServerHello echoes the hello's session id;
/// its cipher suite, extension order and key share follow the learned `profile` where the
/// client offered what the site chose (else the client's first suite, supported_versions then
/// an X25519 key share; the client's first suite also when the site follows the client's
/// order, see [`PROBE_PREFERRED_SUITE`]). The one ApplicationData record is as long as the
/// site's encrypted flight, or drawn from `fallback` before anything was learned.
pub(crate) fn write_flight(
    out: &mut Vec<u8>,
    mac_key: &Hmac<Sha256>,
    hello: &ClientHello,
    profile: &FlightProfile,
    fallback: AppDataLen,
    rng: &mut (impl RngCore + ?Sized),
) {
    let shape = profile.for_hello(hello.kind());
    // A site that answered the probes with their first suite follows the client's order, so
    // each client gets its own first suite, as from the site; a site that chose another one
    // imposes its order, so its choice is copied when the client offers it.
    let cipher_suite = shape
        .map(|s| s.cipher_suite)
        .filter(|&c| c != PROBE_PREFERRED_SUITE && hello.offers_suite(c))
        .unwrap_or(hello.cipher_suite);
    let group = shape
        .and_then(|s| s.key_share)
        .map(|k| k.group)
        .filter(|&g| g == GROUP_X25519_MLKEM768 && hello.offers_key_share(g))
        .unwrap_or(GROUP_X25519);
    let key_len = if group == GROUP_X25519_MLKEM768 { MLKEM768_CIPHERTEXT_LEN + 32 } else { 32 };
    let order = extension_order(shape.map(|s| s.extensions));
    let session_id = hello.session_id();

    let start = out.len();
    let extensions_len = 6 + 8 + key_len;
    let body_len = 2 + RANDOM_LEN + 1 + session_id.len() + 2 + 1 + 2 + extensions_len;
    let record_len = 4 + body_len;
    out.push(TYPE_HANDSHAKE);
    out.extend_from_slice(&VERSION_TLS12);
    out.extend_from_slice(&(record_len as u16).to_be_bytes());
    out.push(0x02);
    out.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&VERSION_TLS12);
    out.extend_from_slice(&[0u8; RANDOM_LEN]);
    out.push(session_id.len() as u8);
    out.extend_from_slice(session_id);
    out.extend_from_slice(&cipher_suite.to_be_bytes());
    out.push(0x00);
    out.extend_from_slice(&(extensions_len as u16).to_be_bytes());
    for kind in order {
        out.extend_from_slice(&kind.to_be_bytes());
        if kind == EXT_SUPPORTED_VERSIONS {
            out.extend_from_slice(&[0x00, 0x02, 0x03, 0x04]);
        } else {
            out.extend_from_slice(&((4 + key_len) as u16).to_be_bytes());
            out.extend_from_slice(&group.to_be_bytes());
            out.extend_from_slice(&(key_len as u16).to_be_bytes());
            // X25519MLKEM768's server share is the ML-KEM ciphertext, then the X25519 key.
            let at = out.len();
            out.resize(at + key_len - 32, 0);
            rng.fill_bytes(&mut out[at..]);
            out.extend_from_slice(&x25519_public_key(rng));
        }
    }
    out.extend_from_slice(&[TYPE_CHANGE_CIPHER_SPEC, VERSION_TLS12[0], VERSION_TLS12[1], 0x00, 0x01, 0x01]);
    let n = match shape {
        Some(shape) => shape.draw_encrypted_len(rng),
        None => fallback.pick(rng),
    };
    out.push(TYPE_APPLICATION_DATA);
    out.extend_from_slice(&VERSION_TLS12);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    let body_start = out.len();
    out.resize(body_start + n, 0);
    rng.fill_bytes(&mut out[body_start..]);

    let digest = flight_digest(mac_key, &hello.random, &out[start..]);
    out[start + SERVER_RANDOM_OFFSET..start + SERVER_RANDOM_OFFSET + RANDOM_LEN].copy_from_slice(&digest);
}

/// Length of an ML-KEM-768 ciphertext (FIPS 203).
const MLKEM768_CIPHERTEXT_LEN: usize = 1088;

/// The order of the fake ServerHello's two extensions: as the site sent them, else
/// supported_versions first.
fn extension_order(learned: Option<ExtensionOrder>) -> [u16; 2] {
    let mut order = [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE];
    if let Some(learned) = learned {
        let mut known =
            learned.as_slice().iter().filter(|&&k| k == EXT_SUPPORTED_VERSIONS || k == EXT_KEY_SHARE);
        if let (Some(&first), Some(&second)) = (known.next(), known.next())
            && first != second
        {
            order = [first, second];
        }
    }
    order
}

/// `HMAC(key, client_random || flight)` where the flight's server random is zero.
pub(crate) fn flight_digest(
    mac_key: &Hmac<Sha256>,
    client_random: &[u8; RANDOM_LEN],
    flight: &[u8],
) -> [u8; 32] {
    let mut mac = mac_key.clone();
    mac.update(client_random);
    let split = SERVER_RANDOM_OFFSET.min(flight.len());
    mac.update(&flight[..split]);
    let after = (SERVER_RANDOM_OFFSET + RANDOM_LEN).min(flight.len());
    mac.update(&[0u8; RANDOM_LEN][..after - split]);
    mac.update(&flight[after..]);
    mac.finalize().into_bytes().into()
}

/// A public key of a fresh X25519 scalar, so the key share is a real curve point.
pub(crate) fn x25519_public_key(rng: &mut (impl RngCore + ?Sized)) -> [u8; 32] {
    let mut scalar = [0u8; 32];
    rng.fill_bytes(&mut scalar);
    let secret = StaticSecret::from(scalar);
    PublicKey::from(&secret).to_bytes()
}

/// Length of a complete server flight at the start of `input`: three records, of which the
/// first is a handshake, the second a ChangeCipherSpec and the third ApplicationData.
/// `Ok(None)` means more input is needed.
pub fn flight_len(input: &[u8]) -> Result<Option<usize>, FlightError> {
    let mut pos = 0;
    for expected in [TYPE_HANDSHAKE, TYPE_CHANGE_CIPHER_SPEC, TYPE_APPLICATION_DATA] {
        let Some(header) = input.get(pos..pos + 5) else {
            return Ok(None);
        };
        if header[0] != expected || header[1..3] != VERSION_TLS12 {
            return Err(FlightError::Unexpected);
        }
        pos += 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
    }
    Ok((input.len() >= pos).then_some(pos))
}

/// What is wrong with a server flight, as the client encoder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightError {
    /// The records are not ServerHello, ChangeCipherSpec, ApplicationData.
    Unexpected,
    /// The HMAC in the server random does not match: not our proxy, or not our secret.
    BadDigest,
}

impl core::fmt::Display for FlightError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Unexpected => "server flight is not ServerHello + ChangeCipherSpec + ApplicationData",
            Self::BadDigest => "server flight digest does not match the secret",
        })
    }
}

impl std::error::Error for FlightError {}
