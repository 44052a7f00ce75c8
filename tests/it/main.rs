//! wsbridge's integration tests: the real binary, real sockets, real peers, in one test binary
//! (one link for the whole suite). One module per area; `common` holds the fixtures.
//!
//! Plain `cargo test` runs everything that needs nothing but Rust. Tests that need the Python
//! peers or run for minutes are `#[ignore = "…"]`; `tests/run.sh` runs them too.

mod common;

mod accounting;
mod activation;
mod aiohttp_peer;
mod app_ping;
mod before_connect;
mod brokers;
mod cluster;
mod cluster_fence;
mod config;
mod connect;
mod connect_upstream;
mod connect_websocat;
mod decompress;
mod demo;
mod exec_faults;
mod exec_sink;
mod faults_daemon;
mod faults_peers;
mod faults_sinks;
mod feeds;
mod file_faults;
mod file_sink;
mod filter;
mod fuzz_parsers;
mod grafana;
mod handshake;
mod http_sink;
mod lifecycle;
mod metrics;
mod nats_faults;
mod nats_sink;
mod postgres_sink;
mod proxy;
mod recipes;
mod redis_faults;
mod redis_sink;
mod replay;
mod replay_cmd;
mod reply;
mod sinks;
mod systemd;
mod tls_client;
mod top;
mod udp_sink;
mod upstream;
