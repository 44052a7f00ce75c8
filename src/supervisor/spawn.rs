//! Starting the supervisor's tasks: one per sink on what `sink::bind` bound, one per upstream
//! that runs here, and, for an upstream under a lease, the watcher that stops it the moment
//! its fence lapses. The supervisor keeps what each returns in its maps.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{RunningSink, RunningUpstream, Supervisor, SINK_INPUT, SINK_INPUT_BYTES};
use crate::config::{SinkConfig, UpstreamConfig};
use crate::fence::Fence;
use crate::hub;
use crate::sink::{BoundSink, SinkContext, SinkStats};
use crate::upstream::{RunMode, Upstream, UpstreamStats};

impl Supervisor {
    /// Starts a sink's task on its bound listener (or file, or broker) and routes nothing to it
    /// yet: the caller sets the hub's routes.
    pub(super) fn spawn_sink(&mut self, config: Arc<SinkConfig>, bound: BoundSink) {
        let (input, receiver) = hub::sink_input(SINK_INPUT, SINK_INPUT_BYTES);
        let cancel = CancellationToken::new();
        let stats = Arc::new(SinkStats::named(config.name()));
        let input = input.counted_by(stats.clone());
        let reopen = Arc::new(Notify::new());
        let ctx = SinkContext {
            config: config.clone(),
            input: receiver,
            directory: self.hub.directory(),
            shutdown: cancel.clone(),
            stats: stats.clone(),
            max_line: self.max_line(),
            reopen: reopen.clone(),
            shutdown_timeout: self.config.daemon.shutdown_timeout,
        };
        let failures = self.failures_tx.clone();
        let name = config.name();
        let span = tracing::info_span!("sink", sink = %name);
        let task = tokio::spawn(
            async move {
                if let Err(e) = bound.run(ctx).await {
                    let _ = failures.send((name, e)).await;
                }
            }
            .instrument(span),
        );
        self.sinks.push(RunningSink {
            config,
            input: Some(input),
            cancel,
            task,
            stats,
            reopen,
        });
    }

    /// Starts `config`'s task, under its lease with `[cluster]`; nothing while no lease of it
    /// is held.
    pub(super) fn spawn_upstream(&mut self, config: Arc<UpstreamConfig>) {
        let (fence, close_timeout) = match self.fence_of(&config.name) {
            None => (None, self.config.daemon.shutdown_timeout / 2),
            // Its lease was lost meanwhile: it starts when one is held again.
            Some(None) => return,
            Some(Some(fence)) => {
                let ttl = self
                    .config
                    .cluster
                    .as_ref()
                    .map_or(Duration::MAX, |c| c.lease_ttl);
                // A lost lease closes the connection within lease_ttl / 5, answered or not.
                let close = (self.config.daemon.shutdown_timeout / 2).min(ttl / 5);
                (Some(fence), close)
            }
        };
        let (queue, receiver) = mpsc::channel(config.send_queue);
        let cancel = CancellationToken::new();
        if let Some(fence) = fence.clone() {
            watch_fence(fence, cancel.clone());
        }
        let seq = self.seqs.entry(config.name.clone()).or_default().clone();
        let stats = self
            .upstream_stats
            .entry(config.name.clone())
            .or_insert_with(|| Arc::new(UpstreamStats::with_seq(seq)))
            .clone();
        let upstream = Upstream {
            config: config.clone(),
            stats,
            outlet: self.hub.outlet(&config.name).fenced_by(fence.clone()),
            queue: receiver,
            shutdown: cancel.clone(),
            goodbye: CloseCode::Away,
            mode: RunMode::Reconnect,
            close_timeout,
            max_messages: None,
            linger: Duration::ZERO,
        };
        let span = tracing::info_span!("upstream", upstream = %config.name);
        let task = tokio::spawn(upstream.run().instrument(span));
        self.upstreams.insert(
            config.name.clone(),
            RunningUpstream {
                config,
                queue,
                cancel,
                task,
                fence,
            },
        );
    }
}

/// The upstream stops the moment its lease is no longer proven, without waiting for the lease
/// task or the supervisor to notice.
fn watch_fence(fence: Arc<Fence>, cancel: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = fence.lapsed() => cancel.cancel(),
            _ = cancel.cancelled() => {}
        }
    });
}
