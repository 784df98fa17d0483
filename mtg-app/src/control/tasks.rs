//! The background tasks [`serve`](super::serve) runs next to the accept loops: statsd
//! flushes, throttle recomputes, IP-list refreshes, usage saving, SIGHUP reloads,
//! doppelganger learning and the middle-proxy bootstrap. Each ends when the stop channel closes.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::engine::{Shared, until_stopped};
use crate::ip_filter::ListKind;
use crate::runtime::Runtime;

use super::Control;

/// Sends the metrics' changes to statsd every [`FLUSH_EVERY`](crate::metrics::statsd::FLUSH_EVERY),
/// and once more when the proxy stops.
pub(super) async fn statsd_loop<R: Runtime>(
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
pub(super) async fn throttle_loop<R: Runtime>(
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
pub(super) async fn ip_list_loop<R: Runtime>(
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
pub(super) async fn refresh_list(shared: &Shared, list: ListKind) {
    let entries = shared.ip_filter().refresh(list).await;
    shared.metrics().iplist_size(list.label(), entries);
}

/// How often the middle-proxy task looks again for a tagged user while there is none.
const MIDDLE_IDLE_CHECK: Duration = Duration::from_secs(5);

/// The middle-proxy bootstrap: while some user has an effective ad tag, fetches the secret
/// and lists at once, then every `update-each` plus up to 5 % jitter, or sooner when the pool
/// sees handshakes failing on several endpoints; while none has, only looks again every
/// [`MIDDLE_IDLE_CHECK`] (a tag set by a reload or the API starts it).
pub(super) async fn middle_loop<R: Runtime>(
    shared: Arc<Shared>,
    mut bootstrap: crate::middle::Bootstrapper,
    stopped: async_channel::Receiver<()>,
) {
    loop {
        let wait = if crate::middle::Bootstrapper::wanted(&shared) {
            if until_stopped(bootstrap.refresh(&shared), &stopped).await.is_none() {
                return;
            }
            bootstrap.next_wait()
        } else {
            MIDDLE_IDLE_CHECK
        };
        let slept = std::pin::pin!(R::sleep(wait));
        let refetch = std::pin::pin!(shared.middle_pool().refetch_wanted());
        if until_stopped(futures_util::future::select(slept, refetch), &stopped).await.is_none() {
            return;
        }
    }
}

/// How often quota usage is written to the state file.
const USAGE_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Every [`USAGE_SAVE_EVERY`]: rolls monthly quota periods over and writes the usage state
/// file (when one is configured).
pub(super) async fn usage_loop<R: Runtime>(control: Arc<Control>, stopped: async_channel::Receiver<()>) {
    loop {
        if until_stopped(R::sleep(USAGE_SAVE_EVERY), &stopped).await.is_none() {
            return;
        }
        control.roll_quota_periods();
        control.save_usage();
    }
}

/// Reloads the config on every SIGHUP.
pub(super) async fn hangup_loop(
    control: Arc<Control>,
    hangups: async_channel::Receiver<()>,
    stopped: async_channel::Receiver<()>,
) {
    while let Some(Ok(())) = until_stopped(hangups.recv(), &stopped).await {
        if control.config_path.is_none() {
            warn!("SIGHUP: no config file to reload (simple-run)");
            continue;
        }
        // The outcome is logged by `reload`.
        let _ = control.reload().await;
    }
}

/// Learning the fronting site's first flight: a round at once, then every `raid-each`. The
/// first failure of a run of failures is a warning, the rest are debug lines.
pub(super) async fn flight_loop<R: Runtime>(shared: Arc<Shared>, stopped: async_channel::Receiver<()>) {
    let mut failing = false;
    loop {
        let settings = shared.settings();
        let config = &settings.config;
        let (timeout, raid_each) = (config.network.timeout.http, config.doppelganger.raid_each);
        let users = shared.users();
        let target =
            users.default_host().map(|host| crate::flight_learn::FlightTarget::for_host(host, config));
        drop(users);
        if let Some(target) = target {
            let doppel = shared.doppelganger();
            let round =
                crate::flight_learn::round::<R>(&target, &settings.resolver, timeout, |kind, flight| {
                    doppel.add_flight(kind, flight);
                });
            let Some(report) = until_stopped(round, &stopped).await else {
                return;
            };
            if report.observed > 0 {
                failing = false;
                let shapes = crate::flight_learn::describe(&doppel.flights()).join("; ");
                info!(site = %target, observed = report.observed, failed = report.failed, %shapes,
                    "learned the fronting site's first flight");
            } else if !failing {
                failing = true;
                let error = report.last_error.unwrap_or_default();
                warn!(site = %target, %error,
                    "cannot learn the fronting site's first flight; the fake flight keeps its last shape");
            } else {
                debug!(site = %target, error = ?report.last_error, "still cannot learn the fronting site's first flight");
            }
        }
        if until_stopped(R::sleep(raid_each), &stopped).await.is_none() {
            return;
        }
    }
}

/// Doppelganger learning: a raid at once, then every `raid-each`, each on a blocking thread.
pub(super) async fn learn_loop<R: Runtime>(shared: Arc<Shared>, stopped: async_channel::Receiver<()>) {
    let tls = crate::doppel_learn::web_tls_config();
    let learning = Arc::new(crate::doppel_learn::LearnSettings::from_config(&shared.settings().config));
    loop {
        let (for_raid, tls_for_raid, learning_now) = (shared.clone(), tls.clone(), learning.clone());
        let raid = blocking::unblock(move || for_raid.doppelganger().learn(&learning_now, &tls_for_raid));
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
        if until_stopped(R::sleep(learning.raid_each), &stopped).await.is_none() {
            return;
        }
    }
}
