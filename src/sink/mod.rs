//! Sinks: where records go. `stdout` writes to the process's standard output; `unix` and
//! `tcp` listen and write every record to each connected client.
//!
//! A sink is bound synchronously by [`bind`] (so a port in use stops the daemon before it
//! reports ready) and then run as one task. What every sink shares:
//! - [`driver`]: takes the batches the hub routes to the sink, encodes each once
//!   ([`encoded`]) and hands the same bytes to every destination's queue under `on_slow`;
//! - [`queue`]: a destination's queue, bounded in records and bytes;
//! - [`writer`]: the [`SinkWriter`] trait a sink implements (how to write), and the task that
//!   feeds it from its queue. A new sink is a writer and a few lines in [`BoundSink::run`].
//!
//! Each sink: [`stdout`] (a writer thread), [`listener`] with [`client`] and [`inbound`]
//! (unix and tcp clients and the lines they send) and [`history`] (`replay` for late
//! joiners), [`unix`] and [`tcp`] (binding, or a socket systemd passed: [`activation`]),
//! [`file`] (appending, rotation, reopening), [`exec`] (a supervised program), [`nats`] and
//! [`redis`] (publishers, fed by [`broker`]'s acknowledged delivery). [`filter`] runs a
//! sink's jq `filter` inside its encoder, so every sink has it.

pub mod activation;
pub mod broker;
mod client;
pub mod driver;
pub mod dropped;
pub mod encoded;
mod exec;
mod fenced;
mod file;
pub mod filter;
pub mod history;
mod inbound;
mod listener;
mod nats;
pub mod queue;
mod redis;
mod stdout;
mod tcp;
mod unix;
pub mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{SinkConfig, SinkKind};
use crate::hub::{Directory, SinkReceiver};
use crate::record::Encoding;

pub use driver::Driver;
pub use dropped::DropReason;
pub use encoded::{Encoded, Encoder, Record};
pub use queue::QueueReader;
pub use stdout::{process_stdout, StdoutSink};
pub use writer::SinkWriter;

