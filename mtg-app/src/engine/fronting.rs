//! Domain fronting: a connection that is not a valid client is handed, byte for byte, to the
//! real website, so the proxy looks exactly like it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mtg_proto::HostId;
use tracing::debug;

use crate::runtime::Runtime;

use super::relay::{End, Plain, Pump, Relay};
use super::zero_copy::Spliced;
use super::{Directory, Shared, upstream, with_timeout};

/// How long a fronting host's addresses are reused before it is resolved again (the OS
/// resolver reports no TTL; a site moving is seen within a minute, and a failed dial forgets
/// the addresses at once).
const ADDR_TTL: Duration = Duration::from_secs(60);
/// Most hosts cached (the configured fronting hosts; more are dropped, expired ones first).
const ADDR_CACHE_MAX: usize = 64;

/// One host's addresses: the port they were resolved for, when, and the addresses.
type Resolved = (u16, Instant, Arc<[SocketAddr]>);

/// The fronting hosts' resolved addresses, reused for [`ADDR_TTL`].
#[derive(Debug, Default)]
pub(crate) struct AddrCache {
    entries: Mutex<HashMap<Box<str>, Resolved>>,
}

impl AddrCache {
    /// The cached addresses of `host` on `port`, if resolved less than [`ADDR_TTL`] before `now`.
    fn get(&self, host: &str, port: u16, now: Instant) -> Option<Arc<[SocketAddr]>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (p, at, addrs) = entries.get(host)?;
        (*p == port && now.saturating_duration_since(*at) < ADDR_TTL).then(|| addrs.clone())
    }

    fn put(&self, host: &str, port: u16, addrs: Arc<[SocketAddr]>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= ADDR_CACHE_MAX && !entries.contains_key(host) {
            entries.retain(|_, (_, at, _)| now.saturating_duration_since(*at) < ADDR_TTL);
            if entries.len() >= ADDR_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(host.into(), (port, now, addrs));
    }

    fn forget(&self, host: &str) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(host);
    }
}

/// Dials the fronting site `host`: its cached addresses, else resolved with the configured
/// resolver (within the dial timeout) and cached.
async fn dial_site<R: Runtime>(shared: &Shared, host: &str) -> io::Result<(R::Stream, SocketAddr)> {
    let settings = &shared.settings;
    let (port, timeout) = (settings.config.domain_fronting.port, settings.config.network.timeout.tcp);
    let addrs = match shared.front_addrs.get(host, port, Instant::now()) {
        Some(addrs) => addrs,
        None => {
            let Some(resolved) =
                with_timeout::<R, _>(timeout, settings.resolver.resolve::<R>(host, port)).await
            else {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")));
            };
            let addrs: Arc<[SocketAddr]> = resolved?.into();
            shared.front_addrs.put(host, port, addrs.clone(), Instant::now());
            addrs
        }
    };
    let dialed = upstream::dial_first::<R>(&addrs, timeout).await;
    if dialed.is_err() {
        shared.front_addrs.forget(host);
    }
    dialed
}

/// Dials the fronting site for `host`, replays `read_so_far` (after a PROXY v2 header when
/// configured) and splices until either side ends.
pub(crate) async fn front<R: Runtime>(
    shared: &Shared,
    users: &Directory,
    client: R::Stream,
    peer: SocketAddr,
    host: Option<HostId>,
    read_so_far: &[u8],
) -> Result<(End, u64, u64), io::Error> {
    let settings = &shared.settings;
    let (_fronting_live, traffic) = shared.metrics().fronting(peer.ip());
    let fronting = &settings.config.domain_fronting;
    let target = fronting
        .host
        .as_deref()
        .or_else(|| host.and_then(|h| users.table().host_name(h)))
        .or_else(|| users.default_host())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no fronting host configured"))?
        .to_owned();
    let (site, site_addr) = dial_site::<R>(shared, &target).await?;
    let mut initial = Vec::with_capacity(read_so_far.len() + 52);
    if fronting.proxy_protocol {
        mtg_proto::proxy_protocol::write_v2(&mut initial, peer, site_addr);
    }
    initial.extend_from_slice(read_so_far);
    debug!(%peer, front = %target, replayed = read_so_far.len(), "fronting");
    let relay: Relay<R, R::Stream, Pump<Plain>, Spliced<Plain>> = Relay::new(
        client,
        site,
        Pump::new(Plain::default(), &initial),
        Spliced::new(Plain::default(), settings.config.network.zero_copy),
        settings.config.network.timeout.idle,
    )
    .metered(traffic.clone());
    // The replayed bytes reach the site too; the PROXY header is ours, not the client's.
    traffic.add(read_so_far.len() as u64, 0);
    let mut relay = relay;
    let end = (&mut relay).await;
    Ok((end, relay.up.transform.bytes, relay.down.transform().bytes))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn addrs(last: u8) -> Arc<[SocketAddr]> {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), 443)].into()
    }

    #[test]
    fn addresses_are_reused_within_the_ttl_only() {
        let cache = AddrCache::default();
        let t0 = Instant::now();
        assert!(cache.get("site.example", 443, t0).is_none());
        cache.put("site.example", 443, addrs(1), t0);
        assert_eq!(cache.get("site.example", 443, t0 + ADDR_TTL / 2), Some(addrs(1)));
        assert!(cache.get("site.example", 8443, t0).is_none(), "another port is another entry");
        assert!(cache.get("site.example", 443, t0 + ADDR_TTL).is_none(), "expired");
        cache.put("site.example", 443, addrs(2), t0 + ADDR_TTL);
        assert_eq!(cache.get("site.example", 443, t0 + ADDR_TTL), Some(addrs(2)));
        cache.forget("site.example");
        assert!(cache.get("site.example", 443, t0 + ADDR_TTL).is_none(), "forgotten after a failed dial");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = AddrCache::default();
        let t0 = Instant::now();
        for i in 0..ADDR_CACHE_MAX * 3 {
            cache.put(&format!("h{i}.example"), 443, addrs(1), t0);
            assert!(cache.entries.lock().unwrap().len() <= ADDR_CACHE_MAX);
        }
        let last = format!("h{}.example", ADDR_CACHE_MAX * 3 - 1);
        assert!(cache.get(&last, 443, t0).is_some());
    }
}
