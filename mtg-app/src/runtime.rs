//! The runtime seam: the [`Runtime`] trait of the `mtg-runtime` crate (sockets, timers, tasks,
//! signals), implemented for tokio and smol by the adapter crates themselves, and the runtime
//! this build selected. The features are additive: with both on, tokio is selected.

pub use mtg_runtime::{Runtime, Signal, SignalStream};

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("mtg-app: enable a runtime feature: `tokio` (default) or `smol` (with --no-default-features)");

/// The runtime this binary was built with (tokio when both features are on).
#[cfg(feature = "tokio")]
pub type Selected = mtg_runtime_tokio::Tokio;
/// The runtime this binary was built with.
#[cfg(all(feature = "smol", not(feature = "tokio")))]
pub type Selected = mtg_runtime_smol::Smol;
