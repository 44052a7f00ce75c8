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

impl Supervisor {
    /// Whether this instance runs `upstream` now: always without `[cluster]`.
    pub(super) fn runs(&self, upstream: &str) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.owned.borrow().upstreams.contains(upstream))
    }

    /// Starts and stops upstreams to match the leases held, then acknowledges.
    pub(super) async fn apply_ownership(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let owned = cluster.owned.borrow_and_update().clone();
        let gone: Vec<String> = self
            .upstreams
            .keys()
            .filter(|name| !owned.upstreams.contains(*name))
            .cloned()
            .collect();
        let mut closing = Vec::new();
        for name in gone {
            if let Some(running) = self.upstreams.remove(&name) {
                info!(upstream = %name, "lease given up or lost; closing");
                running.cancel.cancel();
                closing.push((format!("upstream {name}"), running.task));
            }
        }
        for name in &owned.upstreams {
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
        finish_reloading(
            closing,
            Instant::now() + self.config.daemon.shutdown_timeout,
        )
        .await;
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
