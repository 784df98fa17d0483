//! Domain fronting: a connection that is not a valid client is handed, byte for byte, to the
//! real website, so the proxy looks exactly like it.

use std::net::SocketAddr;

use mtg_proto::HostId;
use tracing::debug;

use crate::runtime::Runtime;

use super::relay::{End, Plain, Pump, Relay};
use super::{Directory, Shared, upstream};

/// Dials the fronting site for `host`, replays `read_so_far` (after a PROXY v2 header when
/// configured) and splices until either side ends.
pub(crate) async fn front<R: Runtime>(
    shared: &Shared,
    users: &Directory,
    client: R::Stream,
    peer: SocketAddr,
    host: Option<HostId>,
    read_so_far: &[u8],
) -> Result<(End, u64, u64), std::io::Error> {
    let settings = &shared.settings;
    let (_fronting_live, traffic) = shared.metrics().fronting(peer.ip());
    let target = settings
        .fronting
        .host
        .as_deref()
        .or_else(|| host.and_then(|h| users.table().host_name(h)))
        .or_else(|| users.default_host())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no fronting host configured"))?
        .to_owned();
    let (site, site_addr) =
        upstream::dial_host::<R>(&target, settings.fronting.port, &settings.resolver, settings.dial_timeout)
            .await?;
    let mut initial = Vec::with_capacity(read_so_far.len() + 52);
    if settings.fronting.proxy_protocol {
        mtg_proto::proxy_protocol::write_v2(&mut initial, peer, site_addr);
    }
    initial.extend_from_slice(read_so_far);
    debug!(%peer, front = %target, replayed = read_so_far.len(), "fronting");
    let relay: Relay<R, Plain, Plain> = Relay::new(
        client,
        site,
        Pump::new(Plain::default(), &initial),
        Pump::new(Plain::default(), &[]),
        settings.idle_timeout,
    )
    .metered(traffic.clone());
    // The replayed bytes reach the site too; the PROXY header is ours, not the client's.
    traffic.add(read_so_far.len() as u64, 0);
    let mut relay = relay;
    let end = (&mut relay).await;
    Ok((end, relay.up.transform.bytes, relay.down.transform.bytes))
}
