//! Key derivation of a middle-proxy connection (C `aes_create_keys`).
//!
//! "Server" is the middle proxy, "client" is us. One byte string `S` is built from both
//! nonces, our nonce time, both addresses, a purpose and the proxy secret; then
//! `key = MD5(S[1..])[..12] ++ SHA1(S)` and `iv = MD5(S[2..])`. Our write direction uses the
//! purpose `CLIENT`, our read direction `SERVER`; the middle proxy mirrors that.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use md5::Md5;
use sha1::{Digest, Sha1};
use zeroize::Zeroize;

use crate::middle::proxy_secret::{MAX_LEN, ProxySecret};

/// Which direction a key is for, named from the middle proxy's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Client → middle proxy (our write key, its read key).
    Client,
    /// Middle proxy → client (our read key, its write key).
    Server,
}

impl Purpose {
    fn tag(self) -> &'static [u8; 6] {
        match self {
            Self::Client => b"CLIENT",
            Self::Server => b"SERVER",
        }
    }
}

/// The two addresses could not be used together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfError {
    /// One address is IPv4 and the other IPv6 (after unmapping IPv4-mapped IPv6).
    MixedFamilies {
        /// The client (our) address.
        client: SocketAddr,
        /// The middle proxy's address.
        server: SocketAddr,
    },
}

impl fmt::Display for KdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MixedFamilies { client, server } => write!(
                f,
                "middle-proxy key derivation needs one address family, got client {client} and middle proxy {server}"
            ),
        }
    }
}

impl std::error::Error for KdfError {}

/// The two socket addresses a connection's keys depend on, validated: same family, with
/// IPv4-mapped IPv6 addresses turned into IPv4.
///
/// * `client`: our end of the socket *as the middle proxy sees it* (the local address, with the
///   IP translated to the public one behind NAT; the port is always the local port).
/// * `server`: the middle proxy's address (for the middle proxy: its own local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    client: SocketAddr,
    server: SocketAddr,
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

impl Endpoints {
    /// Validates a pair of addresses.
    pub fn new(client: SocketAddr, server: SocketAddr) -> Result<Self, KdfError> {
        let (client, server) = (unmap(client), unmap(server));
        if client.is_ipv4() != server.is_ipv4() {
            return Err(KdfError::MixedFamilies { client, server });
        }
        Ok(Self { client, server })
    }

    /// Our address as the middle proxy sees it (normalised).
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The middle proxy's address (normalised).
    pub fn server(&self) -> SocketAddr {
        self.server
    }
}

/// Whether an address is one a NAT rewrites: IPv4 private (10/8, 172.16/12, 192.168/16) or
/// shared (CGNAT, 100.64/10); IPv6 unique-local (fc00::/7) or link-local (fe80::/10).
/// Loopback is never translated (so loopback tests work with a public IP configured).
pub fn is_translated(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// Our socket address as a peer on the Internet sees it: the IP replaced by the configured
/// public one (`public-ipv4` / `public-ipv6`) when [`is_translated`] says a NAT rewrites it,
/// unchanged otherwise (public, loopback, or no public IP configured). The port is kept: it
/// must be the socket's real local port (a NAT that rewrites ports cannot be fixed here).
/// IPv4-mapped IPv6 addresses are handled as IPv4.
pub fn as_seen_from_outside(
    local: SocketAddr,
    public_v4: Option<Ipv4Addr>,
    public_v6: Option<Ipv6Addr>,
) -> SocketAddr {
    let local = unmap(local);
    let public = match local.ip() {
        ip if !is_translated(ip) => None,
        IpAddr::V4(_) => public_v4.map(IpAddr::V4),
        IpAddr::V6(_) => public_v6.map(IpAddr::V6),
    };
    public.map_or(local, |ip| SocketAddr::new(ip, local.port()))
}

/// A derived AES-256 key and IV; zeroized on drop, never printed.
#[derive(Clone)]
pub struct KeyIv {
    key: [u8; 32],
    iv: [u8; 16],
}

impl Drop for KeyIv {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl fmt::Debug for KeyIv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyIv(<redacted>)")
    }
}

impl KeyIv {
    /// The 32-byte AES key.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The 16-byte CBC IV.
    pub fn iv(&self) -> &[u8; 16] {
        &self.iv
    }
}

/// Everything a derivation needs besides the purpose.
#[derive(Debug, Clone, Copy)]
pub struct KdfInput<'a> {
    /// The middle proxy's nonce (from its nonce frame).
    pub nonce_srv: &'a [u8; 16],
    /// Our nonce.
    pub nonce_clt: &'a [u8; 16],
    /// The `crypto_ts` of our nonce frame.
    pub clt_ts: u32,
    /// Both addresses.
    pub endpoints: &'a Endpoints,
    /// The proxy secret.
    pub secret: &'a ProxySecret,
}

