//! wsbridge bridges WebSocket client connections as newline-delimited JSON to the places
//! other programs read: stdout, Unix sockets and local TCP listeners, files, a program's
//! stdin, NATS JetStream, Redis Streams, PostgreSQL, HTTP collectors and UDP listeners; sink
//! clients may write lines back upstream.
//!
//! Data flows one way:
//!
//! ```text
//!  config ──▶ supervisor ──▶ upstream task (one per endpoint) ──▶ hub ──▶ sinks ──▶ clients
//!                               ▲ send queue (bounded)                        │
//!                               └──────────── inbound lines ◀─────────────────┘
//! ```
//!
//! Layers, each importing only from those below it:
//!
//! ```text
//!  cli, supervisor, connect, demo, metrics     (the daemon and commands: pass sink::registry to config)
//!  upstream                 sink               (sink: one module per type, sink::registry)
//!  hub, replay, cluster
//!  config                                      (sink types as traits and a catalog, never by name)
//!  record, lines, jq, backoff, pem, throttle, duration, notify
//! ```
//!
//! - [`config`] parses the TOML file into a validated [`config::Config`], reading `[[sink]]`
//!   tables through the catalog the caller passes ([`sink::registry::SINKS`]).
//! - [`supervisor`] binds the sinks, starts one [`upstream`] task per endpoint, applies
//!   reloads and drains on shutdown.
//! - [`upstream`] connects (headers, cookies, subprotocols, proxies, TLS), keeps the connection alive
//!   (autoping, stale-feed detection) and reconnects with backoff.
//! - [`hub`] routes each upstream's events to its sinks through channels bounded by batches
//!   and by bytes.
//! - [`sink`] encodes [`record`]s once per sink and writes them to stdout (from a thread of
//!   its own) or to every client of a unix/tcp listener, each through a queue bounded in
//!   records and bytes, applying the `on_slow` policy per client; or to a file (rotated), a
//!   program's stdin (supervised), NATS or Redis. Each type is one module with its keys,
//!   validation, `check` lines, `bind` and `run`; [`sink::registry`] lists them.
//!   [`jq`] compiles and runs jq programs (a sink's `filter`).
//! - Below both: [`backoff`] (delays between attempts), [`pem`] (TLS files), [`throttle`]
//!   (rate-limited warnings).
//! - [`record`] is the wire format: the event model, its one encoder, inbound parsing
//!   ([`lines`] frames inbound lines).
//! - [`metrics`] serves `/metrics`, `/status` and `/healthz`; [`status_client`] is
//!   `wsbridge status`'s side of it, and [`top`] the figures of `wsbridge top`. [`notify`]
//!   speaks systemd's notify protocol.
//! - [`connect`] is the websocat-style pipe, built on the same upstream task.
//! - [`demo`] is the embedded demo server. [`duration`] prints durations for people.
//! - [`replay`] serves recorded NDJSON files as a WebSocket server (`wsbridge replay`).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod demo;
pub mod duration;
pub mod fence;
pub mod hub;
pub mod jq;
pub mod lines;
pub mod metrics;
pub mod notify;
pub mod pem;
pub mod record;
pub mod replay;
pub mod sink;
pub mod status_client;
pub mod supervisor;
pub mod throttle;
pub mod top;
pub mod upstream;
