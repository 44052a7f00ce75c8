//! Sinks: where records go. A sink type is one module owning its keys (a serde struct),
//! their validation, its `check` lines, its identity on reload, `bind` and `run`; the
//! [`registry`] lists the types, one line each, and is the catalog `config` reads
//! `[[sink]]` tables through (`config` knows the traits, not the types).
//!
//! A sink is bound synchronously by [`bind`] (so a port in use stops the daemon before it
//! reports ready) and then run as one task. What every sink shares:
//! - [`driver`]: takes the batches the hub routes to the sink, encodes each once
//!   ([`encoded`]) and hands the same bytes to every destination's queue under `on_slow`;
//! - [`queue`]: a destination's queue, bounded in records and bytes;
//! - [`writer`]: the [`SinkWriter`] trait a sink implements (how to write), and the task that
//!   feeds it from its queue. A new sink type is a module: its settings (implementing
//!   `config::SinkType` and [`registry::SinkComponent`]), a writer, and a line in the registry.
//!
//! Each sink: [`stdout`] (a writer thread), [`listener`] with [`client`] and [`inbound`]
//! (unix and tcp clients and the lines they send) and [`history`] (`replay` for late
//! joiners), [`unix`] and [`tcp`] (binding, or a socket systemd passed: [`activation`]),
//! [`file`] (appending, rotation, reopening), [`exec`] (a supervised program), [`nats`],
//! [`redis`] and [`postgres`] (publishers, fed by [`broker`]'s acknowledged delivery), [`http`]
//! (batches POSTed as NDJSON, retried until answered), [`udp`] (a datagram per record).
//! [`filter`] runs a
//! sink's jq `filter` inside its encoder, so every sink has it.

pub mod activation;
pub mod broker;
mod client;
pub mod driver;
pub mod dropped;
pub mod encoded;
pub mod exec;
mod fenced;
pub mod file;
pub mod filter;
pub mod history;
pub mod http;
mod inbound;
mod listener;
pub mod nats;
pub mod postgres;
pub mod queue;
pub mod redis;
pub mod registry;
pub mod stdout;
pub mod tcp;
pub mod udp;
pub mod unix;
pub mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use crate::config::{OnSlow, SinkConfig};
use crate::hub::{Directory, SinkReceiver};
use crate::record::Encoding;

pub use driver::Driver;
pub use dropped::DropReason;
pub use encoded::{Encoded, Encoder, Record};
pub use queue::QueueReader;
pub use registry::bind;
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
    /// A sink's settings are not of its type's (a bug in the registry, not a setting).
    #[error("sink {sink}: its settings are not of its type")]
    Type {
        /// The sink's name.
        sink: String,
    },
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
    /// The shared driver for this sink: its encoder, queue bounds and `max_block`, with
    /// `on_slow` (the sink's own, or what its type imposes).
    fn driver(&self, on_slow: OnSlow) -> Driver {
        Driver::new(
            self.config.name(),
            self.encoder(),
            on_slow,
            queue::Bounds::of(&self.config),
            self.stats.clone(),
        )
        .with_max_block(self.config.max_block)
    }

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

/// A sink that is bound and ready to run: what its type's `bind` prepared, and how it runs.
pub struct BoundSink(
    Box<dyn FnOnce(SinkContext) -> BoxFuture<'static, Result<(), SinkError>> + Send>,
);

impl BoundSink {
    /// A sink that runs as `run` says once it is given its context.
    pub fn new<F, Fut>(run: F) -> BoundSink
    where
        F: FnOnce(SinkContext) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), SinkError>> + Send + 'static,
    {
        BoundSink(Box::new(move |ctx| Box::pin(run(ctx))))
    }

    /// Runs the sink until its input closes or it is cancelled.
    pub async fn run(self, ctx: SinkContext) -> Result<(), SinkError> {
        (self.0)(ctx).await
    }
}

/// Runs a broker sink: the shared driver and queue (bounded by `buffer` bytes, `on_slow`),
/// consumed by [`broker::deliver`].
async fn run_broker<P: broker::Publisher>(ctx: SinkContext, publisher: P) -> Result<(), SinkError> {
    run_consumed(ctx, move |reader, stats, name| {
        broker::deliver(reader, publisher, stats, name)
    })
    .await
}

/// Runs a sink whose records one consumer takes from the shared queue (a broker, http):
/// `consume` gets the queue, the sink's counters and its name.
async fn run_consumed<C, F>(ctx: SinkContext, consume: C) -> Result<(), SinkError>
where
    C: FnOnce(QueueReader, Arc<SinkStats>, String) -> F,
    F: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    let driver = ctx.driver(ctx.config.on_slow);
    let (stats, name) = (ctx.stats.clone(), ctx.config.name());
    driver::run_single_with(ctx.input, ctx.shutdown, driver, move |reader| {
        consume(reader, stats, name)
    })
    .await
    .map_err(SinkError::Delivery)
}
