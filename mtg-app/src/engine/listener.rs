//! Listeners: accept loops with the concurrency limit and back-off when the process runs out
//! of descriptors, and the graceful stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use tracing::{debug, error, info, warn};

use crate::ip_filter::ListKind;
use crate::runtime::{Runtime, Signal, SignalStream};

use super::http_server;
use super::session::serve_connection;
use super::{ActiveGuard, Shared};

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
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    serve_inner(runtime, shared, shutdown, None, on_ready).await
}

/// [`serve`] driven by process signals registered with [`Runtime::signals`] (before this is
/// called, so a signal sent once "serving" is logged is never the default kill): SIGHUP
/// reloads the config, SIGTERM or SIGINT stops gracefully.
pub async fn serve_with_signals<R: Runtime>(
    runtime: R,
    shared: Arc<Shared>,
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
    serve_inner(runtime, shared, shutdown, Some(hangups), on_ready).await
}

async fn serve_inner<R: Runtime>(
    runtime: R,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    hangups: Option<async_channel::Receiver<()>>,
    on_ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for &addr in &shared.settings.bind_to {
        let listener = runtime
            .bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        addrs.push(R::listener_addr(&listener)?);
        listeners.push(listener);
    }
    // Block/allow lists are loaded before the first accept (connections wait in the backlog
    // meanwhile; each URL is bounded by the HTTP timeout), so an allowlist never refuses
    // everyone at start.
    let lists = shared.ip_filter.refresh_periods();
    futures_util::future::join_all(lists.iter().map(|&(list, _)| refresh_list(&shared, list))).await;
    let (stop, stopped) = async_channel::bounded::<()>(1);
    // Each accept loop holds a sender; when all have ended, `loops_done` yields an error.
    let (loop_alive, loops_done) = async_channel::bounded::<()>(1);
    for (list, period) in lists {
        spawn_tracked(
            &runtime,
            &loop_alive,
            ip_list_loop::<R>(shared.clone(), list, period, stopped.clone()),
        );
    }
    for listener in listeners {
        spawn_tracked(
            &runtime,
            &loop_alive,
            accept_loop(runtime.clone(), shared.clone(), listener, stopped.clone()),
        );
    }
    let mut api = None;
    if let Some(addr) = shared.settings.api_bind_to {
        // As mtg-multi: a stats API that cannot listen is a warning, not a stop.
        match runtime.bind(addr) {
            Ok(listener) => {
                api = Some(R::listener_addr(&listener)?);
                let api = super::api::Api(shared.clone());
                let http = http_loop(runtime.clone(), listener, stopped.clone(), api);
                spawn_tracked(&runtime, &loop_alive, http);
            }
            Err(e) => warn!(%addr, error = %e, "cannot listen for the stats API"),
        }
    }
    let mut metrics = None;
    if let Some(endpoint) = shared.metrics().prometheus() {
        let addr = endpoint.bind_to;
        let listener = runtime.bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for Prometheus metrics on {addr}: {e}"))
        })?;
        metrics = Some(R::listener_addr(&listener)?);
        let page = super::metrics_http::MetricsPage(shared.clone());
        let http = http_loop(runtime.clone(), listener, stopped.clone(), page);
        spawn_tracked(&runtime, &loop_alive, http);
    }
    if let Some(settings) = shared.metrics().statsd().cloned() {
        spawn_tracked(&runtime, &loop_alive, statsd_loop::<R>(shared.clone(), settings, stopped.clone()));
    }
    if let Some(throttle_interval) = shared.throttle().map(|_| shared.settings.throttle_interval) {
        spawn_tracked(
            &runtime,
            &loop_alive,
            throttle_loop::<R>(shared.clone(), throttle_interval, stopped.clone()),
        );
    }
    if let Some(hangups) = hangups {
        spawn_tracked(&runtime, &loop_alive, hangup_loop(shared.clone(), hangups, stopped.clone()));
    }
    if !shared.settings.doppelganger.urls.is_empty() {
        spawn_tracked(&runtime, &loop_alive, learn_loop::<R>(shared.clone(), stopped.clone()));
    }
    if shared.settings.usage_state_file.is_some() {
        spawn_tracked(&runtime, &loop_alive, usage_loop::<R>(shared.clone(), stopped.clone()));
    }
    drop(loop_alive);
    on_ready(&Ready { listeners: addrs, api, metrics });
    shutdown.await;
    drop(stop);
    // The listeners are closed once their loops have ended.
    let _ = loops_done.recv().await;
    info!(active = shared.active(), "shutting down: no new connections");
    let until = Instant::now() + shared.settings.shutdown_grace;
    while shared.active() > 0 && Instant::now() < until {
        R::sleep(Duration::from_millis(50)).await;
    }
    if shared.active() > 0 {
        info!(active = shared.active(), "grace period over, closing the rest");
    }
    shared.save_usage();
    Ok(())
}

