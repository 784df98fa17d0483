//! A tiny authoritative DNS server over UDP on `127.0.0.1:0`: answers `A` queries for the
//! names it was given with their IPv4 address, an empty `NOERROR` for other types of those
//! names, `NXDOMAIN` for every other name, and records every question it was asked.
//! Messages are decoded and encoded with `hickory-proto`. Runs on the shared runtime
//! ([`crate::runtime`]); stops when dropped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::runtime;

/// TTL of every answer, in seconds.
pub const TTL: u32 = 60;

/// One question the server was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, lowercase, without the trailing dot.
    pub name: String,
    /// The record type (`A`, `AAAA`, …).
    pub kind: String,
}

/// A running DNS server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Question>>>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Vec<Question>>) -> MutexGuard<'_, Vec<Question>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DnsServer {
    /// Starts serving `names` (name without trailing dot → IPv4) on `127.0.0.1:0`.
    pub fn start(names: &[(&str, Ipv4Addr)]) -> Self {
        let zone: BTreeMap<String, Ipv4Addr> =
            names.iter().map(|(n, ip)| (n.trim_end_matches('.').to_ascii_lowercase(), *ip)).collect();
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the DNS server");
        std_socket.set_nonblocking(true).expect("non-blocking socket");
        let addr = std_socket.local_addr().expect("DNS server address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let task = runtime::handle().spawn(async move {
            let socket = UdpSocket::from_std(std_socket).expect("register the DNS server");
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Some(reply) = answer(&zone, &buf[..n], &log) else { continue };
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        Self { addr, asked, task }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every question asked so far, in order.
    pub fn questions(&self) -> Vec<Question> {
        lock(&self.asked).clone()
    }
}

/// The reply to one datagram (`None` for what is not a DNS query).
fn answer(zone: &BTreeMap<String, Ipv4Addr>, datagram: &[u8], log: &Mutex<Vec<Question>>) -> Option<Vec<u8>> {
    let query = Message::from_vec(datagram).ok()?;
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.queries = query.queries.clone();
    reply.edns = query.edns.clone();
    for q in &query.queries {
        let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        lock(log).push(Question { name: name.clone(), kind: q.query_type.to_string() });
        match zone.get(&name) {
            Some(&ip) if q.query_type == RecordType::A => {
                reply.add_answer(Record::from_rdata(q.name.clone(), TTL, RData::A(A(ip))));
            }
            Some(_) => {}
            None => reply.metadata.response_code = ResponseCode::NXDomain,
        }
    }
    reply.to_vec().ok()
}
