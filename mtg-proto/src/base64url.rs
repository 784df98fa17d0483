//! Base64 with the URL-safe alphabet and no padding (RFC 4648 §5, "raw"), as secrets use.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Encodes `bytes` without padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

/// Decodes unpadded base64url into `out`; `None` on a bad character, a bad length, non-zero
/// trailing bits or when the result does not fit.
pub(crate) fn decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut written = 0;
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Canonical form only: the unused low bits of a short final chunk must be zero.
        if bytes[produced..].iter().any(|&b| b != 0) && chunk.len() < 4 {
            return None;
        }
        let dst = out.get_mut(written..written + produced)?;
        dst.copy_from_slice(&bytes[..produced]);
        written += produced;
    }
    Some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg");
        assert_eq!(encode(b"fo"), "Zm8");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        let mut out = [0u8; 8];
        assert_eq!(decode(b"Zm8", &mut out), Some(2));
        assert_eq!(&out[..2], b"fo");
        assert_eq!(decode(b"Zm9", &mut out), None, "non-canonical trailing bits");
        assert_eq!(decode(b"Z", &mut out), None);
        assert_eq!(decode(b"Zm8=", &mut out), None);
    }
}
