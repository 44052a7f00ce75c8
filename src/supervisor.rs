//! The supervisor: owns the upstream tasks, the sink tasks and the hub between them; applies
//! reloads; drains everything on shutdown within `shutdown_timeout`.
//!
//! Startup binds every sink first (so a port in use stops the daemon before anything
//! connects), then starts one task per upstream. Controls arrive as a typed stream of
//! [`Control`] values, so tests drive the supervisor without sending signals. Tasks are
//! started in `spawn`; reloads are applied in `reload`; leases decide what runs in `cluster`.

mod cluster;
mod reload;
mod spawn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::Cluster;
use crate::config::{Config, ConfigErrors, SinkConfig, UpstreamConfig};
use crate::fence::Fence;
use crate::hub::{self, Hub, SendQueue, SinkInput};
use crate::metrics::Metrics;
use crate::notify;
use crate::sink::{self, SinkError, SinkStats};
use crate::upstream::{State, UpstreamExit, UpstreamStats};

/// What the outside world asks of a running supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config and apply the difference (SIGHUP).
    Reload,
    /// Close everything and return (SIGTERM, SIGINT).
    Shutdown,
    /// Log a one-line summary (SIGUSR1).
    Report,
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A sink could not bind.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The metrics endpoint could not bind.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsBindError),
}

/// Batches queued between the hub and each sink task (a batch holds at most 1,024 messages).
pub const SINK_INPUT: usize = 32;
/// Bytes (payloads plus events) queued between the hub and each sink task.
pub const SINK_INPUT_BYTES: usize = 8 << 20;

struct RunningUpstream {
    config: Arc<UpstreamConfig>,
    queue: SendQueue,
    cancel: CancellationToken,
    task: JoinHandle<UpstreamExit>,
    /// The lease it runs under (`[cluster]`).
    fence: Option<Arc<Fence>>,
}

struct RunningSink {
    config: Arc<SinkConfig>,
    /// Taken at shutdown, so the sink's input closes once read to the end.
    input: Option<SinkInput>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    stats: Arc<SinkStats>,
    /// Notified on every reload that keeps the sink: a file sink reopens its file.
    reopen: Arc<Notify>,
}

/// The running bridge.
pub struct Supervisor {
    config: Config,
    hub: Hub,
    upstreams: HashMap<String, RunningUpstream>,
    sinks: Vec<RunningSink>,
    /// Kept across restarts of an upstream; dropped when a reload removes it.
    upstream_stats: HashMap<String, Arc<UpstreamStats>>,
    /// Each upstream name's `seq`, never dropped: one removed and added back by reloads (or
    /// whose lease comes back) goes on counting, so a record's id never repeats.
    seqs: HashMap<String, Arc<AtomicU64>>,
    failures_tx: mpsc::Sender<(String, SinkError)>,
    failures: mpsc::Receiver<(String, SinkError)>,
    /// What `/metrics` and `/status` read.
    metrics: Arc<Metrics>,
    /// Stops the metrics endpoint.
    metrics_stop: CancellationToken,
    /// With `[cluster]`: the leases that decide which upstreams run here.
    cluster: Option<Cluster>,
}

