//! The tokio adapter: the socket, timer, task and signal primitives the proxy engine needs,
//! on a multi-threaded tokio runtime, as an implementation of the [`mtg_runtime::Runtime`]
//! seam. Streams are exposed through the `futures-io` traits so the engine above is
//! runtime-neutral.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mtg_runtime::{Runtime, Signal, SignalStream};
use tokio::io::Interest;
use tokio::signal::unix::SignalKind;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// Flags of [`Runtime::send_eor`]: end of record, and no SIGPIPE where the flag exists.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EOR_FLAGS: libc::c_int = libc::MSG_EOR | libc::MSG_NOSIGNAL;
/// Flags of [`Runtime::send_eor`]: end of record.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EOR_FLAGS: libc::c_int = libc::MSG_EOR;

/// A listening socket.
pub type Listener = tokio::net::TcpListener;

/// A TCP stream seen through the `futures-io` traits.
pub type Stream = Compat<tokio::net::TcpStream>;

/// Handle to the tokio runtime the proxy runs on.
#[derive(Debug, Clone)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

impl Runtime for Tokio {
    type Stream = Stream;
    type Listener = Listener;
    type Udp = tokio::net::UdpSocket;
    type Timer = Timer;
    type Signals = Signals;

    /// Builds a multi-threaded runtime and runs `main` on it to completion.
    fn run<F, Fut>(main: F) -> io::Result<Fut::Output>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future,
    {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let this = Self { handle: rt.handle().clone() };
        Ok(rt.block_on(main(this)))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let _guard = self.handle.enter();
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    fn adopt_listener(&self, listener: std::net::TcpListener) -> io::Result<Listener> {
        let _guard = self.handle.enter();
        listener.set_nonblocking(true)?;
        Listener::from_std(listener)
    }

    fn listener_addr(listener: &Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Listener) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream.compat(), peer))
    }

    async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream.compat())
    }

    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let host = host.to_owned();
        async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) }
    }

    fn local_addr(stream: &Stream) -> io::Result<SocketAddr> {
        stream.get_ref().local_addr()
    }

    fn socket(stream: &Stream) -> socket2::SockRef<'_> {
        socket2::SockRef::from(stream.get_ref())
    }

    async fn send_eor<'a>(stream: &'a mut Stream, buf: &'a [u8]) -> io::Result<usize> {
        let tcp = stream.get_ref();
        tcp.async_io(Interest::WRITABLE, || socket2::SockRef::from(tcp).send_with_flags(buf, EOR_FLAGS)).await
    }

    fn poll_read_with(
        stream: &Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        poll_with(stream, cx, Interest::READABLE, op)
    }

    fn poll_write_with(
        stream: &Stream,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        poll_with(stream, cx, Interest::WRITABLE, op)
    }

    fn bind_udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket)
    }

    async fn send_to(
        socket: &tokio::net::UdpSocket,
        datagram: &[u8],
        target: SocketAddr,
    ) -> io::Result<usize> {
        socket.send_to(datagram, target).await
    }

    async fn recv_from(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.recv_from(buf).await
    }

    fn timer_at(deadline: Instant) -> Timer {
        Timer(Box::pin(tokio::time::sleep_until(deadline.into())))
    }

    fn reset(timer: &mut Timer, deadline: Instant) {
        timer.0.as_mut().reset(deadline.into());
    }

    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    fn signals() -> io::Result<Signals> {
        let watch = |kind| tokio::signal::unix::signal(kind);
        Ok(Signals {
            watched: [
                (Signal::Hangup, watch(SignalKind::hangup())?),
                (Signal::Terminate, watch(SignalKind::terminate())?),
                (Signal::Interrupt, watch(SignalKind::interrupt())?),
            ],
        })
    }
}

/// Runs `op` on `stream`'s socket once it is ready for `interest` (readable or writable),
/// until `op` does not report `WouldBlock`.
fn poll_with(
    stream: &Stream,
    cx: &mut Context<'_>,
    interest: Interest,
    op: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    let tcp = stream.get_ref();
    loop {
        let ready = if interest.is_readable() { tcp.poll_read_ready(cx) } else { tcp.poll_write_ready(cx) };
        if let Err(e) = std::task::ready!(ready) {
            return Poll::Ready(Err(e));
        }
        // `try_io` clears the readiness on `WouldBlock`: the next poll registers the waker.
        match tcp.try_io(interest, || op(tcp.as_fd())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}

/// SIGHUP, SIGTERM and SIGINT, as registered by [`Runtime::signals`].
#[derive(Debug)]
pub struct Signals {
    watched: [(Signal, tokio::signal::unix::Signal); 3],
}

impl SignalStream for Signals {
    fn next(&mut self) -> impl Future<Output = Option<Signal>> + Send + '_ {
        std::future::poll_fn(move |cx| {
            let mut open = false;
            for (signal, watcher) in &mut self.watched {
                match watcher.poll_recv(cx) {
                    Poll::Ready(Some(())) => return Poll::Ready(Some(*signal)),
                    Poll::Ready(None) => {}
                    Poll::Pending => open = true,
                }
            }
            if open { Poll::Pending } else { Poll::Ready(None) }
        })
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
