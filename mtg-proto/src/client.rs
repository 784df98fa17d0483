//! The client side: what a Telegram app does through a FakeTLS (or `dd`) proxy. Used by the
//! tests, the fuzz targets, `doctor` and the load generator; never by the proxy itself.
//!
//! ```text
//! FakeTlsHello::build ──► ClientHello bytes ──► proxy
//!                  proxy ──► server flight ──► FakeTlsHello::verify_flight
//! ClientSession::start ──► obfuscated2 frame (in a record) ──► proxy
//! ClientSession::seal / open: payload both ways
//! ```

use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;

use crate::doppel::flight_shape::{GROUP_X25519_MLKEM768, HelloKind, PROBE_PREFERRED_SUITE};
use crate::obfs2::{self, FRAME_LEN, LegCipher, TAG_PADDED_INTERMEDIATE};
use crate::relay::Mode;
use crate::secret::{Secret, SecretKind};
use crate::tls::client_hello::{HelloRecords, RANDOM_LEN};
use crate::tls::record::{self, Deframer, HEADER_LEN, MAX_RECORD_PAYLOAD, RecordError};
use crate::tls::server_hello::{self, FlightError};

/// Total size of the hello record the builder pads to (what Chrome-era Telegram clients send).
pub const DEFAULT_HELLO_LEN: usize = 517;

/// A ClientHello built for a secret, remembering what verifying the answer needs.
pub struct FakeTlsHello {
    mac: Hmac<Sha256>,
    random: [u8; RANDOM_LEN],
    session_id: [u8; 32],
}

impl core::fmt::Debug for FakeTlsHello {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FakeTlsHello(..)")
    }
}

impl FakeTlsHello {
    /// Appends a Chrome-like ClientHello record for `secret` (its hostname as SNI) stamped with
    /// `unix_secs` to `out`, padded to [`DEFAULT_HELLO_LEN`] bytes.
    ///
    /// Returns `None` for a `dd` secret (no TLS there).
    pub fn build(
        secret: &Secret,
        unix_secs: u32,
        rng: &mut (impl RngCore + ?Sized),
        out: &mut Vec<u8>,
    ) -> Option<Self> {
        Self::build_with(secret, secret.host(), unix_secs, DEFAULT_HELLO_LEN, rng, out)
    }

    /// Like [`Self::build`] with a chosen SNI and total record length (grown as needed to fit).
    pub fn build_with(
        secret: &Secret,
        sni: &str,
        unix_secs: u32,
        total_len: usize,
        rng: &mut (impl RngCore + ?Sized),
        out: &mut Vec<u8>,
    ) -> Option<Self> {
        Self::build_kind(secret, sni, unix_secs, total_len, HelloKind::X25519, rng, out)
    }

    /// Like [`Self::build_with`] with the key shares of `kind` (X25519MLKEM768 and X25519, as
    /// current TDLib and browsers send, or X25519 alone).
    pub fn build_kind(
        secret: &Secret,
        sni: &str,
        unix_secs: u32,
        total_len: usize,
        kind: HelloKind,
        rng: &mut (impl RngCore + ?Sized),
        out: &mut Vec<u8>,
    ) -> Option<Self> {
        if secret.kind() != SecretKind::FakeTls {
            return None;
        }
        let mut session_id = [0u8; 32];
        rng.fill_bytes(&mut session_id);
        let start = out.len();
        write_hello(out, &session_id, sni, total_len, kind, rng);
        let mac = Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC accepts any key length");
        let records = HelloRecords::scan(&out[start..]).ok().flatten()?;
        let mut m = mac.clone();
        records.feed_canonical(&mut m);
        let digest = m.finalize().into_bytes();
        let mut random = [0u8; RANDOM_LEN];
        random.copy_from_slice(&digest);
        for (r, t) in random[28..].iter_mut().zip(unix_secs.to_le_bytes()) {
            *r ^= t;
        }
        let at = start + HEADER_LEN + 6;
        out[at..at + RANDOM_LEN].copy_from_slice(&random);
        Some(Self { mac, random, session_id })
    }

