//! Reading a FakeTLS ClientHello: record reassembly, parsing and the canonical record that the
//! HMAC covers (reference §4.a). Everything here works on borrowed input and allocates nothing.

use core::fmt;

use hmac::Mac;

use super::record::{HEADER_LEN, TYPE_HANDSHAKE, VERSION_TLS10};
use crate::doppel::flight_shape::{GROUP_X25519_MLKEM768, HelloKind};

/// Most records a ClientHello may be split into (mtg aborts on the 12th).
pub const MAX_HELLO_RECORDS: usize = 11;
/// Most input bytes (headers included) a ClientHello may take; larger hellos are fronted.
pub const MAX_HELLO_LEN: usize = 16 * 1024;
/// Offset of the client random in the handshake message (type 1 + length 3 + version 2).
const RANDOM_OFFSET: usize = 6;
/// Length of the client random.
pub const RANDOM_LEN: usize = 32;
/// Most SNI names that map to configured hosts that one hello can carry forward.
pub const MAX_MATCHED_HOSTS: usize = 4;

/// Why bytes are not an acceptable ClientHello. All of these lead to domain fronting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloError {
    /// The first byte of a record is not `0x16` (not a TLS handshake).
    NotTls,
    /// A hello record's version is not `03 01`.
    BadRecordVersion,
    /// More than 11 records before the hello was complete.
    TooManyRecords,
    /// The handshake message is not a ClientHello.
    NotClientHello,
    /// The hello is larger than [`MAX_HELLO_LEN`].
    TooLarge,
    /// A length field points past its container, or a field is cut short.
    Malformed,
    /// The cipher suite list has no non-GREASE suite.
    NoCipherSuite,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotTls => "not a TLS handshake record",
            Self::BadRecordVersion => "ClientHello record version is not 0301",
            Self::TooManyRecords => "ClientHello split into more than 11 records",
            Self::NotClientHello => "handshake message is not a ClientHello",
            Self::TooLarge => "ClientHello is larger than 16 KiB",
            Self::Malformed => "ClientHello is malformed",
            Self::NoCipherSuite => "ClientHello offers no non-GREASE cipher suite",
        })
    }
}

impl std::error::Error for HelloError {}

/// The handshake message as it lies in the input: up to 11 record payloads.
#[derive(Debug, Clone, Copy)]
pub struct HelloRecords<'a> {
    parts: [&'a [u8]; MAX_HELLO_RECORDS],
    count: usize,
    /// Length of the ClientHello body (L of the handshake header).
    body_len: usize,
    /// Input bytes the hello records take, headers included.
    consumed: usize,
}

impl<'a> HelloRecords<'a> {
    /// Finds the ClientHello records at the start of `input`.
    ///
    /// `Ok(None)` means more input is needed; errors are decided from as few bytes as possible,
    /// so an HTTP request or garbage is refused on its first byte.
    pub fn scan(input: &'a [u8]) -> Result<Option<Self>, HelloError> {
        let mut parts: [&'a [u8]; MAX_HELLO_RECORDS] = [&[]; MAX_HELLO_RECORDS];
        let mut count = 0;
        let mut total = 0usize;
        let mut pos = 0usize;
        let mut needed: Option<usize> = None;
        loop {
            if let Some(needed) = needed
                && total >= needed
            {
                return Ok(Some(Self { parts, count, body_len: needed - 4, consumed: pos }));
            }
            if count == MAX_HELLO_RECORDS {
                return Err(HelloError::TooManyRecords);
            }
            // Errors are checked in the order of the bytes they depend on, so the verdict is the
            // same however the input arrives.
            let rest = &input[pos..];
            check_header_prefix(rest)?;
            let Some(header) = rest.get(..HEADER_LEN) else {
                return Ok(None);
            };
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if pos + HEADER_LEN + len > MAX_HELLO_LEN {
                return Err(HelloError::TooLarge);
            }
            if count == 0 && len > 0 && rest.get(HEADER_LEN).is_some_and(|&kind| kind != 0x01) {
                return Err(HelloError::NotClientHello);
            }
            let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                return Ok(None);
            };
            parts[count] = payload;
            count += 1;
            total += len;
            pos += HEADER_LEN + len;
            if needed.is_none() && total >= 4 {
                let stream = Stream { parts: &parts[..count], end: total };
                let mut head = [0u8; 4];
                stream.read(0, &mut head).ok_or(HelloError::Malformed)?;
                if head[0] != 0x01 {
                    return Err(HelloError::NotClientHello);
                }
                let body_len =
                    (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
                if body_len + 4 + HEADER_LEN > MAX_HELLO_LEN {
                    return Err(HelloError::TooLarge);
                }
                needed = Some(4 + body_len);
            }
        }
    }

    /// Input bytes the hello's records take (headers included).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    fn stream(&self) -> Stream<'_, 'a> {
        Stream { parts: &self.parts[..self.count], end: 4 + self.body_len }
    }

