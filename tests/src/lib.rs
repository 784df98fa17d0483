//! Test infrastructure of mtg-multi: everything talks only to loopback.
//!
//! * [`bench`]: the load generator behind the `mtg-bench` binary.
//! * [`browser`]: headless chromium driven over the DevTools protocol (the web panel's tests).
//! * [`api_client`]: raw HTTP requests to the proxy's API.
//! * [`fake_dc`]: a fake Telegram datacenter (obfuscated2 leg without secret; echo, `resPQ`,
//!   refuse, reset, blackhole and sink modes).
//! * [`fake_middle`]: a fake Telegram middle proxy (handshake, records `RPC_PROXY_REQ`, answers
//!   `req_pq_multi` with `resPQ`, echoes, pings; hooks to close clients or itself, stall, refuse).
//! * [`capture`]: `tcpdump` on `lo` into a pcap file, and a reader of its TCP segments.
//! * [`fronting`]: a local HTTPS fronting website with a self-signed certificate.
//! * [`tls_site`]: a real OpenSSL `s_server` fronting site on loopback.
//! * [`flight_capture`]: a TLS server's first flight as an observer sees it, re-signing
//!   captured ClientHellos for a test user and checking the proxy's flight digest.
//! * [`dns_server`]: a tiny UDP DNS server answering made-up names (for `[network] dns`).
//! * [`socks_server`]: a real SOCKS5 server (`microsocks`) for `[network] proxies`.
//! * [`client`]: a Telegram-like client through the proxy (`ee` FakeTLS or `dd`).
//! * [`list_server`]: a local HTTP server for block/allow list sources.
//! * [`fake_bootstrap`]: a fake of Telegram's middle-proxy bootstrap (`getProxySecret`,
//!   `getProxyConfig`, `getProxyConfigV6`) with settable answers and request counters.
//! * [`mtproto`]: padded-intermediate framing, `req_pq_multi` and `resPQ`.
//! * [`proxy_under_test`]: the real proxy (mtg-app's engine) in this process, on the runtime
//!   the crate was built with (feature `tokio` or `smol`).
//! * [`netns`]: running a test in a loopback-only network namespace (real clients).
//! * [`recorder`]: a silent listener that records what a client sends first.
//! * [`runtime`]: the shared background tokio runtime the servers run on.
//! * [`proxy_process`]: the real proxy as a child process, with its RSS, descriptors, CPU time
//!   and log.
//! * [`config_text`]: config texts for the proxy under test.
//! * [`real_clients`]: running TDLib and Telethon (`tests/clients/*.py`) and reading results.

#![deny(missing_docs)]

pub mod api_client;
pub mod bench;
pub mod browser;
pub mod capture;
pub mod client;
pub mod config_text;
pub mod dns_server;
pub mod fake_bootstrap;
pub mod fake_dc;
pub mod fake_middle;
pub mod flight_capture;
pub mod fronting;
pub mod list_server;
pub mod mtproto;
pub mod netns;
pub mod proxy_process;
pub mod proxy_under_test;
pub mod real_clients;
pub mod recorder;
pub mod redis_server;
pub mod runtime;
pub mod socks_server;
pub mod temp_file;
pub mod tls_site;

pub use client::{EeOptions, ProxyClient};
pub use fake_dc::{DcConnection, DcMode, FakeDc};
pub use fronting::{FrontConnection, FrontingSite};

/// `Ok` for a loopback address, else an `InvalidInput` error: nothing in this crate dials
/// anywhere else.
pub fn ensure_loopback(addr: std::net::SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} is not a loopback address; tests only talk to loopback"),
        ))
    }
}