/// Spawns a background loop that holds `alive` until it ends, so `serve` can wait for all.
fn spawn_tracked<R: Runtime>(
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
async fn until_stopped<F: Future>(future: F, stopped: &async_channel::Receiver<()>) -> Option<F::Output> {
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

async fn accept_loop<R: Runtime>(
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
        runtime.spawn(async move {
            let Some(_active) = ActiveGuard::try_new(&shared.active, shared.settings.concurrency) else {
                shared.metrics().concurrency_limited();
                debug!(%peer, "concurrency limit reached, closing");
                return;
            };
            serve_connection::<R>(shared.clone(), stream, peer).await;
        });
    }
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

/// Sends the metrics' changes to statsd every [`FLUSH_EVERY`](crate::metrics::statsd::FLUSH_EVERY),
/// and once more when the proxy stops.
async fn statsd_loop<R: Runtime>(
    shared: Arc<Shared>,
    settings: crate::metrics::StatsdSettings,
    stopped: async_channel::Receiver<()>,
) {
    let sink = match crate::metrics::statsd::StatsdSink::open(settings.address) {
        Ok(sink) => sink,
        Err(e) => {
            warn!(address = %settings.address, error = %e, "cannot open the statsd socket; statsd is off");
            return;
        }
    };
    loop {
        let stopping = until_stopped(R::sleep(crate::metrics::statsd::FLUSH_EVERY), &stopped).await.is_none();
        sink.send(&shared.metrics().statsd_lines(&settings));
        if stopping {
            return;
        }
    }
}

/// Recomputes the fair-share caps every `interval` (the first time one interval after start).
async fn throttle_loop<R: Runtime>(
    shared: Arc<Shared>,
    interval: Duration,
    stopped: async_channel::Receiver<()>,
) {
    use crate::users::throttle::Transition;
    loop {
        if until_stopped(R::sleep(interval), &stopped).await.is_none() {
            return;
        }
        let Some(throttle) = shared.throttle() else { return };
        let users = shared.users();
        match throttle.recompute(users.all_stats()) {
            Transition::Activated => {
                let caps = throttle.caps();
                let capped: Vec<String> = users
                    .names()
                    .iter()
                    .zip(caps.iter())
                    .filter_map(|(n, c)| c.map(|c| format!("{n}={c}")))
                    .collect();
                warn!(limit = throttle.limit(), caps = ?capped, "throttle activated");
            }
            Transition::Deactivated => info!(limit = throttle.limit(), "throttle deactivated"),
            Transition::Unchanged => {}
        }
    }
}

/// Reloads one block/allow list every `period` (the first time one period after start).
async fn ip_list_loop<R: Runtime>(
    shared: Arc<Shared>,
    list: ListKind,
    period: Duration,
    stopped: async_channel::Receiver<()>,
) {
    loop {
        if until_stopped(R::sleep(period), &stopped).await.is_none() {
            return;
        }
        if until_stopped(refresh_list(&shared, list), &stopped).await.is_none() {
            return;
        }
    }
}

/// Reloads one IP list and reports its size (`iplist_size{ip_list}`).
async fn refresh_list(shared: &Shared, list: ListKind) {
    let entries = shared.ip_filter.refresh(list).await;
    shared.metrics().iplist_size(list.label(), entries);
}

/// How often quota usage is written to the state file.
const USAGE_SAVE_EVERY: Duration = Duration::from_secs(30);

async fn usage_loop<R: Runtime>(shared: Arc<Shared>, stopped: async_channel::Receiver<()>) {
    loop {
        if until_stopped(R::sleep(USAGE_SAVE_EVERY), &stopped).await.is_none() {
            return;
        }
        shared.save_usage();
    }
}

/// Reloads the config on every SIGHUP.
async fn hangup_loop(
    shared: Arc<Shared>,
    hangups: async_channel::Receiver<()>,
    stopped: async_channel::Receiver<()>,
) {
    while let Some(Ok(())) = until_stopped(hangups.recv(), &stopped).await {
        if shared.settings.config_path.is_none() {
            warn!("SIGHUP: no config file to reload (simple-run)");
            continue;
        }
        // The outcome is logged by `reload`.
        let _ = shared.reload().await;
    }
}

/// Doppelganger learning: a raid at once, then every `raid-each`, each on a blocking thread.
async fn learn_loop<R: Runtime>(shared: Arc<Shared>, stopped: async_channel::Receiver<()>) {
    let tls = crate::doppel_learn::web_tls_config();
    loop {
        let (for_raid, tls_for_raid) = (shared.clone(), tls.clone());
        let raid = blocking::unblock(move || {
            for_raid.doppelganger().learn(&for_raid.settings.doppelganger, &tls_for_raid)
        });
        let Some(report) = until_stopped(raid, &stopped).await else {
            return;
        };
        let stats = shared.doppelganger().statistics();
        info!(
            gets = report.gets,
            failed = report.failed,
            durations = report.durations,
            cert_sizes = report.cert_sizes,
            shape = stats.delays.shape,
            scale_ms = stats.delays.scale_ms,
            cert = ?stats.cert,
            "doppelganger raid done"
        );
        if until_stopped(R::sleep(shared.settings.doppelganger.raid_each), &stopped).await.is_none() {
            return;
        }
    }
}
