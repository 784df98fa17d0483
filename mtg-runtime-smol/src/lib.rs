//! The smol adapter: the socket, timer, task and signal primitives the proxy engine needs, on
//! an `async-executor` run by one thread per CPU. smol streams already speak `futures-io`.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::Executor;
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;

/// A listening socket.
pub type Listener = TcpListener;

/// A TCP stream (already `futures-io`).
pub type Stream = TcpStream;

/// Handle to the executor the proxy runs on.
#[derive(Debug, Clone)]
pub struct Smol {
    executor: Arc<Executor<'static>>,
}

impl Smol {
    /// Starts one executor thread per CPU and runs `main` on the calling thread until it ends.
    pub fn run<F, Fut>(main: F) -> io::Result<Fut::Output>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future,
    {
        let executor = Arc::new(Executor::new());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (stop, stopped) = smol::channel::unbounded::<()>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let ex = executor.clone();
            let stopped = stopped.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("smol-{i}"))
                    .spawn(move || smol::block_on(ex.run(stopped.recv())))?,
            );
        }
        let this = Self { executor: executor.clone() };
        let out = smol::block_on(executor.run(main(this)));
        drop(stop);
        for w in workers {
            // A worker only ends by the channel closing; a panic there is already reported.
            let _ = w.join();
        }
        Ok(out)
    }

    /// Opens a listening socket (SO_REUSEADDR, backlog 1024).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let std: StdListener = socket.into();
        TcpListener::try_from(std)
    }

    /// Accepts one connection with TCP_NODELAY set.
    pub async fn accept(listener: &TcpListener) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    /// Connects to `addr` with TCP_NODELAY set.
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Resolves `host:port` with the OS resolver.
    pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        smol::net::resolve((host, port)).await
    }

    /// The local address of a stream.
    pub fn local_addr(stream: &Stream) -> io::Result<SocketAddr> {
        stream.local_addr()
    }

    /// The local address of a listener.
    pub fn listener_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    /// Spawns a task.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.executor.spawn(task).detach();
    }

    /// A timer that fires at `deadline`.
    pub fn timer_at(deadline: Instant) -> Timer {
        Timer(smol::Timer::at(deadline))
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn shutdown_signal() -> io::Result<()> {
        let mut signals =
            async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])?;
        signals.next().await;
        Ok(())
    }

    /// A stream of SIGHUP notifications.
    pub fn hangups() -> io::Result<Hangups> {
        Ok(Hangups(async_signal::Signals::new([async_signal::Signal::Hup])?))
    }

    /// Sleeps for `d`.
    pub async fn sleep(d: Duration) {
        smol::Timer::after(d).await;
    }
}

/// SIGHUP notifications.
#[derive(Debug)]
pub struct Hangups(async_signal::Signals);

impl Hangups {
    /// Waits for the next SIGHUP.
    pub async fn next(&mut self) {
        self.0.next().await;
    }
}

/// A one-shot timer.
#[derive(Debug)]
pub struct Timer(smol::Timer);

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Timer {
    /// Moves the deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.0.set_at(deadline);
    }
}

/// This adapter under the name the engine glue uses.
pub type Runtime = Smol;
