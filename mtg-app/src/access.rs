//! `mtg-multi access CONFIG`: the share links. mtg's JSON (`ipv4`/`ipv6` with `tg://` and
//! `https://t.me/proxy` links, `secret`, `secrets`), plus links for every user under `users`
//! with what registering with @MTProxybot takes (`secret_for_mtproxybot`: the bare 16-byte key
//! as 32 hex, as mtg v1 printed it; `ad_tag`: the tag the user's sessions get, when set), and
//! with `--qr` each link as a QR code drawn in the terminal (rendered locally).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mtg_proto::Secret;
use serde::Serialize;

use crate::config::Config;

/// What `access` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// `--ipv4`, else `public-ipv4`.
    pub ipv4: Option<IpAddr>,
    /// `--ipv6`, else `public-ipv6`.
    pub ipv6: Option<IpAddr>,
    /// `--port`, else the first `bind-to` port.
    pub port: Option<u16>,
    /// `--hex`: links carry the hex secret instead of base64url.
    pub hex: bool,
}

/// Links for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Links {
    /// The server address in the links.
    pub ip: String,
    /// The port in the links.
    pub port: u16,
    /// `tg://proxy?…`.
    pub tg_url: String,
    /// `https://t.me/proxy?…`.
    pub tme_url: String,
}

/// Both text forms of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretForms {
    /// Hex.
    pub hex: String,
    /// Unpadded base64url.
    pub base64: String,
}

/// One user's links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserLinks {
    /// IPv4 links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Links>,
    /// IPv6 links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Links>,
    /// The bare 16-byte key as 32 hex (no `ee`/`dd` prefix, no hostname): what @MTProxybot
    /// asks for when registering the proxy.
    pub secret_for_mtproxybot: String,
    /// The user's effective ad tag (its `[secret-ad-tags]` entry, else `ad-tag`); absent when
    /// none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_tag: Option<String>,
}

/// The `access` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// Links of the alphabetically first user over IPv4 (as mtg-multi).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Links>,
    /// The same over IPv6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Links>,
    /// The first user's secret.
    pub secret: SecretForms,
    /// The first user's bare key for @MTProxybot (mtg v1's field).
    pub secret_for_mtproxybot: String,
    /// Every user's secret, when there is more than one (as mtg-multi).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, SecretForms>>,
    /// Every user's links.
    pub users: BTreeMap<String, UserLinks>,
}

/// URL query encoding of a value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The links of one secret text (hex or base64url) for a server address and port.
pub(crate) fn links(ip: IpAddr, port: u16, secret: &str) -> Links {
    // Query keys in alphabetical order, as mtg.
    let query = format!("port={port}&secret={}&server={}", encode(secret), encode(&ip.to_string()));
    Links {
        ip: ip.to_string(),
        port,
        tg_url: format!("tg://proxy?{query}"),
        tme_url: format!("https://t.me/proxy?{query}"),
    }
}

fn forms(secret: &Secret) -> SecretForms {
    SecretForms { hex: secret.to_hex(), base64: secret.to_base64url() }
}

/// Builds the links; an error says which flag or key would give a public address.
pub fn access(config: &Config, options: &AccessOptions) -> Result<Access, String> {
    let ipv4 = options.ipv4.or(config.public_ipv4.map(IpAddr::V4));
    let ipv6 = options.ipv6.or(config.public_ipv6.map(IpAddr::V6));
    if ipv4.is_none() && ipv6.is_none() {
        return Err(
            "no public address known: pass --ipv4 IP and/or --ipv6 IP, or set public-ipv4 / public-ipv6 in the config"
                .to_owned(),
        );
    }
    let port = options.port.or(config.bind_to.first().map(std::net::SocketAddr::port)).unwrap_or(443);
    let text = |s: &Secret| if options.hex { s.to_hex() } else { s.to_base64url() };
    let users: BTreeMap<String, UserLinks> = config
        .users
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                UserLinks {
                    ipv4: ipv4.map(|ip| links(ip, port, &text(s))),
                    ipv6: ipv6.map(|ip| links(ip, port, &text(s))),
                    secret_for_mtproxybot: s.key_hex(),
                    ad_tag: config.effective_ad_tag(name).map(|t| t.to_hex()),
                },
            )
        })
        .collect();
    let (first_name, first) = config.users.iter().next().ok_or("the config has no users")?;
    let first_links = &users[first_name];
    Ok(Access {
        ipv4: first_links.ipv4.clone(),
        ipv6: first_links.ipv6.clone(),
        secret: forms(first),
        secret_for_mtproxybot: first.key_hex(),
        secrets: (config.users.len() > 1)
            .then(|| config.users.iter().map(|(n, s)| (n.clone(), forms(s))).collect()),
        users,
    })
}

