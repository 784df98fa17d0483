//! Middle-proxy mode (the "RPC" path that carries the ad tag): the pure protocol pieces.
//!
//! Client traffic goes to Telegram's middle proxies instead of a DC: the client's transport
//! packets are split out of its decrypted stream ([`transport`]), each is wrapped in an
//! `RPC_PROXY_REQ` with the ad tag ([`rpc`]), and the requests of many clients share one TCP
//! connection per middle proxy, framed ([`frame`]) and encrypted with AES-256-CBC ([`cbc`])
//! under keys derived from the proxy secret ([`kdf`], [`proxy_secret`]) after a nonce and
//! handshake exchange ([`handshake`]). Where to connect comes from the `getProxyConfig` text
//! ([`proxy_config`]). Sockets, clocks, fetching and the pool live in `mtg-app`.
//!
//! ```text
//!  MiddleHandshake::start(secret, now, endpoints, rng) ─► (hs, 44-byte nonce frame: send it)
//!  hs.feed(&mut input, out) ─► NeedMore(hs)        send `out` if not empty, read, feed again
//!                              Ready(connection)   send `out`; `input` keeps the unread rest
//!  connection.writer.batch(buf) ─► .proxy_req(..) / .close_conn(..) / .pong(..) … .finish()
//!                                  (frames, one padding run, CBC-encrypted in place)
//!  connection.reader.next(&mut input) ─► Some(payload) ─► rpc::decode_from_middle(payload)
//! ```
//!
//! Every parser here is total (no panic on any input) and buffers at most one frame or packet.
//! The per-packet paths (deframing, request encoding, answer decoding, CBC) allocate nothing
//! once the caller's reusable buffers and the deframers' own buffers have grown.
//! The protocol is described in the project's `spec/middle-proxy.md`.

pub mod cbc;
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod kdf;
pub mod proxy_config;
pub mod proxy_secret;
pub mod rpc;
pub mod transport;

pub use conn::{Batch, MiddleConnection, RpcReader, RpcWriter};
pub use frame::{EncodeError, FrameError, RpcDeframer};
pub use handshake::{ClientStep, HandshakeError, MiddleHandshake, MiddleServerHandshake, ServerStep};
pub use kdf::{Endpoints, KdfError, KeyIv, Purpose};
pub use proxy_config::{ConfigWarning, ParsedConfig, ProxyMap};
pub use proxy_secret::{ProxySecret, ProxySecretError};
pub use rpc::{DropReason, FromMiddle, ProxyReq, ProxyReqView, ToMiddle};
pub use transport::{Packet, Transport, TransportDeframer, TransportError};
