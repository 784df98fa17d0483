//! The mtg-multi application: configuration, the CLI, the proxy engine over the runtime seam,
//! and (in later issues) users, stats and metrics.

#![forbid(unsafe_code)]

pub mod access;
pub mod atomic_file;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dc_table;
pub mod doctor;
pub mod doppel_learn;
pub mod engine;
pub mod flight_learn;
pub mod healthcheck;
pub mod http_fetch;
pub mod ip_filter;
pub mod ip_lists;
pub mod metrics;
pub mod middle;
pub mod public_ip;
pub mod resolver;
pub mod run;
pub mod runtime;
pub mod secrets;
pub mod simple_run;
pub mod sni_dns;
pub mod tls_client;
pub mod users;
