//! `mtg-multi doctor [--skip-native-check] CONFIG`: checks a setup as mtg's `doctor` does and
//! prints sections of ✅ / ⚠️ / ❌ lines. Exit status 0 when nothing failed, 1 when a check
//! failed, 2 for a config error.
//!
//! Sections: the config (and deprecated keys), the clock against `0.pool.ntp.org`, every DC
//! of the table with a real MTProto exchange (in parallel), the fronting site, whether
//! the secrets' hostnames resolve to our public address, and (when some user has an ad tag)
//! the middle-proxy bootstrap documents. The network checks run at once, each
//! within its timeout.

pub mod dc_probe;
mod flight;
pub mod middle;
pub mod ntp;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::future::{join_all, join4};
use mtg_proto::Secret;

use crate::config::{Config, ConfigWarning, Loaded, ProxyUrl};
use crate::dc_table::DcTable;
use crate::engine::{upstream, with_timeout};
use crate::public_ip::{self, PublicIps};
use crate::resolver::Resolver;
use crate::runtime::{Runtime, Selected};
use crate::sni_dns::{self, Verdict};

/// Exit status when a check failed.
pub const EXIT_FAILED: u8 = 1;

/// How long the time server may take to answer.
const NTP_TIMEOUT: Duration = Duration::from_secs(3);

/// Most a DC probe may take (mtg's budget), whatever `[network.timeout] tcp` says.
const DC_PROBE_MAX: Duration = Duration::from_secs(10);

/// What to check and where to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// `--skip-native-check`: no direct DC probes.
    pub skip_native_check: bool,
    /// The SNTP server, `host:port`.
    pub ntp_server: String,
    /// The public-IP detection service.
    pub detect_url: String,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            skip_native_check: false,
            ntp_server: ntp::DEFAULT_SERVER.to_owned(),
            detect_url: public_ip::DETECT_URL.to_owned(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth a look; not a failure.
    Warning,
    /// Failed: `doctor` exits 1.
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "✅",
            Self::Warning => "⚠️",
            Self::Failed => "❌",
        })
    }
}

/// A titled group of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading.
    pub title: String,
    /// One line per result.
    pub lines: Vec<(Status, String)>,
}

impl Section {
    fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), lines: Vec::new() }
    }

    fn push(&mut self, status: Status, text: impl Into<String>) {
        self.lines.push((status, text.into()));
    }
}

/// The exit status for `sections`: [`EXIT_FAILED`] if any line failed, else 0.
pub fn exit_status(sections: &[Section]) -> u8 {
    let failed = sections.iter().flat_map(|s| &s.lines).any(|(status, _)| *status == Status::Failed);
    if failed { EXIT_FAILED } else { 0 }
}

/// Writes `sections` as mtg does: the title, then indented lines, a blank line between.
pub fn render(sections: &[Section], out: &mut dyn Write) -> std::io::Result<()> {
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", section.title)?;
        for (status, text) in &section.lines {
            writeln!(out, "  {status} {text}")?;
        }
    }
    Ok(())
}