    /// Parses the hello body. `lookup_host` maps an SNI name to a configured host id.
    pub fn parse(
        &self,
        mut lookup_host: impl FnMut(&[u8]) -> Option<u32>,
    ) -> Result<ClientHello, HelloError> {
        let s = self.stream();
        let mut hello = ClientHello {
            random: [0; RANDOM_LEN],
            session_id: [0; 255],
            session_id_len: 0,
            cipher_suite: 0,
            tls13_suites: 0,
            key_shares: 0,
            hosts: [0; MAX_MATCHED_HOSTS],
            host_count: 0,
        };
        let mut pos = RANDOM_OFFSET;
        s.read(pos, &mut hello.random).ok_or(HelloError::Malformed)?;
        pos += RANDOM_LEN;
        let sid_len = usize::from(s.u8(pos)?);
        pos += 1;
        s.read(pos, &mut hello.session_id[..sid_len]).ok_or(HelloError::Malformed)?;
        hello.session_id_len = sid_len as u8;
        pos += sid_len;

        let suites_len = usize::from(s.u16(pos)?);
        pos += 2;
        if suites_len % 2 != 0 || pos + suites_len > s.end {
            return Err(HelloError::Malformed);
        }
        let suites_end = pos + suites_len;
        while pos < suites_end {
            let suite = s.u16(pos)?;
            pos += 2;
            if hello.cipher_suite == 0 && !is_grease(suite) {
                hello.cipher_suite = suite;
            }
            if let Some(bit) = tls13_suite_bit(suite) {
                hello.tls13_suites |= bit;
            }
        }
        if hello.cipher_suite == 0 {
            return Err(HelloError::NoCipherSuite);
        }
        let compression_len = usize::from(s.u8(pos)?);
        pos += 1 + compression_len;
        if pos > s.end {
            return Err(HelloError::Malformed);
        }
        if pos == s.end {
            return Ok(hello);
        }
        let extensions_len = usize::from(s.u16(pos)?);
        pos += 2;
        let extensions_end = pos + extensions_len;
        if extensions_end > s.end {
            return Err(HelloError::Malformed);
        }
        while pos < extensions_end {
            let kind = s.u16(pos)?;
            let len = usize::from(s.u16(pos + 2)?);
            pos += 4;
            let data_end = pos + len;
            if data_end > extensions_end {
                return Err(HelloError::Malformed);
            }
            if kind == 0x0000 {
                parse_server_names(&s, pos, data_end, &mut hello, &mut lookup_host)?;
            } else if kind == 0x0033 {
                hello.key_shares = key_share_groups(&s, pos, data_end);
            }
            pos = data_end;
        }
        Ok(hello)
    }

