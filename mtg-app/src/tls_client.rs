//! The one way the proxy builds a TLS client (DNS over TLS/HTTPS, doppelganger raids): rustls
//! over the ring provider with its safe default versions.

use std::sync::Arc;

/// TLS client settings over the ring provider, trusting `roots`, offering `alpn` (if any).
pub fn client_config(roots: rustls::RootCertStore, alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(mut config) => {
            config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
            Arc::new(config)
        }
        // The ring provider supports the default versions; this cannot happen.
        Err(e) => unreachable!("ring supports TLS 1.2 and 1.3: {e}"),
    }
}

/// Trusts the web's root certificates (webpki-roots), normal verification.
pub fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}
