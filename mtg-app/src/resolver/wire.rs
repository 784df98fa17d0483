//! DNS messages (with `hickory-proto`): the A/AAAA query for a name, and what its answer
//! says — addresses and the shortest TTL, or why there are none.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// One question of ours: its id and the encoded message.
#[derive(Debug, Clone)]
pub(super) struct Question {
    /// The message id the answer must carry.
    pub(super) id: u16,
    /// The name asked about (fully qualified).
    pub(super) name: Name,
    /// A or AAAA.
    pub(super) kind: RecordType,
    /// The encoded query.
    pub(super) bytes: Vec<u8>,
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// The addresses (maybe none: the name has no record of that type) and the shortest TTL
    /// of the answer's records, in seconds (`None` when there were no records).
    Found { ips: Vec<IpAddr>, ttl: Option<u32> },
    /// NXDOMAIN.
    NoSuchName,
    /// The server says the answer did not fit a datagram: ask again over TCP.
    Truncated,
}

/// A host name as a fully qualified DNS name (no search domains apply).
pub(super) fn name(host: &str) -> Result<Name, String> {
    let mut name = Name::from_utf8(host).map_err(|e| format!("not a valid DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// A recursive query for `kind` records of `name`, with a random id.
pub(super) fn question(name: &Name, kind: RecordType) -> Result<Question, String> {
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), kind));
    let bytes = message.to_vec().map_err(|e| format!("cannot encode the query: {e}"))?;
    Ok(Question { id, name: name.clone(), kind, bytes })
}

/// Reads the server's answer to `question`; an error says what is wrong with it.
pub(super) fn answer(question: &Question, bytes: &[u8]) -> Result<Answer, String> {
    let message = Message::from_vec(bytes).map_err(|e| format!("malformed answer: {e}"))?;
    let meta = &message.metadata;
    if meta.id != question.id || meta.message_type != MessageType::Response {
        return Err("the answer does not match the query".to_owned());
    }
    if meta.truncation {
        return Ok(Answer::Truncated);
    }
    let asked = message.queries.iter().any(|q| q.query_type == question.kind && q.name == question.name);
    if !asked {
        return Err("the answer is about another question".to_owned());
    }
    match meta.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Answer::NoSuchName),
        code => return Err(format!("the server answered {code}")),
    }
    let ips = message
        .answers
        .iter()
        .filter(|r| r.record_type() == question.kind)
        .filter_map(|r| r.data.ip_addr())
        .collect();
    let ttl = message.answers.iter().map(|r| r.ttl).min();
    Ok(Answer::Found { ips, ttl })
}
