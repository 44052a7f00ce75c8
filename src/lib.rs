//! wsbridge bridges WebSocket client connections to stdout, Unix sockets and local TCP
//! listeners as newline-delimited JSON, and lets sink clients write lines back upstream.
//!
//! Data flows one way:
//!
//! ```text
//!  config ──▶ supervisor ──▶ upstream task (one per endpoint) ──▶ hub ──▶ sinks ──▶ clients
//!                               ▲ send queue (bounded)                        │
//!                               └──────────── inbound lines ◀─────────────────┘
//! ```
//!
//! - [`config`] parses the TOML file into a validated [`config::Config`].
//! - [`supervisor`] binds the sinks, starts one [`upstream`] task per endpoint, applies
//!   reloads and drains on shutdown.
//! - [`upstream`] connects (headers, cookies, subprotocols, TLS), keeps the connection alive
//!   (autoping, stale-feed detection) and reconnects with backoff.
//! - [`hub`] routes each upstream's events to its sinks through channels bounded by batches
//!   and by bytes.
//! - [`sink`] writes [`record`]s to stdout (from a thread of its own; in `connect`, large raw
//!   batches from the connection's thread when that needs no waiting) or to every client of a
//!   unix/tcp listener, applying the `on_slow` policy per client.
//! - [`connect`] is the websocat-style pipe, built on the same upstream task.
//! - [`demo`] is the embedded demo server.

#![forbid(unsafe_code)]

pub mod config;
pub mod connect;
pub mod demo;
pub mod hub;
pub mod lines;
pub mod metrics;
pub mod notify;
pub mod record;
pub mod sink;
pub mod supervisor;
pub mod upstream;
