//! `doctor`'s DC check: dial a DC as the proxy does, open the obfuscated2 leg (no secret,
//! padded intermediate), send an unencrypted `req_pq_multi` and expect the `resPQ` echoing its
//! nonce.
//!
//! ```text
//! dial ─► frame(64) ‖ enc(len | auth_key_id 0 | msg_id | 20 | req_pq_multi nonce | pad)
//!      ◄─ enc(len 40..=256 | auth_key_id 0 | msg_id | len | resPQ nonce …)
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use mtg_proto::mtproto;
use mtg_proto::obfs2::{self, TAG_PADDED_INTERMEDIATE};
use rand::{Rng, RngCore};

use crate::config::ProxyUrl;
use crate::engine::upstream;
use crate::engine::with_timeout;
use crate::resolver::Resolver;
use crate::runtime::Runtime;

/// A DC that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The address that answered.
    pub addr: SocketAddr,
    /// From sending `req_pq_multi` to the whole `resPQ`.
    pub rtt: Duration,
}

/// Probes DC `dc` at `addrs` (in order), dialed exactly as the proxy's sessions do: directly
/// when `via` is empty, else through those SOCKS5 proxies. The whole probe, dial included,
/// must finish within `timeout`.
pub async fn probe<R: Runtime>(
    dc: i16,
    addrs: &[SocketAddr],
    via: &[ProxyUrl],
    resolver: &Resolver,
    timeout: Duration,
) -> Result<Answered, String> {
    match with_timeout::<R, _>(timeout, exchange::<R>(dc, addrs, via, resolver, timeout)).await {
        Some(result) => result,
        None => Err(format!("no answer within {timeout:?}")),
    }
}

async fn exchange<R: Runtime>(
    dc: i16,
    addrs: &[SocketAddr],
    via: &[ProxyUrl],
    resolver: &Resolver,
    timeout: Duration,
) -> Result<Answered, String> {
    let (mut stream, addr, _) = upstream::dial_dc::<R>(addrs, via, resolver, timeout)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut rng = rand::rng();
    let (frame, mut cipher) = obfs2::initiate(&mut rng, TAG_PADDED_INTERMEDIATE, dc, None);
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut packet =
        mtproto::req_pq_multi_packet(&nonce, mtproto::client_msg_id(now), rng.random_range(0..4), &mut rng);
    cipher.encrypt(&mut packet);
    let mut out = Vec::with_capacity(frame.len() + packet.len());
    out.extend_from_slice(&frame);
    out.extend_from_slice(&packet);
    let sent = Instant::now();
    stream.write_all(&out).await.map_err(|e| format!("{addr}: cannot send: {e}"))?;
    let mut received = Vec::with_capacity(4 + *mtproto::PROBE_ANSWER_LEN.end());
    let mut chunk = [0u8; 512];
    // Each read adds at least a byte and the answer is at most 260 bytes: bounded.
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection without answering"));
        }
        let data = &mut chunk[..n];
        cipher.decrypt(data);
        received.extend_from_slice(data);
        match mtproto::read_probe_answer(&received, &nonce) {
            Ok(Some(_)) => return Ok(Answered { addr, rtt: sent.elapsed() }),
            Ok(None) => {}
            Err(e) => return Err(format!("{addr}: not a Telegram answer: {e}")),
        }
    }
}