/// Largest `S`: 54 fixed bytes, the secret, two nonces and two IPv6 addresses.
const S_MAX: usize = 54 + MAX_LEN + 16 + 32 + 16;

/// Derives the key and IV for one direction.
pub fn derive(input: &KdfInput<'_>, purpose: Purpose) -> KeyIv {
    let mut s = [0u8; S_MAX];
    let len = build_s(input, purpose, &mut s);
    let s_used = &s[..len];
    let mut md5_1 = Md5::digest(&s_used[1..]);
    let mut sha1 = Sha1::digest(s_used);
    let mut md5_2 = Md5::digest(&s_used[2..]);
    let mut out = KeyIv { key: [0; 32], iv: [0; 16] };
    out.key[..12].copy_from_slice(&md5_1[..12]);
    out.key[12..].copy_from_slice(&sha1);
    out.iv.copy_from_slice(&md5_2);
    // The digests are key bytes; `S` holds the secret. (The hashers' internal states are not
    // wiped: `md-5`/`sha1` 0.10 have no zeroize support.)
    s.zeroize();
    md5_1.as_mut_slice().zeroize();
    sha1.as_mut_slice().zeroize();
    md5_2.as_mut_slice().zeroize();
    out
}

/// Writes `S` into `s` and returns its length.
fn build_s(input: &KdfInput<'_>, purpose: Purpose, s: &mut [u8; S_MAX]) -> usize {
    let (client, server) = (input.endpoints.client, input.endpoints.server);
    // C keeps IPv4 addresses as host-order integers: the octets appear reversed.
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u32::from(v4).to_le_bytes(),
        IpAddr::V6(_) => [0; 4],
    };
    let mut w = Writer { s, at: 0 };
    w.put(input.nonce_srv);
    w.put(input.nonce_clt);
    w.put(&input.clt_ts.to_le_bytes());
    w.put(&v4(server.ip()));
    w.put(&client.port().to_le_bytes());
    w.put(purpose.tag());
    w.put(&v4(client.ip()));
    w.put(&server.port().to_le_bytes());
    w.put(input.secret.as_bytes());
    w.put(input.nonce_srv);
    if let (IpAddr::V6(c), IpAddr::V6(sv)) = (client.ip(), server.ip()) {
        w.put(&c.octets());
        w.put(&sv.octets());
    }
    w.put(input.nonce_clt);
    w.at
}

