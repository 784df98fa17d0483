//! The real proxy (mtg-app's engine, built from a config text) running in this process on the
//! runtime this test binary was built with (`--features tokio` or `--features smol`), bound to
//! a free loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use mtg_app::config::Config;
use mtg_app::control::{Control, serve};
use mtg_app::engine::Settings;
use mtg_app::run::{build_shared, restore_usage};
use mtg_app::runtime::{Runtime, Selected};

/// Which runtime the proxy under test runs on.
#[cfg(feature = "tokio")]
pub const RUNTIME: &str = "tokio";
/// Which runtime the proxy under test runs on.
#[cfg(all(feature = "smol", not(feature = "tokio")))]
pub const RUNTIME: &str = "smol";

/// A running proxy; stopped (gracefully) on drop.
pub struct ProxyUnderTest {
    addr: SocketAddr,
    api: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    control: Arc<Control>,
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ProxyUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUnderTest").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ProxyUnderTest {
    /// Starts the proxy for `config` (its `bind-to` is replaced by `127.0.0.1:0`).
    pub fn start(config: &str) -> Self {
        Self::start_with(config, None)
    }

    /// Starts the proxy from a config file, which `POST /reload` and SIGHUP re-read.
    pub fn start_file(path: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read the test config");
        Self::start_with(&text, Some(path.to_owned()))
    }

    fn start_with(config: &str, path: Option<std::path::PathBuf>) -> Self {
        let mut loaded = Config::from_toml_str(config).unwrap_or_else(|e| panic!("test config: {e}"));
        if !config.contains("learn-from-fronting") {
            // Learning probes the fronting site at start; tests that count its connections
            // must not see them, so it is on only where a test asks for it.
            loaded.config.doppelganger.learn_from_fronting = false;
        }
        if loaded.config.prometheus.bind_to.is_some() {
            loaded.config.prometheus.bind_to = Some("127.0.0.1:0".parse().expect("literal address"));
        }
        loaded.config.bind_to = vec!["127.0.0.1:0".parse().expect("literal address")];
        keep_middle_proxy_offline(&mut loaded.config.middle_proxy);
        if loaded.config.api_bind_to.is_some() {
            loaded.config.api_bind_to = Some("127.0.0.1:0".parse().expect("literal address"));
        }
        let mut settings = Settings::from_config(&loaded.config);
        settings.shutdown_grace = Duration::from_millis(200);
        let control = Control::new(build_shared(&loaded.config, settings), path);
        restore_usage(&loaded.config, &control).unwrap_or_else(|e| panic!("{e}"));
        if let Some(cluster) = &loaded.config.cluster {
            mtg_app::cluster::start(&control, cluster).unwrap_or_else(|e| panic!("{e}"));
        }
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (ready_tx, ready_rx) = mpsc::channel();
        let for_thread = control.clone();
        let thread = std::thread::spawn(move || {
            let served = Selected::run(|runtime| async move {
                let shutdown = async move {
                    let _ = stopped.recv().await;
                };
                serve(runtime, for_thread, shutdown, move |ready| {
                    let _ = ready_tx.send((ready.listeners[0], ready.api, ready.metrics));
                })
                .await
            });
            if let Ok(Err(e)) | Err(e) = served {
                panic!("proxy under test failed: {e}");
            }
        });
        let (addr, api, metrics) =
            ready_rx.recv_timeout(Duration::from_secs(10)).expect("proxy did not start listening");
        Self { addr, api, metrics, control, stop: Some(stop), thread: Some(thread) }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the stats API listens (when the config has `api-bind-to`).
    pub fn api(&self) -> Option<SocketAddr> {
        self.api
    }

    /// Where the Prometheus endpoint listens (when `[stats.prometheus]` is enabled).
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The `/stats` body now, straight from the proxy's state.
    pub fn stats_json(&self) -> String {
        self.control.stats_json()
    }

    /// Recomputes the throttle caps now (instead of waiting for `check-interval`).
    pub fn recompute_throttle(&self) {
        let users = self.control.data.users();
        if let Some(t) = self.control.data.throttle() {
            t.recompute(users.all_stats());
        }
    }

    /// The doppelganger's statistics (settable) and counters.
    pub fn doppelganger(&self) -> &mtg_app::engine::Doppelganger {
        self.control.data.doppelganger()
    }

    /// The middle-proxy snapshot store sessions of tagged users route by.
    pub fn middle(&self) -> &mtg_app::middle::MiddleStore {
        self.control.data.middle()
    }

    /// Publishes a middle-proxy snapshot as the bootstrap does (retiring stale connections).
    pub fn publish_middle(&self, snapshot: mtg_app::middle::MiddleSnapshot) {
        self.control.data.publish_middle(snapshot);
    }

    /// Publishes a snapshot that sends DC 2 and every other DC (the `default` group) to the
    /// middle proxy at `middle`, with [`test_secret`](crate::fake_middle::test_secret).
    pub fn route_to_middle(&self, middle: SocketAddr) {
        let text = format!("proxy_for 2 {middle};\ndefault 2;\n");
        self.publish_middle(mtg_app::middle::MiddleSnapshot {
            secret: crate::fake_middle::test_secret(),
            v4: mtg_proto::middle::proxy_config::parse(&text).map,
            v6: mtg_proto::middle::ProxyMap::default(),
        });
    }

    /// Waits until the middle-proxy store's generation is at least `n`, up to `timeout`;
    /// whether it got there.
    pub fn wait_middle_generation(&self, n: u64, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while self.middle().generation() < n {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The middle-proxy connection pool.
    pub fn middle_pool(&self) -> &mtg_app::middle::MiddlePool {
        self.control.data.middle_pool()
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.control.data.active()
    }

    /// Waits until at most `n` connections are active, up to `timeout`.
    pub fn wait_active_at_most(&self, n: usize, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if self.active() <= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.active() <= n
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(cluster) = self.control.cluster() {
            cluster.stop();
        }
    }
}

/// Points `[middle-proxy]` sources left at Telegram's defaults at a closed loopback port: a
/// test that gives a user an ad tag never reaches for core.telegram.org.
fn keep_middle_proxy_offline(sources: &mut mtg_app::config::MiddleProxy) {
    use mtg_app::config::ListSource;
    let offline = |url: &str| ListSource::Url(format!("http://127.0.0.1:1/{url}"));
    for (source, name) in [
        (&mut sources.secret_url, "getProxySecret"),
        (&mut sources.config_url, "getProxyConfig"),
        (&mut sources.config_url_v6, "getProxyConfigV6"),
    ] {
        if matches!(source, ListSource::Url(url) if url.contains("core.telegram.org")) {
            *source = offline(name);
        }
    }
}