/// [`access`], asking <https://ifconfig.co> for our addresses (both families at once, within
/// `[network.timeout] http`) when neither the options nor the config give one; when that fails
/// too, the error names the flags and keys and why detection failed.
pub fn access_detecting(config: &Config, options: &AccessOptions) -> Result<Access, String> {
    let known_v4 = options.ipv4.or(config.public_ipv4.map(IpAddr::V4));
    let known_v6 = options.ipv6.or(config.public_ipv6.map(IpAddr::V6));
    let found = crate::public_ip::known_or_detected(
        known_v4,
        known_v6,
        crate::public_ip::DETECT_URL,
        config.network.timeout.http,
    );
    let detected = AccessOptions { ipv4: found.ipv4, ipv6: found.ipv6, ..options.clone() };
    access(config, &detected).map_err(|e| {
        if found.errors.is_empty() {
            e
        } else {
            format!("{e} (detection failed: {})", found.errors.join("; "))
        }
    })
}

/// A link as a QR code drawn with Unicode half blocks (two modules per character row).
pub fn qr_text(link: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(link.as_bytes()).map_err(|e| format!("cannot make a QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// A link as a QR code in SVG (rendered locally): a white square with a 4-module quiet zone
/// and one path of 1×1 dark modules, `M{x} {y}h1v1h-1z` each, in module units.
pub fn qr_svg(link: &str) -> Result<String, String> {
    use std::fmt::Write;
    let (width, dark) = qr_modules(link)?;
    let side = width + 8;
    let mut path = String::with_capacity(dark.len() * 8);
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let _ = write!(path, "M{} {}h1v1h-1z", i % width + 4, i / width + 4);
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

/// The QR modules of a link (`true` = dark), row by row, for tests and other renderers.
pub fn qr_modules(link: &str) -> Result<(usize, Vec<bool>), String> {
    let code = qrcode::QrCode::new(link.as_bytes()).map_err(|e| format!("cannot make a QR code: {e}"))?;
    let colors = code.to_colors();
    Ok((code.width(), colors.into_iter().map(|c| c == qrcode::Color::Dark).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_its_bare_key_and_its_effective_tag() {
        let text = "bind-to = \"127.0.0.1:443\"\npublic-ipv4 = \"203.0.113.10\"\n\
                    ad-tag = \"0123456789abcdef0123456789abcdef\"\n[secrets]\n\
                    alice = \"ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d\"\n\
                    bob = \"ee473ce5d4958eb5f968c87680a23854a0676f6f676c652e636f6d\"\n\
                    [secret-ad-tags]\nbob = \"FEDCBA9876543210FEDCBA9876543210\"\n";
        let config = Config::from_toml_str(text).unwrap().config;
        let out = access(&config, &AccessOptions::default()).unwrap();
        assert_eq!(out.secret_for_mtproxybot, "367a189aee18fa31c190054efd4a8e95");
        let alice = &out.users["alice"];
        assert_eq!(alice.secret_for_mtproxybot, "367a189aee18fa31c190054efd4a8e95");
        assert_eq!(alice.ad_tag.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        let bob = &out.users["bob"];
        assert_eq!(bob.secret_for_mtproxybot, "473ce5d4958eb5f968c87680a23854a0");
        assert_eq!(bob.ad_tag.as_deref(), Some("fedcba9876543210fedcba9876543210"));
        // Without a tag the field is left out; the bare key is always there.
        let untagged = Config::from_toml_str(&text.replace("\nad-tag =", "\n# ad-tag =")).unwrap().config;
        let json = serde_json::to_value(access(&untagged, &AccessOptions::default()).unwrap()).unwrap();
        assert_eq!(json["users"]["alice"].get("ad_tag"), None);
        assert_eq!(json["users"]["alice"]["secret_for_mtproxybot"], "367a189aee18fa31c190054efd4a8e95");
        assert_eq!(json["users"]["bob"]["ad_tag"], "fedcba9876543210fedcba9876543210");
    }

    #[test]
    fn qr_decodes_back_to_the_link() {
        let link = "tg://proxy?port=443&secret=7ibaERuTSGPH1RdztfYnN4tnb29nbGUuY29t&server=203.0.113.10";
        let (width, dark) = qr_modules(link).unwrap();
        // Draw it with a 4-module quiet zone at 4 pixels per module, then decode.
        let scale = 4;
        let side = (width + 8) * scale;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            let (mx, my) = ((x / scale) as isize - 4, (y / scale) as isize - 4);
            let inside = mx >= 0 && my >= 0 && (mx as usize) < width && (my as usize) < width;
            if inside && dark[my as usize * width + mx as usize] { 0 } else { 255 }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, link);
        assert!(qr_text(link).unwrap().lines().count() > 10);
        let svg = qr_svg(link).unwrap();
        let side = width + 8;
        assert!(svg.starts_with("<svg ") && svg.contains(&format!("viewBox=\"0 0 {side} {side}\"")), "{svg}");
        assert_eq!(svg.matches("h1v1h-1z").count(), dark.iter().filter(|d| **d).count());
    }
}
