//! The FakeTLS wrapper: ClientHello parsing and validation, the ServerHello flight and TLS
//! record framing (reference §4.a).

pub mod client_hello;
pub mod record;
pub mod server_flight;
pub mod server_hello;