    /// The client random that was sent.
    pub fn random(&self) -> &[u8; RANDOM_LEN] {
        &self.random
    }

    /// The session id that was sent (the anti-replay key).
    pub fn session_id(&self) -> &[u8; 32] {
        &self.session_id
    }

    /// Checks the server flight at the start of `input`: `Ok(None)` if incomplete, else the
    /// flight length once its digest proves the proxy knows the secret.
    pub fn verify_flight(&self, input: &[u8]) -> Result<Option<usize>, FlightError> {
        let Some(len) = server_hello::flight_len(input)? else {
            return Ok(None);
        };
        let flight = &input[..len];
        let expected = server_hello::flight_digest(&self.mac, &self.random, flight);
        let got =
            &flight[server_hello::SERVER_RANDOM_OFFSET..server_hello::SERVER_RANDOM_OFFSET + RANDOM_LEN];
        if got != expected {
            return Err(FlightError::BadDigest);
        }
        Ok(Some(len))
    }
}

/// Appends a Chrome-like ClientHello of `kind` for `sni` with a random client random and
/// session id: what learning sends to the fronting site to see its first flight.
pub fn write_probe_hello(out: &mut Vec<u8>, sni: &str, kind: HelloKind, rng: &mut (impl RngCore + ?Sized)) {
    let mut session_id = [0u8; 32];
    rng.fill_bytes(&mut session_id);
    let start = out.len();
    write_hello(out, &session_id, sni, DEFAULT_HELLO_LEN, kind, rng);
    let at = start + HEADER_LEN + 6;
    rng.fill_bytes(&mut out[at..at + RANDOM_LEN]);
}

/// Splits one hello record into several records whose payloads have the given sizes (the last
/// piece takes the rest), as DPI-evasion tools do.
pub fn fragment_hello(record: &[u8], sizes: &[usize]) -> Vec<u8> {
    let payload = record.get(HEADER_LEN..).unwrap_or_default();
    let mut out = Vec::with_capacity(record.len() + HEADER_LEN * (sizes.len() + 1));
    let mut pos = 0;
    for &size in sizes {
        if pos >= payload.len() {
            break;
        }
        let end = (pos + size).min(payload.len());
        push_record(&mut out, 0x16, [3, 1], &payload[pos..end]);
        pos = end;
    }
    if pos < payload.len() || payload.is_empty() {
        push_record(&mut out, 0x16, [3, 1], &payload[pos..]);
    }
    out
}

fn push_record(out: &mut Vec<u8>, kind: u8, version: [u8; 2], payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&version);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The client's obfuscated2 session through the proxy.
#[derive(Debug)]
pub struct ClientSession {
    cipher: LegCipher,
    mode: Mode,
    deframer: Deframer,
}

impl ClientSession {
    /// Starts a session to `dc` with `secret`: appends what the client sends first to `out` (the
    /// ChangeCipherSpec and the frame in an ApplicationData record for `ee`, the bare frame for
    /// `dd`).
    pub fn start(secret: &Secret, dc: i16, rng: &mut (impl RngCore + ?Sized), out: &mut Vec<u8>) -> Self {
        Self::start_with_tag(secret, dc, TAG_PADDED_INTERMEDIATE, rng, out)
    }

    /// Like [`Self::start`] with another transport `tag` in the frame (`[0xef; 4]` abridged,
    /// `[0xee; 4]` intermediate), as clients other than Telegram's apps may send.
    pub fn start_with_tag(
        secret: &Secret,
        dc: i16,
        tag: [u8; 4],
        rng: &mut (impl RngCore + ?Sized),
        out: &mut Vec<u8>,
    ) -> Self {
        let (frame, cipher) = obfs2::initiate(rng, tag, dc, Some(secret.key()));
        let mode = match secret.kind() {
            SecretKind::FakeTls => {
                out.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
                push_record(out, record::TYPE_APPLICATION_DATA, record::VERSION_TLS12, &frame);
                Mode::FakeTls
            }
            SecretKind::Secured => {
                out.extend_from_slice(&frame);
                Mode::Secured
            }
        };
        Self { cipher, mode, deframer: Deframer::new() }
    }

