//! `mtg-multi simple-run BIND SECRET`: run one secret without a config file, with mtg's flags
//! and defaults (reference §3.5). The flags become a config text, so every value is checked
//! exactly like a config file's.

use clap::Args;

/// mtg's `simple-run` flags.
#[derive(Debug, Clone, Args)]
pub struct SimpleRun {
    /// Debug logs.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Most connections at once.
    #[arg(short = 'c', long, default_value_t = 8192)]
    pub concurrency: u32,
    /// Deprecated and ignored (as in mtg).
    #[arg(short = 'b', long, default_value = "4KB")]
    pub tcp_buffer: String,
    /// prefer-ipv4, prefer-ipv6, only-ipv4 or only-ipv6.
    #[arg(short = 'i', long, default_value = "prefer-ipv6")]
    pub prefer_ip: String,
    /// Port of the fronting site.
    #[arg(short = 'p', long, default_value_t = 443)]
    pub domain_fronting_port: u16,
    /// Dial target of the fronting site (default: the secret's hostname).
    #[arg(long)]
    pub domain_fronting_host: Option<String>,
    /// Deprecated and ignored (as in mtg).
    #[arg(long)]
    pub domain_fronting_ip: Option<String>,
    /// DNS over HTTPS to this IP.
    #[arg(short = 'n', long, default_value = "1.1.1.1")]
    pub doh_ip: std::net::IpAddr,
    /// TCP dial, HTTP and relay idle timeout.
    #[arg(short = 't', long, default_value = "10s")]
    pub timeout: String,
    /// A SOCKS5 upstream (repeatable).
    #[arg(short = 's', long)]
    pub socks5_proxy: Vec<String>,
    /// Anti-replay cache size.
    #[arg(short = 'a', long, default_value = "1MB")]
    pub antireplay_cache_size: String,
    /// Expect PROXY v1/v2 headers on accepted connections.
    #[arg(long)]
    pub proxy_protocol_listener: bool,
    /// Listen address, IP:port.
    pub bind_to: String,
    /// The ee secret.
    pub secret: String,
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

impl SimpleRun {
    /// The config these flags stand for (mtg forces unknown-DC fallback and anti-replay on).
    pub fn to_config_text(&self) -> String {
        let mut text = format!(
            "debug = {}\nbind-to = {}\nsecret = {}\nconcurrency = {}\nprefer-ip = {}\nproxy-protocol-listener = {}\nallow-fallback-on-unknown-dc = true\n",
            self.debug,
            quoted(&self.bind_to),
            quoted(&self.secret),
            self.concurrency,
            quoted(&self.prefer_ip),
            self.proxy_protocol_listener,
        );
        text.push_str(&format!("[domain-fronting]\nport = {}\n", self.domain_fronting_port));
        if let Some(host) = &self.domain_fronting_host {
            text.push_str(&format!("host = {}\n", quoted(host)));
        }
        let proxies: Vec<String> = self.socks5_proxy.iter().map(|p| quoted(p)).collect();
        text.push_str(&format!(
            "[network]\ndns = {}\nproxies = [{}]\n[network.timeout]\ntcp = {t}\nhttp = {t}\nidle = {t}\n",
            quoted(&format!("https://{}", std::net::SocketAddr::new(self.doh_ip, 443))),
            proxies.join(", "),
            t = quoted(&self.timeout),
        ));
        text.push_str(&format!(
            "[defense.anti-replay]\nenabled = true\nmax-size = {}\n",
            quoted(&self.antireplay_cache_size)
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: SimpleRun,
    }

    #[test]
    fn mtg_defaults_become_a_valid_config() {
        let secret = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
        let w = Wrapper::try_parse_from(["x", "127.0.0.1:3128", secret]).unwrap();
        let c = crate::config::Config::from_toml_str(&w.run.to_config_text()).unwrap().config;
        assert_eq!(c.concurrency, 8192);
        assert!(c.allow_fallback_on_unknown_dc && c.anti_replay.enabled);
        assert_eq!(c.anti_replay.max_size, 1 << 20);
        assert_eq!(c.network.timeout.idle, std::time::Duration::from_secs(10));
        assert_eq!(c.network.timeout.tcp, std::time::Duration::from_secs(10));
        assert_eq!(c.domain_fronting.port, 443);
        assert_eq!(c.users.keys().collect::<Vec<_>>(), ["default"]);
        assert_eq!(
            c.network.dns.as_ref().map(ToString::to_string).as_deref(),
            Some("https://1.1.1.1:443/dns-query")
        );
        let w = Wrapper::try_parse_from(["x", "-n", "2606:4700::1111", "127.0.0.1:3128", secret]).unwrap();
        let c = crate::config::Config::from_toml_str(&w.run.to_config_text()).unwrap().config;
        assert_eq!(
            c.network.dns.as_ref().map(ToString::to_string).as_deref(),
            Some("https://[2606:4700::1111]:443/dns-query")
        );
        // mtg's --doh-ip is an IP: a name is a usage error, not a silent DoH hostname.
        assert!(Wrapper::try_parse_from(["x", "-n", "nope", "127.0.0.1:3128", secret]).is_err());

        let w = Wrapper::try_parse_from(["x", "-t", "forever", "127.0.0.1:3128", secret]).unwrap();
        let e = crate::config::Config::from_toml_str(&w.run.to_config_text()).unwrap_err().to_string();
        assert!(e.starts_with("invalid value for network.timeout.tcp: \"forever\""), "{e}");
    }
}