impl Supervisor {
    /// Binds every sink and starts every upstream. Fails, starting nothing, if a sink cannot bind.
    pub async fn start(config: Config) -> Result<Supervisor, StartError> {
        let (failures_tx, failures) = mpsc::channel(16);
        let metrics = Arc::new(Metrics::default());
        let metrics_stop = CancellationToken::new();
        if let Some(m) = &config.metrics {
            let listener = crate::metrics::bind(m.listen).await?;
            info!(listen = %m.listen, "metrics at /metrics, /status, /healthz");
            tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                metrics_stop.clone(),
            ));
        }
        let mut supervisor = Supervisor {
            config: config.clone(),
            hub: Hub::default(),
            upstreams: HashMap::new(),
            sinks: Vec::new(),
            upstream_stats: HashMap::new(),
            seqs: HashMap::new(),
            failures_tx,
            failures,
            metrics,
            metrics_stop,
            cluster: None,
        };
        if let Some(c) = &config.cluster {
            let cluster = Cluster::start(c.clone(), &config.upstreams);
            supervisor.metrics.set_cluster(cluster.view.clone());
            info!(instance = %c.instance, nats = %c.display_nats(), bucket = %c.bucket, "cluster: upstreams run where their lease is held");
            supervisor.cluster = Some(cluster);
        }
        let bound = config
            .sinks
            .iter()
            .map(|s| sink::bind(s).map(|b| (Arc::new(s.clone()), b)))
            .collect::<Result<Vec<_>, _>>()?;
        for (config, bound) in bound {
            supervisor.spawn_sink(config, bound);
        }
        supervisor.route_sinks();
        for upstream in &config.upstreams {
            if supervisor.runs(&upstream.name) {
                supervisor.spawn_upstream(Arc::new(upstream.clone()));
            }
        }
        supervisor.publish_directory();
        supervisor.publish_metrics();
        info!(
            upstreams = config.upstreams.len(),
            sinks = config.sinks.len(),
            "started"
        );
        Ok(supervisor)
    }

    /// A one-line summary: upstreams open out of total, sink clients.
    pub fn summary(&self) -> String {
        let open = self
            .upstream_stats
            .iter()
            .filter(|(name, stats)| {
                self.upstreams.contains_key(*name) && stats.state() == State::Open
            })
            .count();
        let clients: u64 = self
            .sinks
            .iter()
            .map(|s| s.stats.clients.load(Ordering::Relaxed))
            .sum();
        format!(
            "{open}/{} upstreams open, {} sinks, {clients} sink clients",
            self.upstreams.len(),
            self.sinks.len()
        )
    }

    /// Runs until [`Control::Shutdown`] (or the controls end), then drains. `reload` reads the
    /// config again for [`Control::Reload`].
    pub async fn run(
        mut self,
        mut controls: mpsc::Receiver<Control>,
        reload: impl Fn() -> Result<Config, ConfigErrors>,
    ) -> Result<(), SinkError> {
        notify::ready(&self.summary());
        let watchdog = notify::watchdog_interval();
        let mut pet = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut status = tokio::time::interval(Duration::from_secs(5));
        let outcome = loop {
            tokio::select! {
                control = controls.recv() => match control {
                    Some(Control::Reload) => {
                        notify::reloading();
                        info!("reloading the config");
                        match reload() {
                            Ok(config) => self.apply(config).await,
                            Err(errors) => error!("the new config is invalid; keeping the running one:\n{errors}"),
                        }
                        notify::ready(&self.summary());
                    }
                    Some(Control::Report) => info!("{}", self.summary()),
                    Some(Control::Shutdown) | None => break Ok(()),
                },
                Some((sink, failure)) = self.failures.recv() => match failure {
                    SinkError::BrokenPipe => {
                        info!("stdout was closed by its reader; shutting down");
                        break Ok(());
                    }
                    other => {
                        error!(sink = %sink, "{other}");
                        break Err(other);
                    }
                },
                _ = cluster::ownership_changed(&mut self.cluster) => self.apply_ownership().await,
                _ = pet.tick(), if watchdog.is_some() => notify::watchdog(),
                _ = status.tick() => notify::status(&self.summary()),
            }
        };
        notify::stopping();
        self.metrics_stop.cancel();
        self.shutdown().await;
        outcome
    }

    /// Closes every upstream with 1001, then lets every sink write what it holds; anything
    /// still running at `shutdown_timeout` is aborted.
    async fn shutdown(mut self) {
        let timeout = self.config.daemon.shutdown_timeout;
        let deadline = Instant::now() + timeout;
        info!(timeout = %crate::duration::human(timeout), "shutting down");
        for upstream in self.upstreams.values() {
            upstream.cancel.cancel();
        }
        for (name, upstream) in self.upstreams.drain() {
            finish(upstream.task, deadline, &format!("upstream {name}")).await;
            if let Some(stats) = self.upstream_stats.get(&name) {
                let received = stats.messages_received.load(Ordering::Relaxed);
                info!(upstream = %name, messages_received = received, "upstream closed");
            }
        }
        // With the upstream tasks gone and the routes cleared, each sink's input closes once
        // it has been read to the end.
        self.hub.clear();
        for sink in &mut self.sinks {
            sink.input = None;
        }
        for sink in self.sinks.drain(..) {
            finish(sink.task, deadline, &format!("sink {}", sink.config.name())).await;
        }
        // Handed back only now: the sinks wrote what the upstreams received under these
        // leases (their fences hold until then); others connect them at once.
        if let Some(cluster) = self.cluster.take() {
            cluster.release_all(deadline).await;
        }
        info!("stopped");
    }

    fn publish_metrics(&self) {
        let upstreams = self
            .config
            .upstreams
            .iter()
            .filter_map(|u| {
                let stats = self.upstream_stats.get(&u.name)?;
                Some((u.name.clone(), u.required, stats.clone()))
            })
            .collect();
        let sinks = self
            .sinks
            .iter()
            .map(|s| (s.config.name(), s.stats.clone()))
            .collect();
        self.metrics.publish(upstreams, sinks);
    }

    fn route_sinks(&mut self) {
        let sinks = self
            .sinks
            .iter()
            .filter_map(|s| Some((s.config.clone(), s.input.clone()?)))
            .collect();
        self.hub.set_sinks(sinks);
    }

    fn publish_directory(&mut self) {
        let queues = self
            .upstreams
            .iter()
            .map(|(name, u)| {
                let inbox = hub::Inbox {
                    queue: u.queue.clone(),
                    max_message_size: u.config.max_message_size,
                };
                (name.clone(), inbox)
            })
            .collect();
        self.hub.set_upstreams(queues);
    }

    /// The longest inbound line a client may write: the largest message, base64-encoded,
    /// plus room for the envelope.
    fn max_line(&self) -> usize {
        let largest = self
            .config
            .upstreams
            .iter()
            .map(|u| u.max_message_size)
            .max()
            .unwrap_or(16 << 20);
        largest / 3 * 4 + 4096
    }
}

/// Waits for a task until `deadline`, then aborts it.
async fn finish<T>(mut task: JoinHandle<T>, deadline: Instant, what: &str) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        warn!("{what} did not stop within shutdown_timeout; aborting it");
        task.abort();
        let _ = task.await;
    }
}