    /// Like [`Self::start`] but returns the raw frame, for callers that frame it themselves.
    pub fn start_raw(secret: &Secret, dc: i16, rng: &mut (impl RngCore + ?Sized)) -> ([u8; FRAME_LEN], Self) {
        let (frame, cipher) = obfs2::initiate(rng, TAG_PADDED_INTERMEDIATE, dc, Some(secret.key()));
        let mode = if secret.kind() == SecretKind::FakeTls { Mode::FakeTls } else { Mode::Secured };
        (frame, Self { cipher, mode, deframer: Deframer::new() })
    }

    /// Encrypts `payload` and appends it to `out` (in records of at most 16379 bytes for `ee`).
    pub fn seal(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        match self.mode {
            Mode::FakeTls => {
                for chunk in payload.chunks(MAX_RECORD_PAYLOAD) {
                    let at = out.len() + HEADER_LEN;
                    push_record(out, record::TYPE_APPLICATION_DATA, record::VERSION_TLS12, chunk);
                    self.cipher.encrypt(&mut out[at..]);
                }
            }
            Mode::Secured => {
                let at = out.len();
                out.extend_from_slice(payload);
                self.cipher.encrypt(&mut out[at..]);
            }
        }
    }

    /// Encrypts `data` in place without framing (for pre-encrypted load-test payloads that the
    /// caller wraps itself).
    pub fn encrypt_in_place(&mut self, data: &mut [u8]) {
        self.cipher.encrypt(data);
    }

    /// Deframes (for `ee`) and decrypts bytes received from the proxy in place; returns where
    /// the payload lies in `buf`.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<core::ops::Range<usize>, RecordError> {
        let range = match self.mode {
            Mode::FakeTls => self.deframer.deframe_in_place(buf)?,
            Mode::Secured => 0..buf.len(),
        };
        self.cipher.decrypt(&mut buf[range.clone()]);
        Ok(range)
    }
}

