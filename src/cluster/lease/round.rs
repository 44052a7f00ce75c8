//! One round of the lease task: keep what is held, read the bucket, ask [`spread::assign`]
//! who should hold what, then give back and take accordingly, and show the result.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::connection::State;
use tracing::info;

use super::observe::Observed;
use super::{spread, Leases, Slot, Unreachable};
use crate::cluster::status::LeaseStatus;
use crate::record::unix_millis;

impl Leases {
    /// Every step of a round in order; the first request that fails ends it.
    pub(super) async fn round(&mut self) -> Result<(), Unreachable> {
        self.expire();
        let connected = self.client.connection_state() == State::Connected;
        self.ch.view.update(|v| v.connected = connected);
        if !connected {
            return Err(Unreachable);
        }
        let store = self.store().await?;
        let slots = self.slots();
        self.heartbeat(&store).await?;
        self.renew(&store).await?;
        self.finish_releases(&store).await?;
        let members = self.members(&store).await?;
        let observed = self.observe(&store, &slots).await?;
        if !self.reachable {
            info!("the lease bucket is reachable again");
            self.reachable = true;
        }
        self.recover(&store, &observed).await?;
        let mut holders: BTreeMap<Slot, String> = BTreeMap::new();
        for (slot, o) in &observed {
            if let Observed::Live(h) = o {
                holders.insert(slot.clone(), h.holder.clone());
            }
        }
        for slot in self.held.keys() {
            holders.insert(slot.clone(), self.me().to_string());
        }
        let plan = spread::assign(&members, &holders, &slots);
        // Only a membership seen twice in a row moves slots away, so a member that is
        // joining or leaving does not make the others give back and retake.
        let stable = members == self.last_members;
        self.last_members = members.clone();
        self.hand_back(&slots, &plan, stable);
        // Take what the plan gives this instance and nobody holds.
        let me = self.me().to_string();
        for slot in &slots {
            if plan.get(slot) != Some(&me) || self.holds_upstream(&slot.upstream) {
                continue;
            }
            match observed.get(slot) {
                Some(Observed::Free) => self.acquire(&store, slot, None).await?,
                Some(Observed::Expired(revision, _)) => {
                    self.acquire(&store, slot, Some(*revision)).await?
                }
                _ => {}
            }
        }
        self.publish();
        self.show(&members, &slots, &observed);
        self.ch.view.round_trip_ok();
        Ok(())
    }

    /// Writes what this round saw into the view `/status` and the metrics read.
    fn show(
        &self,
        members: &BTreeSet<String>,
        slots: &[Slot],
        observed: &BTreeMap<Slot, Observed>,
    ) {
        let now = unix_millis();
        let leases = slots
            .iter()
            .map(|slot| {
                let holder = match observed.get(slot) {
                    Some(Observed::Live(h)) if !h.holder.is_empty() => Some(h),
                    _ => None,
                };
                LeaseStatus {
                    upstream: slot.upstream.clone(),
                    slot: slot.index,
                    holder: holder.map(|h| h.holder.clone()),
                    age_seconds: holder.map(|h| now.saturating_sub(h.since) as f64 / 1000.0),
                    handovers: self.history.get(slot).map_or(0, |h| h.1),
                }
            })
            .collect();
        self.ch.view.update(|v| {
            v.members = members.iter().cloned().collect();
            v.leases = leases;
        });
    }
}
