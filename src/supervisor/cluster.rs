//! With `[cluster]`, which upstreams this instance runs: those whose lease it holds. The
//! lease task ([`crate::cluster`]) says which; this side starts and stops them and
//! acknowledges, so that a lease is handed back only once its upstream has closed.

use std::future::pending;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::info;

use super::reload::finish_reloading;
use super::Supervisor;
use crate::cluster::Cluster;
use crate::fence::Fence;

impl Supervisor {
    /// Whether this instance runs `upstream` now: always without `[cluster]`.
    pub(super) fn runs(&self, upstream: &str) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.owned.borrow().upstreams.contains_key(upstream))
    }

    /// The fence `upstream` runs under: `None` without `[cluster]`; with it, `Some(None)`
    /// while this instance holds no lease of it.
    pub(super) fn fence_of(&self, upstream: &str) -> Option<Option<Arc<Fence>>> {
        self.cluster
            .as_ref()
            .map(|c| c.owned.borrow().upstreams.get(upstream).cloned())
    }

    /// Starts and stops upstreams to match the leases held, then acknowledges.
    pub(super) async fn apply_ownership(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let owned = cluster.owned.borrow_and_update().clone();
        // Gone too: an upstream running under the fence of a lease since lost, when the
        // lease was taken anew; it restarts under the new one.
        let gone: Vec<String> = self
            .upstreams
            .iter()
            .filter(|(name, running)| owned.upstreams.get(*name) != running.fence.as_ref())
            .map(|(name, _)| name.clone())
            .collect();
        let mut closing = Vec::new();
        for name in gone {
            if let Some(running) = self.upstreams.remove(&name) {
                info!(upstream = %name, "lease given up or lost; closing");
                running.cancel.cancel();
                closing.push((format!("upstream {name}"), running.task));
            }
        }
        // The ones just stopped restart only once closed, so one instance never has two
        // connections of an upstream open.
        finish_reloading(
            closing,
            Instant::now() + self.config.daemon.shutdown_timeout,
        )
        .await;
        for name in owned.upstreams.keys() {
            if self.upstreams.contains_key(name) {
                continue;
            }
            if let Some(config) = self.config.upstream(name) {
                info!(upstream = %name, "lease held; connecting");
                self.spawn_upstream(Arc::new(config.clone()));
            }
        }
        self.publish_directory();
        self.publish_metrics();
        if let Some(cluster) = &self.cluster {
            cluster.applied.send_replace(owned.generation);
        }
    }
}

/// Resolves when the leases held change; never without `[cluster]`.
pub(super) async fn ownership_changed(cluster: &mut Option<Cluster>) {
    match cluster {
        Some(c) => {
            if c.owned.changed().await.is_err() {
                pending::<()>().await;
            }
        }
        None => pending::<()>().await,
    }
}
