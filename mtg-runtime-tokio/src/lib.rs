//! The tokio adapter: the socket, timer, task and signal primitives the proxy engine needs,
//! on a multi-threaded tokio runtime. Streams are exposed through the `futures-io` traits so the
//! engine above is runtime-neutral.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// A listening socket.
pub type Listener = tokio::net::TcpListener;

/// A TCP stream seen through the `futures-io` traits.
pub type Stream = Compat<tokio::net::TcpStream>;

/// Handle to the tokio runtime the proxy runs on.
#[derive(Debug, Clone)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

impl Tokio {
    /// Builds a multi-threaded runtime and runs `main` on it to completion.
    pub fn run<F, Fut>(main: F) -> io::Result<Fut::Output>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future,
    {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let this = Self { handle: rt.handle().clone() };
        Ok(rt.block_on(main(this)))
    }

    /// Opens a listening socket (SO_REUSEADDR, backlog 1024).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let _guard = self.handle.enter();
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// Accepts one connection with TCP_NODELAY set.
    pub async fn accept(listener: &tokio::net::TcpListener) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream.compat(), peer))
    }

    /// Connects to `addr` with TCP_NODELAY set.
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream.compat())
    }

    /// Resolves `host:port` with the OS resolver.
    pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    /// The local address of a stream.
    pub fn local_addr(stream: &Stream) -> io::Result<SocketAddr> {
        stream.get_ref().local_addr()
    }

    /// The local address of a listener.
    pub fn listener_addr(listener: &tokio::net::TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    /// Spawns a task.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    /// A timer that fires at `deadline`.
    pub fn timer_at(deadline: Instant) -> Timer {
        Timer(Box::pin(tokio::time::sleep_until(deadline.into())))
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn shutdown_signal() -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }

    /// A stream of SIGHUP notifications.
    pub fn hangups() -> io::Result<Hangups> {
        Ok(Hangups(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?))
    }

    /// Sleeps for `d`.
    pub async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// SIGHUP notifications.
#[derive(Debug)]
pub struct Hangups(tokio::signal::unix::Signal);

impl Hangups {
    /// Waits for the next SIGHUP.
    pub async fn next(&mut self) {
        self.0.recv().await;
    }
}

/// A one-shot timer.
#[derive(Debug)]
pub struct Timer(Pin<Box<tokio::time::Sleep>>);

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Timer {
    /// Moves the deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.0.as_mut().reset(deadline.into());
    }
}

/// This adapter under the name the engine glue uses.
pub type Runtime = Tokio;
