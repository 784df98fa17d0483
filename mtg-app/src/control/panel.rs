//! The built-in web panel on the API listener: one HTML page, its script and its style sheet,
//! embedded in the binary and served at `/`, `/panel.js` and `/panel.css` without a token
//! (they hold no data: the page asks for the token and sends it on its own API calls), with a
//! strict Content-Security-Policy (nothing from another origin, no inline script or style);
//! and `GET /secrets/NAME/links`: a user's share links with their QR codes as SVG, rendered
//! here, so the page never needs a third-party QR service or an `<img>` carrying the token.

use std::net::IpAddr;

use serde::Serialize;

use super::Control;
use super::http_server::{Response, StatusCode};
use super::management::ApiError;

/// The Content-Security-Policy of every answer of the API listener: the page may load its own
/// script and style, draw `data:`/`blob:` images and call its own origin, nothing else.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("panel/index.html");
const PANEL_JS: &str = include_str!("panel/panel.js");
const PANEL_CSS: &str = include_str!("panel/panel.css");

/// The panel asset at `path`, if it is one (`/`, `/index.html`, `/panel.js`, `/panel.css`).
pub(crate) fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/panel.js" => ("text/javascript; charset=utf-8", PANEL_JS),
        "/panel.css" => ("text/css; charset=utf-8", PANEL_CSS),
        _ => return None,
    };
    let mut response = Response::new(StatusCode::OK, content_type, body);
    response.insert_header("cache-control", "no-cache");
    Some(response)
}

/// Adds the security headers every answer of the API listener carries.
pub(crate) fn secure(mut response: Response) -> Response {
    response.insert_header("content-security-policy", CSP);
    response.insert_header("x-content-type-options", "nosniff");
    response.insert_header("referrer-policy", "no-referrer");
    response.insert_header("x-frame-options", "DENY");
    response
}

/// One address family's links of a user, with QR codes.
#[derive(Debug, Serialize)]
struct FamilyLinks {
    /// `ipv4` or `ipv6`.
    family: &'static str,
    /// The server address in the links.
    ip: String,
    /// The port in the links.
    port: u16,
    /// `tg://proxy?…`.
    tg_url: String,
    /// `https://t.me/proxy?…`.
    tme_url: String,
    /// The `tg://` link as an SVG QR code.
    tg_qr: String,
    /// The `t.me` link as an SVG QR code.
    tme_qr: String,
}

/// The body of `GET /secrets/NAME/links`.
#[derive(Debug, Serialize)]
struct UserLinks {
    name: String,
    links: Vec<FamilyLinks>,
    /// The bare key for @MTProxybot.
    secret_for_mtproxybot: String,
}

/// `GET /secrets/NAME/links`: the user's `tg://` and `t.me` links (as `mtg-multi access`
/// makes them: `public-ipv4`/`public-ipv6`, else the address in the request's `Host` when it
/// is a public one; the first `bind-to` port) and their QR codes in SVG.
pub(crate) fn links(
    control: &Control,
    name: &str,
    host: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let users = control.data.users();
    let Some(index) = users.names().iter().position(|n| n == name) else {
        return Err(ApiError { status: 404, message: format!("no user named {name:?}") });
    };
    let secret = &users.secrets()[index];
    let config = control.config();
    let mut addresses: Vec<IpAddr> = [config.public_ipv4.map(IpAddr::V4), config.public_ipv6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .collect();
    if addresses.is_empty()
        && let Some(ip) = host.and_then(host_ip).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    {
        addresses.push(ip);
    }
    if addresses.is_empty() {
        return Err(ApiError {
            status: 409,
            message: "no public address known: set public-ipv4 / public-ipv6 in the config".to_owned(),
        });
    }
    let port = config.bind_to.first().map_or(443, std::net::SocketAddr::port);
    let qr = |link: &str| crate::access::qr_svg(link).map_err(|message| ApiError { status: 500, message });
    let links = addresses
        .into_iter()
        .map(|ip| {
            let l = crate::access::links(ip, port, &secret.to_base64url());
            Ok(FamilyLinks {
                family: if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                tg_qr: qr(&l.tg_url)?,
                tme_qr: qr(&l.tme_url)?,
                ip: l.ip,
                port: l.port,
                tg_url: l.tg_url,
                tme_url: l.tme_url,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let body = UserLinks { name: name.to_owned(), links, secret_for_mtproxybot: secret.key_hex() };
    serde_json::to_value(body).map_err(|e| ApiError { status: 500, message: e.to_string() })
}

/// The IP address of a `Host` header value (`1.2.3.4`, `1.2.3.4:8080`, `[2001:db8::1]:8080`);
/// `None` for a name.
fn host_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_give_their_address() {
        assert_eq!(host_ip("203.0.113.7"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(host_ip("203.0.113.7:9000"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(host_ip("[2001:db8::1]:9000"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(host_ip("panel.example:9000"), None);
        assert_eq!(host_ip(""), None);
    }

    #[test]
    fn assets_are_served_with_their_types() {
        for (path, kind) in [("/", "text/html"), ("/panel.js", "text/javascript"), ("/panel.css", "text/css")]
        {
            let response = secure(asset(path).unwrap());
            let wire = format!("{response:?}");
            assert!(wire.contains(kind), "{wire}");
            assert!(wire.contains("frame-ancestors 'none'"), "{wire}");
        }
        assert!(asset("/secrets").is_none());
        // The page loads only its own files.
        assert!(INDEX_HTML.contains("src=\"panel.js\"") && INDEX_HTML.contains("href=\"panel.css\""));
        // No absolute URL anywhere but the SVG namespace name (an identifier, never fetched).
        let js = PANEL_JS.replace("'http://www.w3.org/2000/svg'", "");
        for text in [INDEX_HTML, &js, PANEL_CSS] {
            assert!(!text.contains("http:") && !text.contains("https:") && !text.contains("//cdn"));
        }
    }
}