    /// Feeds the canonical single record with the client random zeroed into `mac`:
    /// `16 03 01 | u16(4+L) | 01 | u24(L) | body` (reference §4.a).
    pub fn feed_canonical(&self, mac: &mut impl Mac) {
        let record_len = u16::try_from(4 + self.body_len).unwrap_or(u16::MAX).to_be_bytes();
        let l = self.body_len.to_be_bytes();
        let n = l.len();
        mac.update(&[
            TYPE_HANDSHAKE,
            VERSION_TLS10[0],
            VERSION_TLS10[1],
            record_len[0],
            record_len[1],
            0x01,
            l[n - 3],
            l[n - 2],
            l[n - 1],
        ]);
        let end = 4 + self.body_len;
        let zero_from = RANDOM_OFFSET;
        let zero_to = RANDOM_OFFSET + RANDOM_LEN;
        let mut offset = 0;
        for part in &self.parts[..self.count] {
            let start = offset;
            let stop = (offset + part.len()).min(end);
            offset += part.len();
            // The handshake header (stream bytes 0..4) was written above in canonical form.
            let from = start.max(4);
            if from >= stop {
                continue;
            }
            let mut cur = from;
            while cur < stop {
                if cur < zero_from {
                    let upto = stop.min(zero_from);
                    mac.update(&part[cur - start..upto - start]);
                    cur = upto;
                } else if cur < zero_to {
                    let upto = stop.min(zero_to);
                    mac.update(&[0u8; RANDOM_LEN][..upto - cur]);
                    cur = upto;
                } else {
                    mac.update(&part[cur - start..stop - start]);
                    cur = stop;
                }
            }
        }
    }
}

fn check_header_prefix(rest: &[u8]) -> Result<(), HelloError> {
    if rest.first().is_some_and(|&kind| kind != TYPE_HANDSHAKE) {
        return Err(HelloError::NotTls);
    }
    for (i, want) in VERSION_TLS10.iter().enumerate() {
        if rest.get(1 + i).is_some_and(|b| b != want) {
            return Err(HelloError::BadRecordVersion);
        }
    }
    Ok(())
}

fn parse_server_names(
    s: &Stream<'_, '_>,
    mut pos: usize,
    end: usize,
    hello: &mut ClientHello,
    lookup_host: &mut impl FnMut(&[u8]) -> Option<u32>,
) -> Result<(), HelloError> {
    let list_len = usize::from(s.u16(pos)?);
    pos += 2;
    if pos + list_len > end {
        return Err(HelloError::Malformed);
    }
    let list_end = pos + list_len;
    let mut name = [0u8; 255];
    while pos < list_end {
        let name_type = s.u8(pos)?;
        let len = usize::from(s.u16(pos + 1)?);
        pos += 3;
        if pos + len > list_end {
            return Err(HelloError::Malformed);
        }
        if name_type == 0 && len <= name.len() {
            s.read(pos, &mut name[..len]).ok_or(HelloError::Malformed)?;
            if let Some(host) = lookup_host(&name[..len]) {
                hello.add_host(host);
            }
        }
        pos += len;
    }
    Ok(())
}

/// The bit of a TLS 1.3 cipher suite (`0x1301` to `0x1305`) in [`ClientHello`]'s set.
fn tls13_suite_bit(suite: u16) -> Option<u8> {
    (0x1301..=0x1305).contains(&suite).then(|| 1 << (suite - 0x1301))
}

/// The groups the proxy can answer a key share for, by bit.
const KEY_SHARE_GROUPS: [u16; 2] = [0x001d, 0x11ec];

/// The known groups of the client's `key_share` entries, as bits of [`KEY_SHARE_GROUPS`]. Lenient:
/// a malformed list ends the scan (the hello is judged by its digest, not by this).
fn key_share_groups(s: &Stream<'_, '_>, pos: usize, end: usize) -> u8 {
    let mut bits = 0;
    let mut pos = pos + 2;
    while pos + 4 <= end {
        let (Ok(group), Ok(len)) = (s.u16(pos), s.u16(pos + 2)) else {
            break;
        };
        if let Some(i) = KEY_SHARE_GROUPS.iter().position(|&g| g == group) {
            bits |= 1 << i;
        }
        pos += 4 + usize::from(len);
    }
    bits
}

/// GREASE values look like `0x?a?a` (RFC 8701); the test is mtg's `(v & 0x0f0f) == 0x0a0a`.
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a
}

/// The logical handshake stream over the record payloads.
struct Stream<'p, 'a> {
    parts: &'p [&'a [u8]],
    end: usize,
}

