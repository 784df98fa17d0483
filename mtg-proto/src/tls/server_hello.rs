//! The server's answer flight: ServerHello + ChangeCipherSpec + one ApplicationData record,
//! authenticated by an HMAC written into the server random (reference §4.a).

use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use super::client_hello::RANDOM_LEN;
use super::record::{TYPE_APPLICATION_DATA, TYPE_CHANGE_CIPHER_SPEC, TYPE_HANDSHAKE, VERSION_TLS12};

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
/// `key` is the matched user's secret key; `client_random` and `session_id` come from the
/// hello; `cipher_suite` is echoed.
pub(crate) fn write_flight(
    out: &mut Vec<u8>,
    mac_key: &Hmac<Sha256>,
    client_random: &[u8; RANDOM_LEN],
    session_id: &[u8],
    cipher_suite: u16,
    app_data: AppDataLen,
    rng: &mut (impl RngCore + ?Sized),
) {
    let start = out.len();
    let body_len = 2 + RANDOM_LEN + 1 + session_id.len() + 2 + 1 + 2 + 46;
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
    out.extend_from_slice(&[0x00, 0x2e]);
    out.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
    out.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    out.extend_from_slice(&x25519_public_key(rng));
    out.extend_from_slice(&[TYPE_CHANGE_CIPHER_SPEC, VERSION_TLS12[0], VERSION_TLS12[1], 0x00, 0x01, 0x01]);
    let n = app_data.pick(rng);
    out.push(TYPE_APPLICATION_DATA);
    out.extend_from_slice(&VERSION_TLS12);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    let body_start = out.len();
    out.resize(body_start + n, 0);
    rng.fill_bytes(&mut out[body_start..]);

    let digest = flight_digest(mac_key, client_random, &out[start..]);
    out[start + SERVER_RANDOM_OFFSET..start + SERVER_RANDOM_OFFSET + RANDOM_LEN].copy_from_slice(&digest);
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
fn x25519_public_key(rng: &mut (impl RngCore + ?Sized)) -> [u8; 32] {
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
