//! `doctor`'s first-flight section: what the fronting site answers to hellos like the
//! Telegram clients' (per kind of hello), what the proxy's fake flight takes from it, and what
//! it cannot take (more than one encrypted record; a key share group it cannot imitate).
//! Skipped when no secret carries a hostname.

use mtg_proto::doppel::flight_shape::{
    GROUP_X25519, GROUP_X25519_MLKEM768, MAX_ENCRYPTED_RECORD, PROBE_PREFERRED_SUITE,
};
use mtg_proto::doppel::{FlightShape, FlightStats, HelloKind};

use crate::config::Config;
use crate::flight_learn::{self, FlightTarget};
use crate::resolver::Resolver;
use crate::runtime::Runtime;

use super::{Section, Status};

/// Probes the site once per kind of hello and reports the shapes, or `None` without a site.
pub(super) async fn section<R: Runtime>(config: &Config, resolver: &Resolver) -> Option<Section> {
    let target = FlightTarget::from_config(config)?;
    let mut section = Section::new(format!("Fronting site's first flight ({target})"));
    let mut stats = FlightStats::new();
    let mut errors = Vec::new();
    for kind in HelloKind::ALL {
        match flight_learn::probe::<R>(&target, kind, resolver, config.network.timeout.http).await {
            Ok(flight) => stats.add(kind, flight),
            Err(e) => errors.push(format!("{}: {e}", kind.name())),
        }
    }
    let learning = config.doppelganger.learn_from_fronting;
    for kind in HelloKind::ALL {
        let Some(shape) = stats.shape(kind) else {
            continue;
        };
        section.push(
            Status::Ok,
            format!("site, {} hello: {}", kind.name(), flight_learn::describe_shape(&shape)),
        );
        section.push(Status::Ok, format!("proxy, {} hello: {}", kind.name(), imitation(&shape, kind)));
        for (status, text) in limits(&shape, kind) {
            section.push(status, text);
        }
    }
    for error in errors {
        section.push(Status::Warning, format!("cannot read the site's first flight: {error}"));
    }
    if stats.shape(HelloKind::X25519).is_none() && stats.shape(HelloKind::X25519MlKem768).is_none() {
        section.push(Status::Warning, "the proxy keeps its fixed flight layout (nothing learned)");
    } else if learning {
        section.push(Status::Ok, "in use: the proxy learns this at start and every raid-each");
    } else {
        section.push(
            Status::Warning,
            "not in use: [defense.doppelganger] learn-from-fronting = false; the proxy keeps its fixed flight layout",
        );
    }
    Some(section)
}

/// What the proxy sends to a hello of `kind` with `shape` learned.
fn imitation(shape: &FlightShape, kind: HelloKind) -> String {
    let group = match shape.key_share {
        Some(ks) if ks.group == GROUP_X25519_MLKEM768 && kind == HelloKind::X25519MlKem768 => {
            "11ec (1120 bytes)"
        }
        _ => "001d (32 bytes)",
    };
    let (lo, hi) = shape.encrypted_wire_len();
    let cap = MAX_ENCRYPTED_RECORD + 5;
    let suite = if shape.cipher_suite == PROBE_PREFERRED_SUITE {
        "the client's first cipher suite (the site follows the client's order)".to_owned()
    } else {
        format!("cipher suite {:04x} when the client offers it", shape.cipher_suite)
    };
    format!(
        "{suite}, the site's extension order, key share {group}, ChangeCipherSpec, \
         one encrypted record of {}-{} bytes with its header",
        lo.min(cap),
        hi.min(cap)
    )
}

/// What the proxy cannot imitate of `shape`.
fn limits(shape: &FlightShape, kind: HelloKind) -> Vec<(Status, String)> {
    let mut out = Vec::new();
    let records = shape.record_ranges().len();
    if records > 1 {
        out.push((
            Status::Warning,
            format!(
                "the site sends {records} encrypted records, the proxy one of the same total size: Telegram \
                 clients read exactly one record as the handshake answer, so an observer who counts records \
                 can tell the proxy from this site. Sites whose TLS library packs the handshake into one \
                 record (BoringSSL: Google, Cloudflare) do not have this tell"
            ),
        ));
    }
    if let Some(ks) = shape.key_share
        && ks.group != GROUP_X25519
        && !(ks.group == GROUP_X25519_MLKEM768 && kind == HelloKind::X25519MlKem768)
    {
        out.push((
            Status::Warning,
            format!("the site chose key share group {:04x}; the proxy answers with X25519", ks.group),
        ));
    }
    if shape.encrypted_wire_len().1 > MAX_ENCRYPTED_RECORD + 5 {
        out.push((
            Status::Warning,
            format!("the site's flight is larger than one TLS record can be; the proxy's is {MAX_ENCRYPTED_RECORD} bytes"),
        ));
    }
    out
}