impl Stream<'_, '_> {
    /// Copies `out.len()` bytes from logical offset `pos`; `None` past the end.
    fn read(&self, mut pos: usize, out: &mut [u8]) -> Option<()> {
        if pos.checked_add(out.len())? > self.end {
            return None;
        }
        let mut written = 0;
        for part in self.parts {
            if written == out.len() {
                break;
            }
            if pos >= part.len() {
                pos -= part.len();
                continue;
            }
            let n = (part.len() - pos).min(out.len() - written);
            out[written..written + n].copy_from_slice(&part[pos..pos + n]);
            written += n;
            pos = 0;
        }
        (written == out.len()).then_some(())
    }

    fn u8(&self, pos: usize) -> Result<u8, HelloError> {
        let mut b = [0u8; 1];
        self.read(pos, &mut b).ok_or(HelloError::Malformed)?;
        Ok(b[0])
    }

    fn u16(&self, pos: usize) -> Result<u16, HelloError> {
        let mut b = [0u8; 2];
        self.read(pos, &mut b).ok_or(HelloError::Malformed)?;
        Ok(u16::from_be_bytes(b))
    }
}

/// The fields of a ClientHello the proxy uses.
#[derive(Clone)]
pub struct ClientHello {
    /// The 32-byte client random as sent (digest XOR timestamp for a FakeTLS client).
    pub random: [u8; RANDOM_LEN],
    session_id: [u8; 255],
    session_id_len: u8,
    /// The first non-GREASE cipher suite, echoed in the ServerHello unless a learned flight
    /// shape names another one the client offers.
    pub cipher_suite: u16,
    /// TLS 1.3 suites offered: bit `n` is `0x1301 + n`.
    tls13_suites: u8,
    /// Key share groups offered, as bits of [`KEY_SHARE_GROUPS`].
    key_shares: u8,
    hosts: [u32; MAX_MATCHED_HOSTS],
    host_count: u8,
}

impl fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHello")
            .field("session_id_len", &self.session_id_len)
            .field("cipher_suite", &self.cipher_suite)
            .field("hosts", &self.hosts())
            .finish_non_exhaustive()
    }
}

impl ClientHello {
    /// The session id (the anti-replay key), 0 to 255 bytes.
    pub fn session_id(&self) -> &[u8] {
        &self.session_id[..usize::from(self.session_id_len)]
    }

    /// Whether the hello offers the TLS 1.3 cipher suite `suite`.
    pub fn offers_suite(&self, suite: u16) -> bool {
        tls13_suite_bit(suite).is_some_and(|bit| self.tls13_suites & bit != 0)
    }

    /// Whether the hello carries a key share for `group` (X25519 or X25519MLKEM768; other
    /// groups are not tracked and give `false`).
    pub fn offers_key_share(&self, group: u16) -> bool {
        KEY_SHARE_GROUPS.iter().position(|&g| g == group).is_some_and(|i| self.key_shares & (1 << i) != 0)
    }

    /// Which kind of hello this is, for picking a learned flight shape.
    pub fn kind(&self) -> HelloKind {
        if self.offers_key_share(GROUP_X25519_MLKEM768) {
            HelloKind::X25519MlKem768
        } else {
            HelloKind::X25519
        }
    }

    /// Configured host ids named in the SNI extension, ascending, without duplicates.
    pub fn hosts(&self) -> &[u32] {
        &self.hosts[..usize::from(self.host_count)]
    }

    fn add_host(&mut self, host: u32) {
        let hosts = self.hosts();
        if hosts.contains(&host) || hosts.len() == MAX_MATCHED_HOSTS {
            return;
        }
        let count = usize::from(self.host_count);
        self.hosts[count] = host;
        self.host_count += 1;
        self.hosts[..=count].sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_do_not_depend_on_how_much_arrived() {
        // Found by the `faketls` fuzz target: an oversized first record followed by a non-hello
        // byte was `TooLarge` in one chunking and `NotClientHello` in another.
        let input = [0x16, 0x03, 0x01, 0xff, 0xff, 0xff, 0x16];
        for end in 5..=input.len() {
            assert_eq!(HelloRecords::scan(&input[..end]).err(), Some(HelloError::TooLarge), "{end} bytes");
        }
        assert!(matches!(HelloRecords::scan(&input[..4]), Ok(None)));
    }
}