/// Writes a ClientHello record modelled on Chrome's: TLS 1.3 suites after a GREASE value, SNI,
/// the key shares of `kind` and a padding extension to reach `total_len`.
fn write_hello(
    out: &mut Vec<u8>,
    session_id: &[u8; 32],
    sni: &str,
    total_len: usize,
    kind: HelloKind,
    rng: &mut (impl RngCore + ?Sized),
) {
    fn grease(rng: &mut (impl RngCore + ?Sized)) -> [u8; 2] {
        let b = (((rng.next_u32() % 16) as u8) << 4) | 0x0a;
        [b, b]
    }
    let mut body = Vec::with_capacity(total_len);
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[0u8; RANDOM_LEN]);
    body.push(32);
    body.extend_from_slice(session_id);
    let mut suites = Vec::new();
    suites.extend_from_slice(&grease(rng));
    suites.extend_from_slice(&PROBE_PREFERRED_SUITE.to_be_bytes());
    for s in [
        0x1302u16, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d,
        0x002f, 0x0035,
    ] {
        suites.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[0x01, 0x00]);

    let mut ext = Vec::new();
    let push_ext = |ext: &mut Vec<u8>, kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    let first_grease = grease(rng);
    push_ext(&mut ext, u16::from_be_bytes(first_grease), &[]);
    let name = sni.as_bytes();
    let mut sni_data = Vec::with_capacity(name.len() + 5);
    sni_data.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_data.push(0);
    sni_data.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_data.extend_from_slice(name);
    push_ext(&mut ext, 0x0000, &sni_data);
    push_ext(&mut ext, 0x0017, &[]);
    push_ext(&mut ext, 0xff01, &[0x00]);
    let g = grease(rng);
    let mlkem = kind == HelloKind::X25519MlKem768;
    let mut groups = vec![g[0], g[1]];
    if mlkem {
        groups.extend_from_slice(&GROUP_X25519_MLKEM768.to_be_bytes());
    }
    groups.extend_from_slice(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    let mut supported = (groups.len() as u16).to_be_bytes().to_vec();
    supported.extend_from_slice(&groups);
    push_ext(&mut ext, 0x000a, &supported);
    push_ext(&mut ext, 0x000b, &[0x01, 0x00]);
    push_ext(&mut ext, 0x0023, &[]);
    push_ext(&mut ext, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
    push_ext(&mut ext, 0x0005, &[0x01, 0x00, 0x00, 0x00, 0x00]);
    push_ext(
        &mut ext,
        0x000d,
        &[
            0x00, 0x10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01, 0x08, 0x06,
            0x06, 0x01,
        ],
    );
    push_ext(&mut ext, 0x0012, &[]);
    let mut shares = vec![g[0], g[1], 0x00, 0x01, 0x00];
    if mlkem {
        shares.extend_from_slice(&GROUP_X25519_MLKEM768.to_be_bytes());
        shares.extend_from_slice(&((MLKEM768_KEY_LEN + 32) as u16).to_be_bytes());
        write_mlkem768_key(&mut shares, rng);
        shares.extend_from_slice(&server_hello::x25519_public_key(rng));
    }
    shares.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
    shares.extend_from_slice(&server_hello::x25519_public_key(rng));
    let mut key_share = (shares.len() as u16).to_be_bytes().to_vec();
    key_share.extend_from_slice(&shares);
    push_ext(&mut ext, 0x0033, &key_share);
    push_ext(&mut ext, 0x002d, &[0x01, 0x01]);
    push_ext(&mut ext, 0x002b, &[0x06, g[0], g[1], 0x03, 0x04, 0x03, 0x03]);
    push_ext(&mut ext, 0x001b, &[0x02, 0x00, 0x02]);
    // Two extensions of one type make servers refuse the hello (rustls: illegal_parameter),
    // so the last GREASE extension differs from the first, as BoringSSL makes it.
    let mut last_grease = grease(rng);
    if last_grease == first_grease {
        last_grease = [last_grease[0] ^ 0x10, last_grease[1] ^ 0x10];
    }
    push_ext(&mut ext, u16::from_be_bytes(last_grease), &[0x00]);
    // Padding: record header 5 + handshake header 4 + body + 2 (extensions length) + 4.
    let used = HEADER_LEN + 4 + body.len() + 2 + ext.len() + 4;
    let pad = total_len.saturating_sub(used);
    push_ext(&mut ext, 0x0015, &vec![0u8; pad]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    out.push(0x16);
    out.extend_from_slice(&[0x03, 0x01]);
    out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
}

/// Length of an ML-KEM-768 encapsulation key (FIPS 203): 768 packed 12-bit coefficients + 32.
const MLKEM768_KEY_LEN: usize = 1184;

/// Appends an ML-KEM-768 encapsulation key that passes a server's modulus check: 768 random
/// coefficients below q = 3329, packed two per three bytes, then a random 32-byte seed. No
/// one holds its secret; the handshake it starts is never finished.
fn write_mlkem768_key(out: &mut Vec<u8>, rng: &mut (impl RngCore + ?Sized)) {
    const Q: u32 = 3329;
    fn coefficient(rng: &mut (impl RngCore + ?Sized)) -> u32 {
        loop {
            let c = rng.next_u32() & 0x0fff;
            if c < Q {
                return c;
            }
        }
    }
    for _ in 0..384 {
        let (a, b) = (coefficient(rng), coefficient(rng));
        out.extend_from_slice(&[a as u8, ((a >> 8) | ((b & 0x0f) << 4)) as u8, (b >> 4) as u8]);
    }
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    out.extend_from_slice(&seed);
}
