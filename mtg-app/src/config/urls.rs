//! URL-shaped values: SOCKS5 upstreams (`[network] proxies`), the resolver (`[network] dns`),
//! block/allow list sources and the HTTPS pages doppelganger learns from (reference §2.1).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::values::Expected;

/// A SOCKS5 upstream: `socks5://[user[:password]@]host[:port]` (or `socks5h://`), port 1080
/// by default. Path and query are ignored, as in mtg v2. `Debug` and `Display` hide the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `true` for `socks5h://`: the proxy resolves hostnames.
    pub remote_dns: bool,
    /// Hostname or IP of the SOCKS server (IPv6 without brackets).
    pub host: String,
    /// Port of the SOCKS server.
    pub port: u16,
    /// User name (percent-decoded).
    pub user: Option<String>,
    /// Password (percent-decoded).
    pub password: Option<String>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("remote_dns", &self.remote_dns)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.remote_dns { "socks5h://" } else { "socks5://" })?;
        if let Some(user) = &self.user {
            write!(f, "{user}{}@", if self.password.is_some() { ":***" } else { "" })?;
        }
        write_host_port(f, &self.host, self.port)
    }
}

fn write_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') { write!(f, "[{host}]:{port}") } else { write!(f, "{host}:{port}") }
}

/// What a proxy URL must look like.
pub(super) const PROXY: Expected = "a socks5:// or socks5h:// URL like socks5://user:pass@127.0.0.1:1080";

/// Parses a `[network] proxies` entry.
pub(super) fn proxy_url(text: &str) -> Result<ProxyUrl, Expected> {
    let (scheme, rest) = split_scheme(text).ok_or(PROXY)?;
    let remote_dns = match scheme.as_str() {
        "socks5" => false,
        "socks5h" => true,
        _ => return Err(PROXY),
    };
    let (authority, _path) = split_authority(rest);
    let (userinfo, host_and_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, password) = match u.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (u, None),
            };
            let user = percent_decode(user).ok_or(PROXY)?;
            let password = password.map(percent_decode).map(|p| p.ok_or(PROXY)).transpose()?;
            (Some(user), password)
        }
    };
    let (host, port) = host_port(host_and_port, 1080).ok_or(PROXY)?;
    Ok(ProxyUrl { remote_dns, host, port, user, password })
}

/// A URL as written with the password in its user info replaced by `***`, for error messages.
pub fn redacted(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let start = scheme_end + 3;
    let authority_len = text[start..].find(['/', '?', '#']).unwrap_or(text.len() - start);
    let authority = &text[start..start + authority_len];
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return text.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:***@{host}{}", &text[..start], &text[start + authority_len..]),
        None => text.to_owned(),
    }
}

/// The resolver for the names the proxy resolves (`[network] dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    /// DNS over HTTPS: `https://host[:port][/path]`.
    Https {
        /// Hostname or IP (IPv6 without brackets).
        host: String,
        /// Port (443 by default).
        port: u16,
        /// Request path (`/dns-query` by default).
        path: String,
    },
    /// DNS over TLS: `tls://host[:port]`.
    Tls {
        /// Hostname or IP (IPv6 without brackets).
        host: String,
        /// Port (853 by default).
        port: u16,
    },
    /// Plain DNS over UDP: `udp://IP[:port]` or a bare IP (port 53 by default).
    Udp(SocketAddr),
}

impl Dns {
    /// DoH to a literal IP: what the deprecated `[network] doh-ip` means.
    pub fn https_ip(ip: IpAddr) -> Self {
        Self::Https { host: ip.to_string(), port: 443, path: DOH_PATH.to_owned() }
    }
}

impl fmt::Display for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Https { host, port, path } => {
                f.write_str("https://")?;
                write_host_port(f, host, *port)?;
                f.write_str(path)
            }
            Self::Tls { host, port } => {
                f.write_str("tls://")?;
                write_host_port(f, host, *port)
            }
            Self::Udp(addr) => write!(f, "udp://{addr}"),
        }
    }
}

