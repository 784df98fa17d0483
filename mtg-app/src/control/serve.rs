//! The top-level orchestration: starts the engine's listeners, the API and Prometheus HTTP
//! listeners and the background [`tasks`](super::tasks), serves until told to stop, then
//! stops gracefully (no new connections, a grace period for live sessions, usage saved).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::engine::{accept_loop, bind_listeners, spawn_tracked, until_stopped};
use crate::runtime::{Runtime, Signal, SignalStream};

use super::{Control, http_server, tasks};

/// Where the proxy listens, once it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The client listeners, in `bind-to` order.
    pub listeners: Vec<SocketAddr>,
    /// The stats API, when configured.
    pub api: Option<SocketAddr>,
    /// The Prometheus endpoint, when enabled.
    pub metrics: Option<SocketAddr>,
}

/// Binds every `bind-to` address (and the API and Prometheus endpoint), starts the statsd
/// flusher, serves until `shutdown` resolves, then waits up to the grace period for live
/// sessions. Calls `on_ready` once listening.
pub async fn serve<R: Runtime>(
    runtime: R,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    serve_inner(runtime, control, shutdown, None, on_ready).await
}

/// [`serve`] driven by process signals registered with [`Runtime::signals`] (before this is
/// called, so a signal sent once "serving" is logged is never the default kill): SIGHUP
/// reloads the config, SIGTERM or SIGINT stops gracefully.
pub async fn serve_with_signals<R: Runtime>(
    runtime: R,
    control: Arc<Control>,
    mut signals: R::Signals,
    on_ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    // Hangups wait here (at most one: more before a reload is done fold into it).
    let (hangup, hangups) = async_channel::bounded::<()>(1);
    let shutdown = async move {
        loop {
            match signals.next().await {
                Some(Signal::Hangup) => {
                    let _ = hangup.try_send(());
                }
                Some(Signal::Terminate | Signal::Interrupt) => return,
                None => {
                    error!("signals can no longer be watched; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    serve_inner(runtime, control, shutdown, Some(hangups), on_ready).await
}

async fn serve_inner<R: Runtime>(
    runtime: R,
    control: Arc<Control>,
    shutdown: impl Future<Output = ()>,
    hangups: Option<async_channel::Receiver<()>>,
    on_ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    let shared = control.data.clone();
    let (listeners, addrs) = bind_listeners(&runtime, &shared)?;
    // Block/allow lists are loaded before the first accept (connections wait in the backlog
    // meanwhile; each URL is bounded by the HTTP timeout), so an allowlist never refuses
    // everyone at start.
    let lists = shared.ip_filter().refresh_periods();
    futures_util::future::join_all(lists.iter().map(|&(list, _)| tasks::refresh_list(&shared, list))).await;
    // The middle-proxy copies cached on disk, too, so tagged users route at once (and a
    // restart works offline); fetching starts in the background.
    let mut middle = crate::middle::Bootstrapper::new(&shared.settings().config.middle_proxy);
    if crate::middle::Bootstrapper::wanted(&shared) {
        middle.load_cache(&shared);
    }
    let (stop, stopped) = async_channel::bounded::<()>(1);
    // Each loop holds a sender; when all have ended, `loops_done` yields an error.
    let (loop_alive, loops_done) = async_channel::bounded::<()>(1);
    for (list, period) in lists {
        spawn_tracked(
            &runtime,
            &loop_alive,
            tasks::ip_list_loop::<R>(shared.clone(), list, period, stopped.clone()),
        );
    }
    for listener in listeners {
        spawn_tracked(
            &runtime,
            &loop_alive,
            accept_loop(runtime.clone(), shared.clone(), listener, stopped.clone()),
        );
    }
    let (api, metrics) = start_http(&runtime, &control, &loop_alive, &stopped)?;
    spawn_tasks(&runtime, &control, &loop_alive, &stopped, hangups);
    spawn_tracked(&runtime, &loop_alive, tasks::middle_loop::<R>(shared.clone(), middle, stopped.clone()));
    drop(loop_alive);
    on_ready(&Ready { listeners: addrs, api, metrics });
    shutdown.await;
    drop(stop);
    // The listeners are closed once their loops have ended.
    let _ = loops_done.recv().await;
    info!(active = shared.active(), "shutting down: no new connections");
    let until = Instant::now() + shared.settings().shutdown_grace;
    while shared.active() > 0 && Instant::now() < until {
        R::sleep(Duration::from_millis(50)).await;
    }
    if shared.active() > 0 {
        info!(active = shared.active(), "grace period over, closing the rest");
    }
    control.save_usage();
    Ok(())
}

/// Starts the stats API (when configured; one that cannot listen is only a warning, as in
/// mtg-multi) and the Prometheus endpoint (when enabled; one that cannot listen is an error).
/// Returns where they listen.
fn start_http<R: Runtime>(
    runtime: &R,
    control: &Arc<Control>,
    loop_alive: &async_channel::Sender<()>,
    stopped: &async_channel::Receiver<()>,
) -> io::Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    let mut api = None;
    if let Some(addr) = control.config().api_bind_to {
        match runtime.bind(addr) {
            Ok(listener) => {
                api = Some(R::listener_addr(&listener)?);
                let api = super::api::Api(control.clone());
                let http = http_loop(runtime.clone(), listener, stopped.clone(), api);
                spawn_tracked(runtime, loop_alive, http);
            }
            Err(e) => warn!(%addr, error = %e, "cannot listen for the stats API"),
        }
    }
    let mut metrics = None;
    if let Some(endpoint) = control.data.metrics().prometheus() {
        let addr = endpoint.bind_to;
        let listener = runtime.bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for Prometheus metrics on {addr}: {e}"))
        })?;
        metrics = Some(R::listener_addr(&listener)?);
        let page = super::metrics_http::MetricsPage(control.data.clone());
        let http = http_loop(runtime.clone(), listener, stopped.clone(), page);
        spawn_tracked(runtime, loop_alive, http);
    }
    Ok((api, metrics))
}

/// Spawns the background [`tasks`] the config asks for: statsd flushes, throttle recomputes,
/// SIGHUP reloads (when `hangups` is given), doppelganger learning and usage saving.
fn spawn_tasks<R: Runtime>(
    runtime: &R,
    control: &Arc<Control>,
    loop_alive: &async_channel::Sender<()>,
    stopped: &async_channel::Receiver<()>,
    hangups: Option<async_channel::Receiver<()>>,
) {
    let shared = &control.data;
    if let Some(settings) = shared.metrics().statsd().cloned() {
        spawn_tracked(
            runtime,
            loop_alive,
            tasks::statsd_loop::<R>(shared.clone(), settings, stopped.clone()),
        );
    }
    if shared.throttle().is_some() {
        let interval = control.config().throttle.check_interval;
        spawn_tracked(
            runtime,
            loop_alive,
            tasks::throttle_loop::<R>(shared.clone(), interval, stopped.clone()),
        );
    }
    if let Some(hangups) = hangups {
        spawn_tracked(runtime, loop_alive, tasks::hangup_loop(control.clone(), hangups, stopped.clone()));
    }
    if !shared.settings().config.doppelganger.urls.is_empty() {
        spawn_tracked(runtime, loop_alive, tasks::learn_loop::<R>(shared.clone(), stopped.clone()));
    }
    if shared.settings().config.doppelganger.learn_from_fronting {
        spawn_tracked(runtime, loop_alive, tasks::flight_loop::<R>(shared.clone(), stopped.clone()));
    }
    spawn_tracked(runtime, loop_alive, tasks::usage_loop::<R>(control.clone(), stopped.clone()));
}

/// Accepts HTTP connections (stats API, Prometheus) and serves each with `handler`, at most
/// [`MAX_CONNECTIONS`](http_server::MAX_CONNECTIONS) at once: while that many are open it
/// stops accepting, and further clients wait in the listen backlog.
async fn http_loop<R: Runtime, H: http_server::Handler>(
    runtime: R,
    listener: R::Listener,
    stopped: async_channel::Receiver<()>,
    handler: H,
) {
    // A counting semaphore: a connection holds one item of the channel while it is served.
    let (take, give_back) = async_channel::bounded::<()>(http_server::MAX_CONNECTIONS);
    loop {
        if until_stopped(take.send(()), &stopped).await.is_none() {
            return;
        }
        let slot = Slot(give_back.clone());
        let Some(accepted) = until_stopped(R::accept(&listener), &stopped).await else {
            return;
        };
        match accepted {
            Ok((stream, _)) => {
                let handler = handler.clone();
                runtime.spawn(async move {
                    let _slot = slot;
                    http_server::serve_connection::<R, H>(stream, handler, http_server::Timeouts::DEFAULT)
                        .await;
                });
            }
            Err(e) => {
                drop(slot);
                debug!(error = %e, "HTTP accept failed");
                R::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One of an HTTP listener's connection slots, given back when dropped.
struct Slot(async_channel::Receiver<()>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}
