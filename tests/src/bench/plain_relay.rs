//! The baseline: a plain-copy TCP relay with no crypto and the proxy's 16 KiB buffer per
//! direction, on a default multi-threaded tokio runtime (as the proxy's).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Buffer per direction, as the proxy's relay.
pub const BUFFER: usize = 16 * 1024;

/// Accepts on `listen` and relays every connection to `target` until the process is killed.
pub fn run(listen: SocketAddr, target: SocketAddr) -> io::Result<()> {
    crate::ensure_loopback(listen)?;
    crate::ensure_loopback(target)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off briefly rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(relay(client, target));
        }
    })
}

async fn relay(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER).await;
}
