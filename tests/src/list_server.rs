//! A tiny local HTTP server for block/allow list sources: answers every request with what
//! [`ListServer::set`] chose last (a list body, an error status, or a hang-up) and counts the
//! requests, so a test can tell when the proxy has refreshed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 OK` with this body.
    List(String),
    /// This status with an empty body.
    Status(u16),
    /// Close the connection without answering.
    HangUp,
}

/// Most connections one server handles (a bound on its accept loop).
const MAX_CONNECTIONS: usize = 10_000;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long one request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running list server on `127.0.0.1`; stopped (connections refused) on drop.
#[derive(Debug)]
pub struct ListServer {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ListServer {
    /// Starts serving `reply` on a free loopback port (on the shared test runtime).
    pub fn start(reply: Reply) -> Self {
        let handle = crate::runtime::handle();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the list server");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("list server address");
        let listener = {
            let _runtime = handle.enter();
            TcpListener::from_std(std_listener).expect("register the list server")
        };
        let reply = Arc::new(Mutex::new(reply));
        let requests = Arc::new(AtomicUsize::new(0));
        let task = handle.spawn(accept_loop(listener, reply.clone(), requests.clone()));
        Self { addr, reply, requests, task }
    }

    /// The URL of the list.
    pub fn url(&self) -> String {
        format!("http://{}/list.netset", self.addr)
    }

    /// Answers later requests with `reply`.
    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap_or_else(PoisonError::into_inner) = reply;
    }

    /// Requests received so far (whatever the answer).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived, up to `timeout`; whether they did.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.requests() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests() >= n
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, reply: Arc<Mutex<Reply>>, requests: Arc<AtomicUsize>) {
    for _ in 0..MAX_CONNECTIONS {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (reply, requests) = (reply.clone(), requests.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &reply, &requests)).await;
        });
    }
}

/// Reads one request head, counts it, answers it and closes.
async fn answer(mut stream: TcpStream, reply: &Mutex<Reply>, requests: &AtomicUsize) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let reply = reply.lock().unwrap_or_else(PoisonError::into_inner).clone();
    requests.fetch_add(1, Ordering::SeqCst);
    let response = match reply {
        Reply::List(body) => {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        }
        Reply::Status(code) => {
            format!("HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::HangUp => return Ok(()),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