const DOH_PATH: &str = "/dns-query";

/// What a resolver URI must look like.
pub(super) const DNS: Expected =
    "a DNS URI: https://host[/path], tls://host[:port], udp://IP[:port] or a bare IP";

/// Parses `[network] dns`.
pub(super) fn dns(text: &str) -> Result<Dns, Expected> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Dns::Udp(SocketAddr::new(ip, 53)));
    }
    let (scheme, rest) = split_scheme(t).ok_or(DNS)?;
    let (authority, path) = split_authority(rest);
    if authority.contains('@') {
        return Err(DNS);
    }
    let no_path = path.is_empty() || path == "/";
    match scheme.as_str() {
        "https" => {
            let (host, port) = host_port(authority, 443).ok_or(DNS)?;
            let path = path.split(['?', '#']).next().unwrap_or_default();
            let path = if path.is_empty() || path == "/" { DOH_PATH.to_owned() } else { path.to_owned() };
            Ok(Dns::Https { host, port, path })
        }
        "tls" if no_path => {
            let (host, port) = host_port(authority, 853).ok_or(DNS)?;
            Ok(Dns::Tls { host, port })
        }
        "udp" if no_path => {
            let (host, port) = host_port(authority, 53).ok_or(DNS)?;
            let ip: IpAddr = host.parse().map_err(|_| DNS)?;
            Ok(Dns::Udp(SocketAddr::new(ip, port)))
        }
        _ => Err(DNS),
    }
}

/// Where a block or allow list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// A local file (made absolute at load, as mtg does).
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
}

/// Parses a `[defense.blocklist]`/`[defense.allowlist]` `urls` entry: an existing readable
/// file, else an http(s) URL with a host.
pub(super) fn list_source(text: &str) -> Result<ListSource, Expected> {
    let t = text.trim();
    let path = Path::new(t);
    if !t.is_empty() && path.is_file() && std::fs::File::open(path).is_ok() {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        return Ok(ListSource::File(absolute));
    }
    match split_scheme(t) {
        Some((scheme, rest)) if (scheme == "http" || scheme == "https") && has_host(rest) => {
            Ok(ListSource::Url(t.to_owned()))
        }
        _ => Err("an existing readable file or an http(s):// URL"),
    }
}

/// Parses a `[defense.doppelganger] urls` entry: an `https://` URL with a host.
pub(super) fn https_url(text: &str) -> Result<String, Expected> {
    let t = text.trim();
    match split_scheme(t) {
        Some((scheme, rest)) if scheme == "https" && has_host(rest) => Ok(t.to_owned()),
        _ => Err("an https:// URL with a host"),
    }
}

/// `scheme://rest` with the scheme lowercased.
fn split_scheme(text: &str) -> Option<(String, &str)> {
    let (scheme, rest) = text.trim().split_once("://")?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| (scheme.to_ascii_lowercase(), rest))
}

/// Splits what follows `scheme://` into the authority and the path-query-fragment.
fn split_authority(rest: &str) -> (&str, &str) {
    rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()))
}

/// Whether the authority of `rest` (after `scheme://`) has a usable host.
fn has_host(rest: &str) -> bool {
    let (authority, _) = split_authority(rest);
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port(host_and_port, 1).is_some()
}

