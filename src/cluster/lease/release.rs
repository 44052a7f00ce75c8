//! Giving slots back: a slot the plan moves to another member (or that left the config) is
//! first dropped from what the supervisor runs, and deleted from the bucket only once the
//! supervisor has applied that, so its next holder never connects while this one still is.
//! At shutdown, everything is deleted at once so others take over without waiting for
//! `lease_ttl`.

use std::collections::HashMap;

use async_nats::connection::State;
use async_nats::jetstream::kv;
use tracing::{debug, info};

use super::{Leases, Slot, Unreachable};
use crate::cluster::keys::{member_key, slot_key};

/// Marks a slot chosen for hand-back until [`Leases::publish`] gives it a generation.
const PENDING: u64 = u64::MAX;

impl Leases {
    /// Starts handing back each held slot that left the config or, when membership is
    /// `stable`, that `plan` gives another member.
    pub(super) fn hand_back(&mut self, slots: &[Slot], plan: &HashMap<Slot, String>, stable: bool) {
        let me = self.me().to_string();
        let mut handing = false;
        for (slot, held) in self.held.iter_mut() {
            if held.releasing.is_some() {
                continue;
            }
            let configured = slots.contains(slot);
            let other = plan.get(slot).filter(|m| **m != me);
            if !configured || (stable && other.is_some()) {
                info!(upstream = %slot.upstream, slot = slot.index, to = ?other, "handing the lease back");
                held.releasing = Some(PENDING);
                handing = true;
            }
        }
        if handing {
            self.publish();
            let generation = self.generation;
            for held in self.held.values_mut() {
                if held.releasing == Some(PENDING) {
                    held.releasing = Some(generation);
                }
            }
        }
    }

    /// Deletes the slots being handed back whose upstreams the supervisor has stopped.
    pub(super) async fn finish_releases(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
        let applied = *self.ch.applied.borrow();
        let done: Vec<(Slot, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_some_and(|g| g <= applied))
            .map(|(s, h)| (s.clone(), h.revision))
            .collect();
        for (slot, revision) in done {
            let r = self
                .op(
                    "hand a lease back",
                    store.delete_expect_revision(slot_key(&slot), Some(revision)),
                )
                .await?;
            if let Err(e) = r {
                debug!(upstream = %slot.upstream, "deleting the lease: {e}");
            }
            self.held.remove(&slot);
            self.ch.view.update(|v| v.released += 1);
        }
        Ok(())
    }

    /// At shutdown, after the upstreams stopped: the heartbeat first (so nobody plans for
    /// this instance), then every lease.
    pub(super) async fn release_everything(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if self.client.connection_state() != State::Connected {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let _ = self.op("leave", store.delete(member_key(self.me()))).await;
        let count = held.len();
        for (slot, h) in held {
            let _ = self
                .op(
                    "hand a lease back",
                    store.delete_expect_revision(slot_key(&slot), Some(h.revision)),
                )
                .await;
        }
        info!(leases = count, "leases handed back");
    }
}
