//! The smol adapter: the socket, timer, task and signal primitives the proxy engine needs, on
//! an `async-executor` run by one thread per CPU, as an implementation of the
//! [`mtg_runtime::Runtime`] seam. smol streams already speak `futures-io`.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mtg_runtime::{Runtime, Signal, SignalStream};
use smol::Executor;
use smol::net::{TcpListener, TcpStream, UdpSocket};
use smol::stream::StreamExt;

/// Flags of [`Runtime::send_eor`]: end of record, and no SIGPIPE where the flag exists.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EOR_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_NOSIGNAL;
/// Flags of [`Runtime::send_eor`]: end of record.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EOR_FLAGS: libc::c_int = libc::MSG_EOR;

/// A listening socket.
pub type Listener = TcpListener;

/// A TCP stream (already `futures-io`).
pub type Stream = TcpStream;

/// Handle to the executor the proxy runs on.
#[derive(Debug, Clone)]
pub struct Smol {
    executor: Arc<Executor<'static>>,
}

impl Runtime for Smol {
    type Stream = Stream;
    type Listener = Listener;
    type Udp = UdpSocket;
    type Timer = Timer;
    type Signals = Signals;

    /// Starts one executor thread per CPU and runs `main` on the calling thread until it ends.
    fn run<F, Fut>(main: F) -> io::Result<Fut::Output>
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

    fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let std: StdListener = socket.into();
        TcpListener::try_from(std)
    }

    fn adopt_listener(&self, listener: StdListener) -> io::Result<TcpListener> {
        TcpListener::try_from(listener)
    }

    fn listener_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let host = host.to_owned();
        async move { smol::net::resolve((host.as_str(), port)).await }
    }

    fn local_addr(stream: &Stream) -> io::Result<SocketAddr> {
        stream.local_addr()
    }

    fn socket(stream: &Stream) -> socket2::SockRef<'_> {
        socket2::SockRef::from(stream)
    }

    async fn send_eor<'a>(stream: &'a mut Stream, buf: &'a [u8]) -> io::Result<usize> {
        let inner: Arc<smol::Async<std::net::TcpStream>> = stream.clone().into();
        inner.write_with(|tcp| socket2::SockRef::from(tcp).send_with_flags(buf, EOR_FLAGS)).await
    }

    fn poll_read_with(
        stream: &Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        poll_with(stream, cx, op, smol::Async::poll_readable)
    }

    fn poll_write_with(
        stream: &Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        poll_with(stream, cx, op, smol::Async::poll_writable)
    }

    fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::try_from(std::net::UdpSocket::bind(addr)?)
    }

    async fn send_to(socket: &UdpSocket, datagram: &[u8], target: SocketAddr) -> io::Result<usize> {
        socket.send_to(datagram, target).await
    }

    async fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.recv_from(buf).await
    }

    fn timer_at(deadline: Instant) -> Timer {
        Timer(smol::Timer::at(deadline))
    }

    fn reset(timer: &mut Timer, deadline: Instant) {
        timer.0.set_at(deadline);
    }

    async fn sleep(d: Duration) {
        smol::Timer::after(d).await;
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.executor.spawn(task).detach();
    }

    fn signals() -> io::Result<Signals> {
        use async_signal::Signal as Os;
        Ok(Signals(async_signal::Signals::new([Os::Hup, Os::Term, Os::Int])?))
    }
}

/// Runs `op` on `stream`'s socket until it does not report `WouldBlock`, waiting in between
/// with `ready` (readable or writable): an OS event since the last `Pending`.
fn poll_with(
    stream: &Stream,
    cx: &mut Context<'_>,
    op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ready: fn(&smol::Async<std::net::TcpStream>, &mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<usize>> {
    loop {
        match op(stream.as_fd()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        // The stream's handle is an `Arc` inside: cloning it is a counter, no allocation.
        let inner: Arc<smol::Async<std::net::TcpStream>> = stream.clone().into();
        if let Err(e) = std::task::ready!(ready(&inner, cx)) {
            return Poll::Ready(Err(e));
        }
    }
}

/// SIGHUP, SIGTERM and SIGINT, as registered by [`Runtime::signals`].
#[derive(Debug)]
pub struct Signals(async_signal::Signals);

impl SignalStream for Signals {
    async fn next(&mut self) -> Option<Signal> {
        use async_signal::Signal as Os;
        loop {
            match self.0.next().await? {
                Ok(Os::Hup) => return Some(Signal::Hangup),
                Ok(Os::Term) => return Some(Signal::Terminate),
                Ok(Os::Int) => return Some(Signal::Interrupt),
                // Only the three above are registered.
                Ok(_) => {}
                // The signal pipe broke: nothing more can be reported.
                Err(_) => return None,
            }
        }
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
