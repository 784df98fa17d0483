//! The runtime seam: everything the mtg-multi engine needs from an async runtime (TCP and UDP
//! sockets, the OS resolver, timers, tasks, signals), as one trait. Each adapter crate
//! (`mtg-runtime-tokio`, `mtg-runtime-smol`) implements [`Runtime`] itself, so an adapter that
//! drifts from the seam fails to compile in its own crate. Runtime-neutral: no runtime here.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};

/// A process signal the proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGHUP: reload the config.
    Hangup,
    /// SIGTERM: stop gracefully.
    Terminate,
    /// SIGINT: stop gracefully.
    Interrupt,
}

/// The signals watched since [`Runtime::signals`] registered them, in arrival order (a
/// signal repeated before it was read may be reported once).
pub trait SignalStream: Send + 'static {
    /// The next signal; `None` once no more can come (the runtime is shutting down).
    fn next(&mut self) -> impl Future<Output = Option<Signal>> + Send + '_;
}

/// Sockets, timers, tasks and signals of one async runtime.
///
/// Every function but [`Runtime::run`] must be called on the runtime (in a task, or in the
/// future given to `run`).
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A listening socket.
    type Listener: Send + Sync + 'static;
    /// A bound UDP socket.
    type Udp: Send + Sync + 'static;
    /// A one-shot timer that can be moved.
    type Timer: Future<Output = ()> + Unpin + Send + 'static;
    /// The watched signals.
    type Signals: SignalStream;

    /// Starts the runtime and runs `main` on it to completion.
    fn run<F, Fut>(main: F) -> io::Result<Fut::Output>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future;

    /// Opens a listener (SO_REUSEADDR, backlog 1024).
    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener>;
    /// Takes over a listening socket the engine bound and configured itself (for options that
    /// must be set before `listen()`, such as TCP_MAXSEG).
    fn adopt_listener(&self, listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    /// The address a listener is bound to.
    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accepts one connection (TCP_NODELAY set).
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;
    /// Connects to `addr` (TCP_NODELAY set).
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Resolves a hostname with the OS resolver.
    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// The local address of a stream.
    fn local_addr(stream: &Self::Stream) -> io::Result<SocketAddr>;
    /// The OS socket of a stream, for socket options.
    fn socket(stream: &Self::Stream) -> socket2::SockRef<'_>;
    /// Sends the start of `buf` with `MSG_EOR` (waiting until the socket takes some): the
    /// kernel never appends later data to the segment these bytes go out in. Returns how many
    /// bytes were taken.
    fn send_eor<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Runs `op`, a nonblocking operation on `stream`'s socket (zero-copy relaying: a
    /// `splice(2)` out of it), once the socket is readable: `op`'s `WouldBlock` clears the
    /// readiness and waits for the next one (the task is woken then); any other result is
    /// returned. Never blocks the executor thread.
    fn poll_read_with(
        stream: &Self::Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>>;
    /// [`Runtime::poll_read_with`] for writing: runs `op` (a `splice(2)` into the socket, a
    /// `send` of a record header) once the socket is writable.
    fn poll_write_with(
        stream: &Self::Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>>;

    /// Binds a UDP socket.
    fn bind_udp(addr: SocketAddr) -> io::Result<Self::Udp>;
    /// Sends one datagram to `target`.
    fn send_to<'a>(
        socket: &'a Self::Udp,
        datagram: &'a [u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Receives one datagram: its length in `buf` and its sender.
    fn recv_from<'a>(
        socket: &'a Self::Udp,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a;

    /// A timer firing at `deadline`.
    fn timer_at(deadline: Instant) -> Self::Timer;
    /// Moves a timer's deadline.
    fn reset(timer: &mut Self::Timer, deadline: Instant);
    /// Sleeps.
    fn sleep(d: Duration) -> impl Future<Output = ()> + Send;
    /// Spawns a task.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// Starts watching SIGHUP, SIGTERM and SIGINT: synchronous, so once it returns a signal is
    /// no longer the default action (a kill) but an item of the stream.
    fn signals() -> io::Result<Self::Signals>;
}
