//! Several instances, one config: each upstream runs on the instances holding its lease in a
//! NATS JetStream key-value bucket (`[cluster]`).
//!
//! A lease is a key per upstream slot (`replicas` slots per upstream), taken with a
//! revision-checked create (or an update of an expired one) and renewed with revision-checked
//! updates at a third of `lease_ttl`. A holder that cannot renew stops the upstream at four
//! fifths of `lease_ttl`, counted on its own monotonic clock from the last renewal it sent;
//! the others take a lease over only after seeing its revision unchanged for `lease_ttl`, so
//! the old holder has stopped first, even when it is cut off from NATS. Members announce
//! themselves with a heartbeat key renewed the same way; [`spread`] decides who should hold
//! what, the same on every instance.
//!
//! - `keys`: the bucket's keys and values; `spread`: the assignment; `lease`: the task that
//!   talks to NATS; `status`: what `/status` and the metrics show.
//!
//! The supervisor runs the upstreams named by [`Cluster::owned`] and acknowledges each
//! change through [`Cluster::applied`]; a lease given up is deleted only once its upstream
//! has stopped, so its next holder never connects while this one still is.

mod keys;
mod lease;
pub mod spread;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use crate::config::cluster::ClusterConfig;
use crate::config::UpstreamConfig;
use crate::fence::Fence;
pub use status::{ClusterStatus, ClusterView, LeaseStatus};

/// The upstreams this instance should run now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Counts changes; the supervisor echoes it through [`Cluster::applied`] once running
    /// exactly these upstreams.
    pub generation: u64,
    /// Upstreams this instance holds a lease slot of, each with the fence of that lease:
    /// an upstream runs with the fence of the lease it holds now, a new one for each lease
    /// taken (see [`crate::fence`]).
    pub upstreams: BTreeMap<String, Arc<Fence>>,
}

/// The supervisor's handle on the lease task.
pub struct Cluster {
    /// What to run; changes as leases are won, given up and lost.
    pub owned: watch::Receiver<Ownership>,
    /// The generation of [`Ownership`] the supervisor runs.
    pub applied: watch::Sender<u64>,
    /// The upstreams (name, replicas) of the current config.
    upstreams: watch::Sender<Vec<(String, usize)>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// What `/status` shows.
    pub view: Arc<ClusterView>,
}

impl Cluster {
    /// Starts the lease task for `upstreams`; it connects to NATS in the background.
    pub fn start(config: ClusterConfig, upstreams: &[UpstreamConfig]) -> Cluster {
        let (owned_tx, owned) = watch::channel(Ownership::default());
        let (applied, applied_rx) = watch::channel(0);
        let (upstreams_tx, upstreams_rx) = watch::channel(wanted(upstreams));
        let stop = CancellationToken::new();
        let view = Arc::new(ClusterView::new(&config.instance));
        let span = tracing::info_span!("cluster", instance = %config.instance);
        let task = tokio::spawn(
            lease::run(lease::Channels {
                config,
                owned: owned_tx,
                applied: applied_rx,
                upstreams: upstreams_rx,
                stop: stop.clone(),
                view: view.clone(),
            })
            .instrument(span),
        );
        Cluster {
            owned,
            applied,
            upstreams: upstreams_tx,
            stop,
            task,
            view,
        }
    }

    /// The upstreams of a reloaded config: leases of unchanged ones are kept.
    pub fn set_upstreams(&self, upstreams: &[UpstreamConfig]) {
        self.upstreams.send_replace(wanted(upstreams));
    }

    /// Hands every lease back (deletes them) so that others take over at once, then ends the
    /// task; call once this instance's upstreams have stopped.
    pub async fn release_all(self, deadline: Instant) {
        self.stop.cancel();
        let mut task = self.task;
        // At least a moment for the deletes, even when shutdown used all its time.
        let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!(
                "the leases could not be handed back in time; the others take over after lease_ttl"
            );
            task.abort();
        }
    }
}

fn wanted(upstreams: &[UpstreamConfig]) -> Vec<(String, usize)> {
    upstreams
        .iter()
        .map(|u| (u.name.clone(), u.replicas))
        .collect()
}
