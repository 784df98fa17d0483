//! # mtg-proto: the sans-IO core of the mtg-multi MTProto proxy
//!
//! This crate owns no sockets, clocks, threads, tasks or global RNG. Bytes, the current time
//! and an [`rand_core::RngCore`] are passed in; verdicts, bytes to write and byte counts come
//! out. The runtime adapters (`mtg-runtime-tokio`, `mtg-runtime-smol`) drive it.
//!
//! ## The drive loop
//!
//! ```text
//!   client socket                 mtg-proto                         DC socket
//!   ─────────────                 ─────────                         ─────────
//!   read ──► buf ──► ServerHandshake::handle_input(buf, ctx, out) ─► Verdict
//!                      NeedMore     → read more, call again with the whole buf
//!                      ServerHello  → write `out` to the client (app may refuse: front)
//!                      Front        → dial fronting site, write buf, splice
//!                      Reject       → close
//!                      Accepted     → into_session(dc) ─► (Session, dc_frame)
//!                                                         dial DC, write dc_frame
//!   buf[consumed..] and every later read:
//!        ──► ClientToDc::process(chunk) ─────────────────────────────► write
//!   write ◄── DcToClient::process(buf, n) ◄── read into buf[HEADROOM..]
//! ```
//!
//! Contract:
//! * `handle_input` always receives *all* bytes read so far from the client (the buffer only
//!   grows); the core remembers how far it looked. On `Front`, the caller replays exactly that
//!   buffer. The core never holds a copy of it, so a probe costs no allocation here.
//! * The two relay halves are independent (`Send`, no shared state): run them as two tasks or
//!   in one select loop. Each transforms in place and allocates nothing.
//! * Time is a [`core::time::Duration`] since the Unix epoch; randomness is an `RngCore`.
//!   Deadlines (handshake, idle) are the adapter's: the core has no timers.
//!
//! ## Modules
//! * [`secret`]: `ee`/`dd` secrets and their text forms.
//! * [`users`]: the user table, SNI index and digest search.
//! * [`tls`]: ClientHello parsing, the server flight, record framing.
//! * [`obfs2`]: the obfuscated2 frame and keys of both legs.
//! * [`handshake`]: the server handshake verdict machine.
//! * [`relay`]: the two relay halves.
//! * [`replay`]: the anti-replay trait and the stable Bloom filter.
//! * [`proxy_protocol`]: PROXY v1/v2 headers in, v2 out.
//! * [`doppel`]: doppelganger traffic shaping (record sizes, delays, learning samples).
//! * [`client`]: the client-side encoder for tests, `doctor` and load tools.
//! * [`socks5`]: the client side of SOCKS5 CONNECT with user/password, for upstream proxies.
//! * [`mtproto`]: padded-intermediate frames, `req_pq_multi`/`resPQ` (the `doctor` DC probe).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod base64url;
mod cipher;
pub mod client;
pub mod doppel;
pub mod handshake;
pub mod mtproto;
pub mod obfs2;
pub mod proxy_protocol;
pub mod relay;
pub mod replay;
pub mod secret;
pub mod socks5;
pub mod tls;
pub mod users;

pub use handshake::{
    FrontReason, HandshakeConfig, HandshakeContext, Mode, RejectReason, ServerHandshake, Verdict,
};
pub use obfs2::FrameHeader;
pub use relay::{ClientToDc, DcToClient, RelayError, Session};
pub use replay::{NoReplayCheck, ReplayCache, StableBloomFilter};
pub use secret::{Secret, SecretError, SecretKind};
pub use users::{HostId, UserId, UserTable};
