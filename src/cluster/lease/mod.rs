//! The lease task: one round every `tick` renews what this instance holds, reads the bucket,
//! and takes or hands back slots as [`spread::assign`] says; between rounds nothing else
//! touches NATS. See the module doc of [`super`] for the rules that keep one holder per slot.
//!
//! This module owns the task's state, its loop and what it tells the supervisor; the steps
//! of a round live in:
//! - `bucket`: the NATS connection and the KV bucket (created by hand for nats-server 2.9);
//! - `round`: one round, from what the bucket shows to what to take and give back;
//! - `observe`: reading the bucket: live members, each slot's state, staleness by our clock;
//! - `take`: taking a slot (create, or update of an expired revision) and retaking lapsed ones;
//! - `renew`: the heartbeat, renewals, and the deadlines that stop an upstream not renewed;
//! - `release`: handing slots back, after the supervisor stopped them and at shutdown.

mod bucket;
mod observe;
mod release;
mod renew;
mod round;
mod take;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::keys::Holder;
use super::spread::{self, Slot};
use super::status::ClusterView;
use super::Ownership;
use crate::config::cluster::ClusterConfig;
use crate::fence::Fence;
use crate::record::unix_millis;

/// What the lease task is given by [`super::Cluster::start`].
pub(super) struct Channels {
    pub config: ClusterConfig,
    pub owned: watch::Sender<Ownership>,
    pub applied: watch::Receiver<u64>,
    pub upstreams: watch::Receiver<Vec<(String, usize)>>,
    pub stop: CancellationToken,
    pub view: std::sync::Arc<ClusterView>,
}

/// A slot this instance holds.
struct Held {
    revision: u64,
    value: Holder,
    /// When the last renewal that succeeded was sent.
    renewed: Instant,
    /// The upstream must be stopped by then: `renewed` + most of `lease_ttl`.
    deadline: Instant,
    /// Being handed back: deleted once the supervisor has applied this generation.
    releasing: Option<u64>,
    /// What the data path reads: until when this lease is proven.
    fence: Arc<Fence>,
}

impl Drop for Held {
    /// A slot no longer held (lost, expired, handed back) fences its upstream's data at once.
    fn drop(&mut self) {
        self.fence.revoke();
    }
}

/// A NATS request failed: the round ends, and the next one tries again.
struct Unreachable;

struct Leases {
    ch: Channels,
    client: Client,
    store: Option<kv::Store>,
    ttl: Duration,
    held: BTreeMap<Slot, Held>,
    /// Slots whose local deadline passed: retaken at their revision if nobody else did.
    lapsed: BTreeMap<Slot, (u64, Holder)>,
    /// When this instance last wrote its heartbeat.
    heartbeat: Option<Instant>,
    /// Per key: the revision seen and when it was first seen.
    seen: HashMap<String, (u64, Instant)>,
    /// Per slot: its last holder, and the handovers seen.
    history: HashMap<Slot, (String, u64)>,
    generation: u64,
    published: BTreeMap<String, Arc<Fence>>,
    last_members: BTreeSet<String>,
    /// Whether the last round reached NATS (to log an outage once).
    reachable: bool,
}

/// Runs until `stop`, then deletes this instance's leases and heartbeat.
pub(super) async fn run(ch: Channels) {
    let ttl = ch.config.lease_ttl;
    let tick = (ttl / 8).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let client = match bucket::connect(&ch.config, tick).await {
        Ok(client) => client,
        Err(e) => {
            warn!(nats = %ch.config.display_nats(), "cannot use the cluster's NATS server ({e}); this instance runs no upstream");
            ch.stop.cancelled().await;
            return;
        }
    };
    let mut leases = Leases {
        ch,
        client,
        store: None,
        ttl,
        held: BTreeMap::new(),
        lapsed: BTreeMap::new(),
        heartbeat: None,
        seen: HashMap::new(),
        history: HashMap::new(),
        generation: 0,
        published: BTreeMap::new(),
        last_members: BTreeSet::new(),
        reachable: true,
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = leases.ch.stop.clone();
    loop {
        let next_deadline = leases.earliest_deadline();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = interval.tick() => {
                if leases.round().await.is_err() && leases.reachable && leases.store.is_some() {
                    leases.reachable = false;
                    warn!(nats = %leases.ch.config.display_nats(), "the lease bucket is unreachable; upstreams stop as their leases run out");
                }
            }
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(|| Instant::now() + tick)), if next_deadline.is_some() => {
                leases.expire();
            }
        }
    }
    leases.release_everything().await;
}

impl Leases {
    fn me(&self) -> &str {
        &self.ch.config.instance
    }

    /// Runs one NATS request, given until [`Leases::op_deadline`]; a request that does not
    /// answer in time ends the round.
    async fn op<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Unreachable> {
        match tokio::time::timeout_at(self.op_deadline(), f).await {
            Ok(r) => Ok(r),
            Err(_) => {
                debug!("{what}: no answer in time");
                Err(Unreachable)
            }
        }
    }

    /// The configured upstreams' slots, in config order.
    fn slots(&self) -> Vec<Slot> {
        self.ch
            .upstreams
            .borrow()
            .iter()
            .flat_map(|(name, replicas)| {
                (0..*replicas).map(|index| Slot {
                    upstream: name.clone(),
                    index,
                })
            })
            .collect()
    }

    /// Whether this instance holds a slot of `upstream` (one at most: replicas run on
    /// distinct instances).
    fn holds_upstream(&self, upstream: &str) -> bool {
        self.held.keys().any(|s| s.upstream == upstream)
    }

    /// A fresh value naming this instance, with a token of its own.
    fn new_value(&self) -> Holder {
        Holder {
            holder: self.me().to_string(),
            token: format!("{:016x}", rand::random::<u64>()),
            since: unix_millis(),
        }
    }

    /// Tells the supervisor what to run, when that changed.
    fn publish(&mut self) {
        let upstreams: BTreeMap<String, Arc<Fence>> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_none())
            .map(|(s, h)| (s.upstream.clone(), h.fence.clone()))
            .collect();
        if upstreams != self.published {
            self.generation += 1;
            self.published = upstreams.clone();
            self.ch.owned.send_replace(Ownership {
                generation: self.generation,
                upstreams,
            });
        }
    }
}
