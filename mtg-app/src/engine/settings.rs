//! What the engine runs with: the config it was started with, whose plain values sessions read
//! directly, and the few things derived from it once (handshake rules, DC table, resolver,
//! TCP options).

use std::sync::Arc;
use std::time::Duration;

use mtg_proto::HandshakeConfig;
use mtg_proto::doppel::FlightProfile;
use mtg_proto::tls::server_hello::AppDataLen;

use crate::config::Config;
use crate::dc_table::DcTable;
use crate::resolver::Resolver;

use super::{ClientSegments, Keepalive, TcpTuning};

/// How long live sessions may finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The engine's settings. `Debug` shows no secret (the config hides its token and holds no
/// users).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config the proxy started with, minus its users, per-user limits and ad tags: the
    /// live ones are in [`Shared::users`](super::Shared::users), swapped by reloads. Keys that need a
    /// restart (listeners, timeouts, fronting, doppelganger, …) are read from here.
    pub config: Arc<Config>,
    /// Handshake rules for the core (`secured`, `tolerate-time-skewness`).
    pub handshake: HandshakeConfig,
    /// DC addresses (`prefer-ip`, `[network] dc-overrides`).
    pub dcs: DcTable,
    /// Resolves the names the proxy dials (`[network] dns`, else the OS resolver).
    pub resolver: Resolver,
    /// TCP options of accepted client sockets.
    pub accepted_tcp: TcpTuning,
    /// TCP options of DC dials (`[network.keep-alive]`).
    pub dc_tcp: TcpTuning,
    /// Segment sizes of client connections (`[network] client-mss`, `client-mss-bulk`).
    pub client_segments: ClientSegments,
    /// How long live sessions may run on after SIGINT/SIGTERM (not a config key; tests
    /// shorten it).
    pub shutdown_grace: Duration,
}

impl Settings {
    /// The settings `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        let keep_alive = &config.network.keep_alive;
        Self {
            config: Arc::new(Config {
                users: Default::default(),
                secret_limits: Default::default(),
                secret_limits_default: Default::default(),
                ad_tag: None,
                secret_ad_tags: Default::default(),
                ..config.clone()
            }),
            handshake: HandshakeConfig {
                time_skew: config.tolerate_time_skewness,
                secured: config.secured,
                app_data_len: AppDataLen::default(),
                flight: FlightProfile::EMPTY,
            },
            dcs: DcTable::new(config.prefer_ip, &config.network.dc_overrides),
            resolver: Resolver::new(config.network.dns.as_ref()),
            accepted_tcp: TcpTuning::accepted(),
            dc_tcp: TcpTuning::outbound((!keep_alive.disabled).then_some(Keepalive {
                idle: keep_alive.idle,
                interval: keep_alive.interval,
                count: keep_alive.count,
            })),
            client_segments: ClientSegments::from_config(&config.network),
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }

    /// Most connections served at once (`concurrency`); more are closed on accept.
    pub fn concurrency(&self) -> usize {
        usize::try_from(self.config.concurrency).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_hold_no_user_and_show_no_secret() {
        let text = "bind-to = \"127.0.0.1:3128\"\napi-token = \"zx-Tok3n-9f81c2\"\n\
            ad-tag = \"0123456789abcdef0123456789abcdef\"\n\
            [secrets]\nalice = \"ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d\"\n\
            [secret-limits.alice]\nmax-connections = 3\n";
        let loaded = Config::from_toml_str(text).expect("a valid config");
        let settings = Settings::from_config(&loaded.config);
        assert!(settings.config.users.is_empty() && settings.config.secret_limits.is_empty());
        assert_eq!(settings.config.ad_tag, None, "the live tags are in the directory");
        assert_eq!(settings.config.bind_to, loaded.config.bind_to);
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("zx-Tok3n") && !shown.contains("367a189aee18fa31c190054efd4a8e95"),
            "{shown}"
        );
    }
}
