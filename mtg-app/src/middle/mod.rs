//! Middle-proxy mode (the ad tag, issue 13): users whose effective ad tag is set reach Telegram
//! through its middle proxies instead of the DCs. The protocol is pure code in
//! [`mtg_proto::middle`]; this module holds the app's side:
//!
//! - [`store`]: the current proxy secret and middle-proxy lists (a [`MiddleSnapshot`]) that
//!   sessions route by, swapped whole when a fetch brings a good new copy;
//! - [`bootstrap`]: the decisions of the bootstrap (which body replaces the last good copy,
//!   when a snapshot is due, clock skew, failure streaks), without I/O;
//! - [`refresh`]: the bootstrap's I/O: the `cache-dir` copies, the fetches, publishing;
//! - [`conn`]: one multiplexed middle-proxy connection (handshake, reader and writer tasks,
//!   per-client answer queues);
//! - [`pool`]: connections per endpoint, made on demand, least-loaded choice, backoff,
//!   retirement of what a new snapshot makes stale;
//! - [`dial_guard`]: the global dial rate cap and the refetch after failing handshakes.

pub mod bootstrap;
pub mod conn;
pub mod dial_guard;
pub mod pool;
pub mod refresh;
pub mod store;

pub use conn::{Answer, ClientSlot, MiddleConn};
pub use pool::MiddlePool;
pub use refresh::Bootstrapper;
pub use store::{MiddleSnapshot, MiddleStore};
