//! Middle-proxy mode (the ad tag, issue 13): users whose effective ad tag is set reach Telegram
//! through its middle proxies instead of the DCs. The protocol is pure code in
//! [`mtg_proto::middle`]; this module holds the app's side:
//!
//! - [`store`]: the current proxy secret and middle-proxy lists (a [`MiddleSnapshot`]) that
//!   sessions route by, swapped whole when a fetch brings a good new copy;
//! - the bootstrap (fetching, caching and refreshing the snapshot) and the connection pool are
//!   added next to it.

pub mod store;

pub use store::{MiddleSnapshot, MiddleStore};
