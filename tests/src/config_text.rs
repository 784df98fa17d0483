//! Config texts for the proxy under test: users, DC overrides to fake DCs, the fronting
//! target and the three timeouts, plus any extra top-level keys and tables.

use std::fmt::Write;
use std::net::SocketAddr;

use mtg_proto::Secret;

/// The timeouts of `[network.timeout]`, as Go durations (`"2s"`, `"300ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept until the client is authenticated.
    pub handshake: &'static str,
    /// Relay idle timeout.
    pub idle: &'static str,
    /// Outbound dial timeout.
    pub tcp: &'static str,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { handshake: "2s", idle: "30s", tcp: "2s" }
    }
}

/// A config listening on a free loopback port (see [`closed_port`]) for `users`, dialling `dcs`, fronting to `front`.
/// `top` goes before the first table (top-level keys), `tables` at the end.
pub fn proxy_config(
    users: &[(&str, &Secret)],
    dcs: &[(i16, SocketAddr)],
    front: SocketAddr,
    timeouts: Timeouts,
    top: &str,
    tables: &str,
) -> String {
    let mut text = format!("bind-to = \"{}\"\n{top}\n[secrets]\n", closed_port());
    for (name, secret) in users {
        let _ = writeln!(text, "{name} = \"{}\"", secret.to_hex());
    }
    let Timeouts { handshake, idle, tcp } = timeouts;
    let _ = write!(
        text,
        "[domain-fronting]\nhost = \"{}\"\nport = {}\n[network.timeout]\nhandshake = \"{handshake}\"\n\
         idle = \"{idle}\"\ntcp = \"{tcp}\"\n[network.dc-overrides]\n",
        front.ip(),
        front.port()
    );
    for (dc, addr) in dcs {
        let _ = writeln!(text, "{dc} = [\"{addr}\"]");
    }
    text.push_str(tables);
    text
}

/// A `[middle-proxy]` table whose sources are a closed loopback port: tests that give users
/// an ad tag add it, so the middle-proxy bootstrap never reaches for core.telegram.org.
pub const OFFLINE_MIDDLE_PROXY: &str = "[middle-proxy]\nsecret-url = \"http://127.0.0.1:1/getProxySecret\"\n\
     config-url = \"http://127.0.0.1:1/getProxyConfig\"\nconfig-url-v6 = \"http://127.0.0.1:1/getProxyConfigV6\"\n";

/// A deterministic byte pattern of `len` bytes that differs per `seed`.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// A loopback port nothing listens on now (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe address")
}

/// User number `n`'s FakeTLS secret for `host` (its key is `n` repeated).
pub fn numbered_user(n: u8, host: &str) -> Secret {
    Secret::fake_tls([n; 16], host).expect("a valid FakeTLS secret")
}

/// A config with the API on, `names` as users 1, 2, … ([`numbered_user`] for `host`), fronting
/// to `front_port` on 127.0.0.1, DC 2 at `dc`, then `extra` (tables).
pub fn users_config(names: &[&str], host: &str, dc: SocketAddr, front_port: u16, extra: &str) -> String {
    let mut text = String::from("bind-to = \"127.0.0.1:1\"\napi-bind-to = \"127.0.0.1:1\"\n[secrets]\n");
    for (i, name) in names.iter().enumerate() {
        let n = u8::try_from(i + 1).expect("at most 255 users");
        text.push_str(&format!("{name} = \"{}\"\n", numbered_user(n, host).to_hex()));
    }
    text.push_str(&format!(
        "[domain-fronting]\nhost = \"127.0.0.1\"\nport = {front_port}\n[network.dc-overrides]\n2 = [\"{dc}\"]\n{extra}"
    ));
    text
}
