//! # mtg-proto: the sans-IO core of the mtg-multi MTProto proxy
//!
//! This crate owns no sockets, clocks, threads, tasks or global RNG. Bytes, the current time
//! and an [`rand_core::RngCore`] are passed in; verdicts, bytes to write and byte counts come
//! out. The runtime adapters (`mtg-runtime-tokio`, `mtg-runtime-smol`) drive it.
//!
//! ## The drive loop
//!
//! ```text
//!   client socket                 mtg-proto                               DC socket
//!   ─────────────                 ─────────                               ─────────
//!   read ──► buf ──► ServerHandshake::handle_input(buf, ctx) ─► HelloStep
//!                      NeedMore(hs)       → read more, call hs again with the whole buf
//!                      Front{host}        → dial fronting site, write buf, splice
//!                      Authenticated(p)   → the app decides on p.user():
//!                        p.refuse()            → FrontTarget{host}: front exactly as above
//!                        p.accept(rng, out)    → write `out` (ee flight), then with the same buf:
//!   AwaitingFrame::handle_input(buf) ─► FrameStep
//!                      NeedMore(f)        → read more, call f again with the whole buf
//!                      Reject(reason)     → close
//!                      Ready(e)           → e.into_session(dc) ─► (Session, dc_frame)
//!                                           (fast mode: e.into_fast_session(dc))
//!                                                               dial DC, write dc_frame
//!   buf[e.consumed()..] and every later read:
//!        ──► ClientToDc::process(chunk) ───────────────────────────────────► write
//!   write ◄── DcToClient::process(buf, n) ◄── read into buf[HEADROOM..]
//!   fast mode: write FastDcToClient::header(n), then the n bytes read as they are
//! ```
//!
//! Contract:
//! * Every stage is consumed by the call that advances it and handed back inside `NeedMore`,
//!   so a stage cannot be driven out of order: there is no "wrong state" error.
//! * `handle_input` always receives *all* bytes read so far from the client (the buffer only
//!   grows); the core remembers how far it looked. On `Front` or a refusal, the caller replays
//!   exactly that buffer. The core never holds a copy of it, so a probe costs no allocation here.
//! * `ee` and `dd` clients are both authenticated exactly once (`Authenticated`): an `ee`
//!   client by its hello, a `dd` client by its frame (its `AwaitingFrame` is ready at once).
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
//! * [`handshake`]: the server handshake as owned steps (hello, admission, frame).
//! * [`relay`]: the two relay halves and the wrapper [`Mode`] that frames them.
//! * [`replay`]: the anti-replay trait and the stable Bloom filter.
//! * [`proxy_protocol`]: PROXY v1/v2 headers in, v2 out.
//! * [`doppel`]: doppelganger traffic shaping (record sizes, delays, learning samples).
//! * [`client`]: the client-side encoder for tests, `doctor` and load tools.
//! * [`socks5`]: the client side of SOCKS5 CONNECT with user/password, for upstream proxies.
//! * [`mtproto`]: padded-intermediate frames, `req_pq_multi`/`resPQ` (the `doctor` DC probe).
//! * [`middle`]: middle-proxy mode (ad tag): RPC frames, AES-CBC, key derivation, nonce and
//!   handshake, RPC messages, client transports, the `getProxyConfig` parser.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod base64url;
mod cipher;
pub mod client;
pub mod doppel;
pub mod handshake;
pub mod middle;
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
    AwaitingFrame, Established, FrameStep, FrontReason, FrontTarget, HandshakeConfig, HandshakeContext,
    HelloStep, Pending, RejectReason, ServerHandshake,
};
pub use obfs2::FrameHeader;
pub use relay::{
    ClientIn, ClientLeg, ClientOut, ClientToDc, DcToClient, FastDcToClient, Mode, RelayError, Session,
};
pub use replay::{NoReplayCheck, ReplayCache, StableBloomFilter};
pub use secret::{Secret, SecretError, SecretKind};
pub use users::{HostId, UserId, UserTable};