struct Writer<'a> {
    s: &'a mut [u8; S_MAX],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // The secret is at most MAX_LEN bytes, so `S` fits S_MAX by construction.
        self.s[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const SECRET: &str = "c4f9faca9678e6bb48ad6c7e2ce5c0d24430645d554addeb55419e034da62721
        d046eaab6e52ab14a95a443ecfb3463e79a05a66612adf9caeda8be9a80da698
        6fb0a6ff387af84d88ef3a6413713e5c3377f6e1a3d47d99f5e0c56eece8f05c
        54c490b079e31bef82ff0ee8f2b0a32756d249c5f21269816cb7061b265db212";

    fn vector(client: &str, server: &str) -> (ProxySecret, [u8; 16], [u8; 16], Endpoints) {
        let secret = ProxySecret::new(&hex(SECRET)).unwrap();
        let srv: [u8; 16] = hex("f728d238410c65aad89b0efdfaeedbe2").try_into().unwrap();
        let clt: [u8; 16] = hex("1831356fc60aebb4e6705c4e01c96a69").try_into().unwrap();
        let ep = Endpoints::new(client.parse().unwrap(), server.parse().unwrap()).unwrap();
        (secret, srv, clt, ep)
    }

    #[test]
    fn spec_vector_both_purposes() {
        let (secret, srv, clt, ep) = vector("80.211.29.34:54208", "149.154.162.38:80");
        let input = KdfInput {
            nonce_srv: &srv,
            nonce_clt: &clt,
            clt_ts: 1_528_396_015,
            endpoints: &ep,
            secret: &secret,
        };
        let mut s = [0; S_MAX];
        assert_eq!(build_s(&input, Purpose::Client, &mut s), 214);
        assert_eq!(
            s[..54],
            hex("f728d238410c65aad89b0efdfaeedbe2 1831356fc60aebb4e6705c4e01c96a69 ef78195b 26a29a95 c0d3
                 434c49454e54 221dd350 5000")[..]
        );
        let c = derive(&input, Purpose::Client);
        assert_eq!(c.key()[..], hex("a59e7f3129e8bb45261da3e2b7921c43e1e086bfcf98ffa69842a9c4368732bc"));
        assert_eq!(c.iv()[..], hex("216e7dddb779a07482b49cf9346f25b2"));
        let s = derive(&input, Purpose::Server);
        assert_eq!(s.key()[..], hex("5fc7a56a00cb18fb0c133453441c0d8cef56ffcbbf986fb4a7d4201fce64fa51"));
        assert_eq!(s.iv()[..], hex("4b295add3b3f5cf280e08876e8d29fbc"));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let (secret, srv, clt, ep) = vector("[::ffff:80.211.29.34]:54208", "[::ffff:149.154.162.38]:80");
        assert_eq!(ep.client(), "80.211.29.34:54208".parse().unwrap());
        let input = KdfInput {
            nonce_srv: &srv,
            nonce_clt: &clt,
            clt_ts: 1_528_396_015,
            endpoints: &ep,
            secret: &secret,
        };
        assert_eq!(
            derive(&input, Purpose::Client).key()[..],
            hex("a59e7f3129e8bb45261da3e2b7921c43e1e086bfcf98ffa69842a9c4368732bc")
        );
    }

    #[test]
    fn nat_translation_rule() {
        let v4 = Some("203.0.113.5".parse().unwrap());
        let v6 = Some("2001:db8::5".parse().unwrap());
        let seen = |local: &str| as_seen_from_outside(local.parse().unwrap(), v4, v6).to_string();
        assert_eq!(seen("10.1.2.3:4000"), "203.0.113.5:4000");
        assert_eq!(seen("172.31.0.1:4000"), "203.0.113.5:4000");
        assert_eq!(seen("192.168.96.2:4000"), "203.0.113.5:4000");
        assert_eq!(seen("100.64.0.1:4000"), "203.0.113.5:4000");
        assert_eq!(seen("[::ffff:10.0.0.1]:4000"), "203.0.113.5:4000");
        assert_eq!(seen("127.0.0.1:4000"), "127.0.0.1:4000", "loopback is never translated");
        assert_eq!(seen("198.51.100.9:4000"), "198.51.100.9:4000", "public stays");
        assert_eq!(seen("100.128.0.1:4000"), "100.128.0.1:4000");
        assert_eq!(seen("[fd00::1]:4000"), "[2001:db8::5]:4000");
        assert_eq!(seen("[::1]:4000"), "[::1]:4000");
        assert_eq!(as_seen_from_outside("10.0.0.1:1".parse().unwrap(), None, v6).to_string(), "10.0.0.1:1");
    }

    #[test]
    fn mixed_families_are_refused() {
        let e =
            Endpoints::new("1.2.3.4:5".parse().unwrap(), "[2001:db8::1]:80".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("one address family"), "{e}");
    }

    #[test]
    fn ipv6_layout() {
        let (secret, srv, clt, ep) = vector("[2001:db8::7]:40000", "[2001:67c:4e8:f002::a]:8888");
        let input = KdfInput {
            nonce_srv: &srv,
            nonce_clt: &clt,
            clt_ts: 0x0102_0304,
            endpoints: &ep,
            secret: &secret,
        };
        let mut s = [0; S_MAX];
        let len = build_s(&input, Purpose::Server, &mut s);
        assert_eq!(len, 246);
        assert_eq!(s[32..36], [4, 3, 2, 1]);
        assert_eq!(s[36..40], [0; 4], "srv_ip zero for IPv6");
        assert_eq!(s[40..42], 40000u16.to_le_bytes());
        assert_eq!(&s[42..48], b"SERVER");
        assert_eq!(s[48..52], [0; 4], "clt_ip zero for IPv6");
        assert_eq!(s[52..54], 8888u16.to_le_bytes());
        assert_eq!(s[54..182], hex(SECRET)[..]);
        assert_eq!(s[182..198], srv);
        assert_eq!(s[198..214], "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(s[214..230], "2001:67c:4e8:f002::a".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(s[230..246], clt);
        // The derivation is the hash recipe over exactly those bytes.
        let k = derive(&input, Purpose::Server);
        let mut want = Md5::digest(&s[1..len])[..12].to_vec();
        want.extend_from_slice(&Sha1::digest(&s[..len]));
        assert_eq!(k.key()[..], want[..]);
        assert_eq!(k.iv()[..], Md5::digest(&s[2..len])[..]);
    }
}
