//! The runtime seam: what the engine needs from an async runtime (sockets, timers, tasks),
//! implemented for tokio and smol by the adapter crates. Exactly one is compiled in.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};

#[cfg(all(feature = "tokio", feature = "smol"))]
compile_error!("mtg-app: enable exactly one runtime feature: `tokio` (default) or `smol`, not both");
#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("mtg-app: enable exactly one runtime feature: `tokio` (default) or `smol`");

/// Sockets, timers and tasks of one async runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A listening socket.
    type Listener: Send + Sync + 'static;
    /// A one-shot timer that can be moved.
    type Timer: Future<Output = ()> + Unpin + Send + 'static;

    /// Opens a listener.
    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener>;
    /// The address a listener is bound to.
    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accepts one connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// Connects to `addr`.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Resolves a hostname with the OS resolver.
    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// The local address of a stream.
    fn local_addr(stream: &Self::Stream) -> io::Result<SocketAddr>;
    /// The OS socket of a stream, for socket options.
    fn socket(stream: &Self::Stream) -> socket2::SockRef<'_>;
    /// A timer firing at `deadline`.
    fn timer_at(deadline: Instant) -> Self::Timer;
    /// Moves a timer's deadline.
    fn reset(timer: &mut Self::Timer, deadline: Instant);
    /// Sleeps.
    fn sleep(d: Duration) -> impl Future<Output = ()> + Send;
    /// Spawns a task.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
    /// Resolves on the first SIGINT or SIGTERM.
    fn shutdown_signal() -> impl Future<Output = io::Result<()>> + Send;
    /// A SIGHUP watcher.
    type Hangups: Send + 'static;
    /// Starts watching SIGHUP.
    fn hangups() -> io::Result<Self::Hangups>;
    /// Waits for the next SIGHUP.
    fn next_hangup(hangups: &mut Self::Hangups) -> impl Future<Output = ()> + Send + '_;
}

/// Implements [`Runtime`] for an adapter crate: both expose the same inherent functions, so
/// one body serves both. `$socket` maps a stream to its OS socket.
macro_rules! impl_runtime {
    ($feature:literal, $module:ident, $adapter:ident, $socket:expr) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;
            use $adapter::{Hangups, Listener, Stream, Timer};

            type Adapter = $adapter::Runtime;

            impl Runtime for Adapter {
                type Stream = Stream;
                type Listener = Listener;
                type Timer = Timer;

                fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
                    Self::bind(self, addr)
                }
                fn listener_addr(listener: &Listener) -> io::Result<SocketAddr> {
                    Self::listener_addr(listener)
                }
                fn accept(
                    listener: &Listener,
                ) -> impl Future<Output = io::Result<(Stream, SocketAddr)>> + Send {
                    Self::accept(listener)
                }
                fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Stream>> + Send {
                    Self::connect(addr)
                }
                fn resolve(
                    host: &str,
                    port: u16,
                ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
                    let host = host.to_owned();
                    async move { Self::resolve(&host, port).await }
                }
                fn local_addr(stream: &Stream) -> io::Result<SocketAddr> {
                    Self::local_addr(stream)
                }
                fn socket(stream: &Stream) -> socket2::SockRef<'_> {
                    let socket_of: fn(&Stream) -> socket2::SockRef<'_> = $socket;
                    socket_of(stream)
                }
                fn timer_at(deadline: Instant) -> Timer {
                    Self::timer_at(deadline)
                }
                fn reset(timer: &mut Timer, deadline: Instant) {
                    timer.reset(deadline);
                }
                fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
                    Self::sleep(d)
                }
                fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
                    Self::spawn(self, task);
                }
                fn shutdown_signal() -> impl Future<Output = io::Result<()>> + Send {
                    Self::shutdown_signal()
                }
                type Hangups = Hangups;
                fn hangups() -> io::Result<Hangups> {
                    Self::hangups()
                }
                fn next_hangup(hangups: &mut Hangups) -> impl Future<Output = ()> + Send + '_ {
                    hangups.next()
                }
            }
        }
    };
}

impl_runtime!("tokio", tokio_impl, mtg_runtime_tokio, |s| socket2::SockRef::from(s.get_ref()));
impl_runtime!("smol", smol_impl, mtg_runtime_smol, |s| socket2::SockRef::from(s));

/// The runtime this binary was built with.
#[cfg(feature = "tokio")]
pub type Selected = mtg_runtime_tokio::Tokio;
/// The runtime this binary was built with.
#[cfg(all(feature = "smol", not(feature = "tokio")))]
pub type Selected = mtg_runtime_smol::Smol;