/// `host[:port]` or `[v6][:port]` with a non-zero port; the host without brackets.
fn host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    let port_of = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    if let Some(v6) = text.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let port = if rest.is_empty() { default_port } else { port_of(rest.strip_prefix(':')?)? };
        return Some((ip.to_owned(), port));
    }
    let (host, port) = match text.split_once(':') {
        Some((h, p)) => (h, port_of(p)?),
        None => (text, default_port),
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || "[]@:/?#".contains(c);
    if host.is_empty() || host.chars().any(bad) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies() {
        let p = proxy_url("socks5://u%40x:p%3Aw@127.0.0.1:1081/?ignored=1").expect("valid");
        assert_eq!(
            p,
            ProxyUrl {
                remote_dns: false,
                host: "127.0.0.1".into(),
                port: 1081,
                user: Some("u@x".into()),
                password: Some("p:w".into()),
            }
        );
        assert!(!format!("{p:?}{p}").contains("p:w"));
        assert_eq!(p.to_string(), "socks5://u@x:***@127.0.0.1:1081");
        let h = proxy_url("SOCKS5H://proxy.example").expect("valid");
        assert!(h.remote_dns);
        assert_eq!((h.host.as_str(), h.port, h.user), ("proxy.example", 1080, None));
        assert_eq!(proxy_url("socks5://[::1]:9050").expect("valid").host, "::1");
        for bad in
            ["", "http://127.0.0.1:8080", "socks5://", "socks5://:1080", "socks5://h:0", "socks5://h:x"]
        {
            assert_eq!(proxy_url(bad), Err(PROXY), "{bad}");
        }
        assert_eq!(proxy_url("socks5://u:%zz@h"), Err(PROXY));
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(redacted("http://user:pass@1.2.3.4:80/x"), "http://user:***@1.2.3.4:80/x");
        assert_eq!(redacted("socks5://user@h"), "socks5://user@h");
        assert_eq!(redacted("socks5://h:1080"), "socks5://h:1080");
        assert_eq!(redacted("no url"), "no url");
    }

    #[test]
    fn resolvers() {
        let https = |host: &str, port, path: &str| Dns::Https { host: host.into(), port, path: path.into() };
        assert_eq!(dns("https://1.1.1.1"), Ok(https("1.1.1.1", 443, "/dns-query")));
        assert_eq!(dns("https://dns.example:8443/q"), Ok(https("dns.example", 8443, "/q")));
        assert_eq!(dns("https://[2606:4700::1111]"), Ok(https("2606:4700::1111", 443, "/dns-query")));
        assert_eq!(dns("tls://dns.example"), Ok(Dns::Tls { host: "dns.example".into(), port: 853 }));
        assert_eq!(dns("udp://9.9.9.9:5353"), Ok(Dns::Udp("9.9.9.9:5353".parse().expect("literal"))));
        assert_eq!(dns("8.8.8.8"), Ok(Dns::Udp("8.8.8.8:53".parse().expect("literal"))));
        assert_eq!(dns("https://[::1]:8443/x").map(|d| d.to_string()), Ok("https://[::1]:8443/x".into()));
        assert_eq!(Dns::https_ip("1.1.1.1".parse().expect("literal")), https("1.1.1.1", 443, "/dns-query"));
        for bad in
            ["ftp://1.1.1.1", "udp://dns.example", "tls://h/path", "https://u@h", "https://", "dns.example"]
        {
            assert_eq!(dns(bad), Err(DNS), "{bad}");
        }
    }

    #[test]
    fn list_sources_and_https_urls() {
        assert_eq!(
            list_source("https://iplists.example/level1.netset"),
            Ok(ListSource::Url("https://iplists.example/level1.netset".into()))
        );
        let file = std::env::temp_dir().join(format!("mtg-config-list-{}.txt", std::process::id()));
        std::fs::write(&file, "10.0.0.0/8\n").expect("temp file");
        let parsed = list_source(file.to_str().expect("utf-8 path"));
        std::fs::remove_file(&file).expect("temp file");
        assert_eq!(parsed, Ok(ListSource::File(file)));
        assert!(list_source("/nonexistent/list.txt").is_err());
        assert!(list_source(&std::env::temp_dir().display().to_string()).is_err());
        assert!(list_source("https://").is_err());
        assert!(https_url("https://www.example.com/").is_ok());
        assert!(https_url("http://www.example.com/").is_err());
    }
}
