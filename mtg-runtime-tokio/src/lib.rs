//! Runtime adapter: drives the mtg-proto core from sockets (built in the run issue).
