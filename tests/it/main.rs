//! wsbridge's integration tests: the real binary, real sockets, real peers, in one test binary
//! (one link for the whole suite). One module per area; `common` holds the fixtures.
//!
//! Plain `cargo test` runs everything that needs nothing but Rust. Tests that need the Python
//! peers or run for minutes are `#[ignore = "…"]`; `tests/run.sh` runs them too.

mod common;

mod aiohttp_peer;
mod config;
mod connect;
mod connect_upstream;
mod demo;
mod faults_daemon;
mod faults_peers;
mod faults_sinks;
mod fuzz_parsers;
mod lifecycle;
mod metrics;
mod proxy;
mod recipes;
mod sinks;
mod systemd;
mod tls_client;
mod upstream;