/// Runs `doctor` on the config at `path`, printing to `out` (config errors go to stderr);
/// returns the exit status.
pub fn doctor(path: &Path, options: &DoctorOptions, out: &mut dyn Write) -> u8 {
    let loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("mtg-multi: {e}");
            return crate::run::EXIT_CONFIG;
        }
    };
    let sections = match Selected::run(|_| check::<Selected>(path, &loaded, options)) {
        Ok(sections) => sections,
        Err(e) => {
            eprintln!("mtg-multi: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = render(&sections, out).and_then(|()| out.flush()) {
        eprintln!("mtg-multi: cannot write the report: {e}");
        return EXIT_FAILED;
    }
    exit_status(&sections)
}

/// Every check of a loaded config, in report order.
pub async fn check<R: Runtime>(path: &Path, loaded: &Loaded, options: &DoctorOptions) -> Vec<Section> {
    let config = &loaded.config;
    let mut sections = config_sections(path, loaded);
    let resolver = Resolver::new(config.network.dns.as_ref());
    let native = async {
        if options.skip_native_check {
            None
        } else {
            Some(dc_section::<R>(config, &resolver, &[], "Validate native network connectivity".into()).await)
        }
    };
    // mtg's section 4: the same probes through each SOCKS5 proxy alone.
    let proxied = join_all(config.network.proxies.iter().map(|proxy| {
        let title = format!("Validate network connectivity with proxy {proxy}");
        dc_section::<R>(config, &resolver, std::slice::from_ref(proxy), title)
    }));
    let middle = async { if middle::wanted(config) { Some(middle::section(config).await) } else { None } };
    let ((time, middle), (native, proxied), (fronting, flight), sni) = join4(
        futures_util::future::join(time_section(config, &options.ntp_server), middle),
        futures_util::future::join(native, proxied),
        futures_util::future::join(
            fronting_section::<R>(config, &resolver),
            flight::section::<R>(config, &resolver),
        ),
        sni_section::<R>(config, &resolver, &options.detect_url),
    )
    .await;
    sections.push(time);
    sections.extend(native);
    sections.extend(proxied);
    sections.push(fronting);
    sections.extend(flight);
    sections.push(sni);
    sections.extend(middle);
    sections
}

fn config_sections(path: &Path, loaded: &Loaded) -> Vec<Section> {
    let config = &loaded.config;
    let mut file = Section::new("Config");
    let listen: Vec<String> = config.bind_to.iter().map(ToString::to_string).collect();
    file.push(
        Status::Ok,
        format!(
            "{} is valid: {} user(s), listening on {}",
            path.display(),
            config.users.len(),
            listen.join(", ")
        ),
    );
    let mut deprecated = Section::new("Deprecated options");
    for warning in &loaded.warnings {
        match warning {
            ConfigWarning::Deprecated { .. } => deprecated.push(Status::Warning, warning.to_string()),
            _ => file.push(Status::Warning, warning.to_string()),
        }
    }
    if deprecated.lines.is_empty() {
        deprecated.push(Status::Ok, "no deprecated options are used");
    }
    vec![file, deprecated]
}

/// Classifies a clock drift against `tolerate-time-skewness` with mtg's thresholds.
pub fn skew_status(drift: Duration, tolerance: Duration) -> Status {
    let ratio = drift.as_secs_f64() / tolerance.as_secs_f64().max(f64::MIN_POSITIVE);
    if ratio < 0.3 {
        Status::Ok
    } else if ratio < 0.7 {
        Status::Warning
    } else {
        Status::Failed
    }
}

async fn time_section(config: &Config, server: &str) -> Section {
    let mut section = Section::new("Time skewness");
    let server = server.to_owned();
    let tolerance = config.tolerate_time_skewness;
    match blocking::unblock(move || ntp::query(&server, NTP_TIMEOUT)).await {
        Ok(offset) => {
            let drift = Duration::try_from_secs_f64(offset.abs()).unwrap_or(Duration::MAX);
            let status = skew_status(drift, tolerance);
            let advice = if status == Status::Ok { "" } else { "; synchronise the clock (NTP)" };
            section.push(
                status,
                format!(
                    "clock drift is {:.3}s ({}), tolerate-time-skewness is {tolerance:?}{advice}",
                    drift.as_secs_f64(),
                    if offset > 0.0 { "behind" } else { "ahead" },
                ),
            );
        }
        Err(e) => section.push(Status::Warning, format!("could not check the clock: {e}")),
    }
    section
}

/// Probes every DC of the table, directly (`via` empty) or through the SOCKS5 proxies `via`.
async fn dc_section<R: Runtime>(
    config: &Config,
    resolver: &Resolver,
    via: &[ProxyUrl],
    title: String,
) -> Section {
    let table = DcTable::new(config.prefer_ip, &config.network.dc_overrides);
    let timeout = config.network.timeout.tcp.min(DC_PROBE_MAX);
    let probes = table.dcs().map(|(dc, addrs)| async move {
        if addrs.is_empty() {
            return (dc, Err(format!("no addresses (prefer-ip = {:?})", config.prefer_ip)));
        }
        (dc, dc_probe::probe::<R>(dc, addrs, via, resolver, timeout).await)
    });
    let mut section = Section::new(title);
    for (dc, result) in join_all(probes).await {
        match result {
            Ok(answered) => section.push(
                Status::Ok,
                format!(
                    "DC {dc}: {} answered resPQ in {:.1}ms",
                    answered.addr,
                    answered.rtt.as_secs_f64() * 1e3
                ),
            ),
            Err(e) => section.push(Status::Failed, format!("DC {dc}: {e}")),
        }
    }
    section
}

/// The distinct hostnames of the users' secrets (FakeTLS ones; `dd` secrets have none).
fn secret_hosts(config: &Config) -> BTreeSet<String> {
    config.users.values().map(Secret::host).filter(|h| !h.is_empty()).map(str::to_owned).collect()
}

async fn fronting_section<R: Runtime>(config: &Config, resolver: &Resolver) -> Section {
    let port = config.domain_fronting.port;
    let hosts = match &config.domain_fronting.host {
        Some(host) => BTreeSet::from([host.clone()]),
        None => secret_hosts(config),
    };
    let timeout = config.network.timeout.tcp;
    let dials = hosts.iter().map(|host| async move {
        let result =
            with_timeout::<R, _>(timeout, upstream::dial_host::<R>(host, port, resolver, timeout)).await;
        (host, result)
    });
    let mut section = Section::new("Validate fronting domain connectivity");
    for (host, result) in join_all(dials).await {
        let (status, text) = match result {
            Some(Ok((_, addr))) => (Status::Ok, format!("{host}:{port} is reachable ({addr})")),
            Some(Err(e)) => (Status::Failed, format!("cannot connect to {host}:{port}: {e}")),
            None => (Status::Failed, format!("cannot connect to {host}:{port} within {timeout:?}")),
        };
        section.push(status, text);
    }
    if section.lines.is_empty() {
        section.push(Status::Ok, "no fronting site: no secret carries a hostname");
    }
    section
}

async fn sni_section<R: Runtime>(config: &Config, resolver: &Resolver, detect_url: &str) -> Section {
    let mut section = Section::new("Validate SNI-DNS match");
    let hosts = secret_hosts(config);
    if hosts.is_empty() {
        section.push(Status::Ok, "no secret carries a hostname");
        return section;
    }
    let (v4, v6) = (config.public_ipv4.map(IpAddr::V4), config.public_ipv6.map(IpAddr::V6));
    let (url, timeout) = (detect_url.to_owned(), config.network.timeout.http);
    let ours: PublicIps =
        blocking::unblock(move || public_ip::known_or_detected(v4, v6, &url, timeout)).await;
    if ours.is_empty() {
        section.push(
            Status::Warning,
            format!(
                "cannot check: our public IP is unknown (set public-ipv4 / public-ipv6): {}",
                ours.errors.join("; ")
            ),
        );
        return section;
    }
    let ours = ours.addresses();
    let timeout = config.network.timeout.tcp;
    let lookups = hosts.iter().map(|host| async move {
        let result = with_timeout::<R, _>(timeout, resolver.resolve::<R>(host, 443)).await;
        (host, result)
    });
    for (host, result) in join_all(lookups).await {
        let resolved: Vec<IpAddr> = match result {
            Some(Ok(addrs)) => {
                addrs.iter().map(|a| a.ip().to_canonical()).collect::<BTreeSet<_>>().into_iter().collect()
            }
            Some(Err(e)) => {
                section.push(Status::Warning, format!("cannot resolve {host}: {e}"));
                continue;
            }
            None => {
                section.push(Status::Warning, format!("cannot resolve {host} within {timeout:?}"));
                continue;
            }
        };
        let shown = sni_dns::list(&resolved);
        match sni_dns::compare(&resolved, &ours) {
            Verdict::Match => section.push(
                Status::Ok,
                format!("{host} resolves to {shown}, our public IP {}", sni_dns::list(&ours)),
            ),
            Verdict::Partial { missing } => section.push(
                Status::Warning,
                format!("{host} resolves to {shown}, not to our public IP {}", sni_dns::list(&missing)),
            ),
            Verdict::Mismatch => section.push(
                Status::Failed,
                format!(
                    "{host} resolves to {shown}, not to our public IP {}: censors can spot the SNI mismatch",
                    sni_dns::list(&ours)
                ),
            ),
        }
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_thresholds_are_mtgs() {
        let tol = Duration::from_secs(10);
        assert_eq!(skew_status(Duration::from_millis(2_999), tol), Status::Ok);
        assert_eq!(skew_status(Duration::from_secs(3), tol), Status::Warning);
        assert_eq!(skew_status(Duration::from_millis(6_999), tol), Status::Warning);
        assert_eq!(skew_status(Duration::from_secs(7), tol), Status::Failed);
        assert_eq!(skew_status(Duration::from_secs(1), Duration::ZERO), Status::Failed);
    }

    #[test]
    fn renders_sections_and_the_exit_status() {
        let mut a = Section::new("A");
        a.push(Status::Ok, "fine");
        a.push(Status::Warning, "hmm");
        let mut b = Section::new("B");
        b.push(Status::Failed, "broken");
        let mut out = Vec::new();
        render(&[a.clone(), b.clone()], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A\n  ✅ fine\n  ⚠️ hmm\n\nB\n  ❌ broken\n");
        assert_eq!(exit_status(std::slice::from_ref(&a)), 0);
        assert_eq!(exit_status(&[a, b]), EXIT_FAILED);
    }
}