/// Why a sink could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The TCP address cannot be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port or stop what is using it")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The socket path is taken by something that is not a stale socket, or cannot be created.
    #[error("cannot create the unix socket {path}: {reason}")]
    SocketPath {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A socket systemd passed cannot be used, or `fd_name` names none.
    #[error("sink {sink}: {reason}")]
    Activation {
        /// The sink's name.
        sink: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// stdout's reader went away (`| head`): a normal ending, not a failure.
    #[error("stdout was closed by its reader")]
    BrokenPipe,
    /// Writing to stdout failed otherwise.
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
    /// A broker sink could not start.
    #[error("{0}")]
    Broker(#[from] broker::BrokerError),
    /// A broker sink's delivery task failed.
    #[error("{0}")]
    Delivery(io::Error),
    /// A file sink's file cannot be opened at start, or its writer failed.
    #[error("file sink {path}: {source}; check that the directory exists and the daemon may write in it")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Counters of one sink, read by the metrics.
///
/// Every record routed to a destination of the sink ends as written or dropped (with a
/// reason): `routed == written + dropped + what its queues hold now`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// The sink's name, for the warnings of [`SinkStats::drop_records`].
    pub name: String,
    /// Connected clients.
    pub clients: AtomicU64,
    /// Records handed to a destination's queue (once per destination).
    pub records_routed: AtomicU64,
    /// Records written (for brokers: acknowledged).
    pub records_written: AtomicU64,
    /// Records dropped, by reason.
    pub dropped: dropped::Drops,
    /// Bytes queued for clients and not yet written (a broker: or not yet acknowledged).
    pub bytes_buffered: AtomicU64,
    /// What only the sinks publishing to a broker count.
    pub broker: broker::BrokerStats,
    /// Records the sink's `filter` failed on (each is dropped).
    pub filter_errors: AtomicU64,
}

impl SinkStats {
    /// Counters for the sink named `name`.
    pub fn named(name: String) -> SinkStats {
        SinkStats {
            name,
            ..SinkStats::default()
        }
    }

    /// Counts `records` dropped for `reason` (`why` goes into the rate-limited warning).
    pub fn drop_records(&self, reason: DropReason, records: u64, why: &dyn std::fmt::Display) {
        self.dropped.add(&self.name, reason, records, why);
    }

    /// Records dropped for any reason.
    pub fn records_dropped(&self) -> u64 {
        self.dropped.total()
    }
}

/// What a running sink task needs from the supervisor.
pub struct SinkContext {
    /// The sink's settings.
    pub config: Arc<SinkConfig>,
    /// Events routed to this sink.
    pub input: SinkReceiver,
    /// Upstream send queues, for inbound lines.
    pub directory: watch::Receiver<Arc<Directory>>,
    /// Cancelled to stop accepting and finish.
    pub shutdown: CancellationToken,
    /// Counters.
    pub stats: Arc<SinkStats>,
    /// Longest inbound line framed from a client, in bytes (each message is then held to its
    /// upstream's `max_message_size`).
    pub max_line: usize,
    /// Notified on reload (SIGHUP): a file sink reopens its file.
    pub reopen: Arc<Notify>,
    /// `[daemon] shutdown_timeout`: how long an exec sink's program gets to exit.
    pub shutdown_timeout: Duration,
}

impl SinkContext {
    /// The sink's encoder: its encoding, and its `filter` if it has one.
    fn encoder(&self) -> Encoder {
        let encoder = Encoder::new(self.encoding());
        match &self.config.filter {
            Some(program) => encoder.with_filter(program.clone(), self.stats.clone()),
            None => encoder,
        }
    }

    fn encoding(&self) -> Encoding {
        Encoding {
            format: self.config.format,
            events: self.config.events,
            parse_json: self.config.parse_json,
            binary_bytes: false,
        }
    }
}

/// A sink that is bound and ready to run.
pub enum BoundSink {
    /// Standard output.
    Stdout,
    /// A unix listener, with the path to remove on exit.
    Unix(unix::UnixBinding),
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A NATS publisher (it connects when it runs).
    Nats(nats::NatsPublisher),
    /// A Redis Streams publisher (it connects when it runs).
    Redis(redis::RedisPublisher),
    /// A file, opened for appending.
    File(file::FileBinding),
    /// A program, started when the sink runs.
    Exec,
}

/// Binds the sink's listener (nothing to bind for stdout), or takes the socket systemd
/// passed for it ([`activation`]).
pub fn bind(config: &SinkConfig) -> Result<BoundSink, SinkError> {
    let fd_name = config.listener.fd_name.as_deref();
    let activation = |reason| SinkError::Activation {
        sink: config.name(),
        reason,
    };
    match &config.kind {
        SinkKind::Stdout => Ok(BoundSink::Stdout),
        SinkKind::Unix { path, mode, .. } => match activation::unix(path, fd_name) {
            Ok(Some(passed)) => {
                info!(sink = %config.name(), "using the socket systemd passed");
                unix::adopt(passed, path).map(BoundSink::Unix)
            }
            Ok(None) => unix::bind(path, *mode).map(BoundSink::Unix),
            Err(reason) => Err(activation(reason)),
        },
        SinkKind::Tcp { listen, .. } => match activation::tcp(*listen, fd_name) {
            Ok(Some(passed)) => {
                info!(sink = %config.name(), "using the socket systemd passed");
                tcp::adopt(passed, *listen).map(BoundSink::Tcp)
            }
            Ok(None) => tcp::bind(*listen).map(BoundSink::Tcp),
            Err(reason) => Err(activation(reason)),
        },
        SinkKind::Nats(nats) => Ok(BoundSink::Nats(nats::NatsPublisher::new(
            Arc::new((**nats).clone()),
            config,
        ))),
        SinkKind::Redis(redis) => Ok(BoundSink::Redis(redis::RedisPublisher::new(Arc::new(
            (**redis).clone(),
        ))?)),
        SinkKind::File { path, .. } => file::bind(path).map(BoundSink::File),
        SinkKind::Exec { .. } => Ok(BoundSink::Exec),
    }
}

impl BoundSink {
    /// Runs the sink until its input closes or it is cancelled.
    pub async fn run(self, ctx: SinkContext) -> Result<(), SinkError> {
        let max_clients = match &ctx.config.kind {
            SinkKind::Unix { max_clients, .. } | SinkKind::Tcp { max_clients, .. } => *max_clients,
            _ => 0,
        };
        match self {
            BoundSink::Stdout => {
                StdoutSink::with_encoder(stdout::process_stdout()?, ctx.encoder())
                    .run(ctx.input, ctx.shutdown, ctx.stats)
                    .await
            }
            BoundSink::File(binding) => file::run(binding, ctx).await,
            BoundSink::Exec => {
                exec::run(ctx).await;
                Ok(())
            }
            BoundSink::Unix(binding) => {
                let listener = listener::Listener::Unix(&binding.listener);
                let result = listener::run(listener, max_clients, ctx).await;
                drop(binding); // removes the socket file
                result
            }
            BoundSink::Tcp(tcp) => {
                listener::run(listener::Listener::Tcp(&tcp), max_clients, ctx).await
            }
            BoundSink::Nats(mut publisher) => {
                publisher.count_into(ctx.stats.clone());
                run_broker(ctx, publisher).await
            }
            BoundSink::Redis(publisher) => run_broker(ctx, publisher).await,
        }
    }
}

/// Runs a broker sink: the shared driver and queue (bounded by `buffer` bytes, `on_slow`),
/// consumed by [`broker::deliver`].
async fn run_broker<P: broker::Publisher>(ctx: SinkContext, publisher: P) -> Result<(), SinkError> {
    let name = ctx.config.name();
    let driver = Driver::new(
        name.clone(),
        ctx.encoder(),
        ctx.config.on_slow,
        queue::Bounds::of(&ctx.config),
        ctx.stats.clone(),
    )
    .with_max_block(ctx.config.max_block);
    let stats = ctx.stats.clone();
    driver::run_single_with(ctx.input, ctx.shutdown, driver, move |reader| {
        broker::deliver(reader, publisher, stats, name)
    })
    .await
    .map_err(SinkError::Delivery)
}
