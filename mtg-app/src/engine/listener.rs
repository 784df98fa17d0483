//! Listeners: binding the `bind-to` addresses and the accept loops, with the concurrency limit
//! and back-off when the process runs out of descriptors. The control plane
//! ([`crate::control::serve`]) starts them and runs the graceful stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use tracing::{debug, warn};

use crate::runtime::Runtime;

use super::client_mss;
use super::session::serve_connection;
use super::{ActiveGuard, Shared};

/// Binds every `bind-to` address, in order; returns the listeners and their local addresses.
pub(crate) fn bind_listeners<R: Runtime>(
    runtime: &R,
    shared: &Shared,
) -> io::Result<(Vec<R::Listener>, Vec<SocketAddr>)> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    if client_mss::unsupported(&shared.settings.config.network) {
        warn!("[network] client-mss and client-mss-bulk work on Linux only: ignored here");
    }
    let mss = shared.settings.client_segments.listener;
    for &addr in &shared.settings.config.bind_to {
        let listener = client_mss::bind(runtime, addr, mss)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        addrs.push(R::listener_addr(&listener)?);
        listeners.push(listener);
    }
    Ok((listeners, addrs))
}

/// Spawns a background loop that holds `alive` until it ends, so `serve` can wait for all.
pub(crate) fn spawn_tracked<R: Runtime>(
    runtime: &R,
    alive: &async_channel::Sender<()>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let alive = alive.clone();
    runtime.spawn(async move {
        task.await;
        drop(alive);
    });
}

/// Runs `future` unless the stop channel closes first (`None` then).
pub(crate) async fn until_stopped<F: Future>(
    future: F,
    stopped: &async_channel::Receiver<()>,
) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let stop = std::pin::pin!(stopped.recv());
    match select(future, stop).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Accepts client connections until the stop channel closes, serving each on its own task.
pub(crate) async fn accept_loop<R: Runtime>(
    runtime: R,
    shared: Arc<Shared>,
    listener: R::Listener,
    stopped: async_channel::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let Some(accepted) = until_stopped(R::accept(&listener), &stopped).await else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(ok) => {
                backoff = Duration::from_millis(10);
                ok
            }
            Err(e) if out_of_descriptors(&e) => {
                warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed: out of descriptors, pausing");
                R::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let task_runtime = runtime.clone();
        runtime.spawn(async move {
            let Some(_active) = ActiveGuard::try_new(&shared.active, shared.settings.concurrency()) else {
                shared.metrics().concurrency_limited();
                debug!(%peer, "concurrency limit reached, closing");
                return;
            };
            serve_connection::<R>(task_runtime, shared.clone(), stream, peer).await;
        });
    }
}
