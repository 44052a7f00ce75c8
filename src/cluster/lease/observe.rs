//! Reading the bucket: which members are alive and what state each slot is in. A key counts
//! as abandoned only once this instance has seen its revision unchanged for `lease_ttl` on
//! its own clock, so no clock is compared across instances.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::kv::{self, Operation};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Leases, Slot, Unreachable};
use crate::cluster::keys::{slot_key, Holder, MEMBER_PREFIX};

/// A slot as the bucket shows it this round.
pub(super) enum Observed {
    /// No key, or deleted: `create` takes it.
    Free,
    /// Its holder has renewed it within `lease_ttl` (as far as this instance saw).
    Live(Holder),
    /// Unchanged for `lease_ttl`: an `update` at this revision takes it over.
    Expired(u64, Option<Holder>),
}

impl Leases {
    /// Notes `revision` of `key`; whether it has stayed the same for `lease_ttl`.
    fn stale(&mut self, key: &str, revision: u64) -> bool {
        let now = Instant::now();
        let entry = self.seen.entry(key.to_string()).or_insert((revision, now));
        if entry.0 != revision {
            *entry = (revision, now);
        }
        now >= entry.1 + self.ttl
    }

    /// The members whose heartbeat is live, this instance included while its own is.
    pub(super) async fn members(
        &mut self,
        store: &kv::Store,
    ) -> Result<BTreeSet<String>, Unreachable> {
        let mut keys = self
            .op("list members", store.keys())
            .await?
            .map_err(|_| Unreachable)?;
        let mut names = Vec::new();
        loop {
            let next = tokio::time::timeout_at(self.op_deadline(), keys.next()).await;
            match next.map_err(|_| Unreachable)? {
                Some(Ok(key)) if key.starts_with(MEMBER_PREFIX) => names.push(key),
                Some(Ok(_)) => {}
                Some(Err(_)) => return Err(Unreachable),
                None => break,
            }
        }
        let mut members = BTreeSet::new();
        if self
            .heartbeat
            .is_some_and(|at| Instant::now() < at + self.ttl)
        {
            members.insert(self.me().to_string());
        }
        for key in names {
            let Some(entry) = self
                .op("read a member", store.entry(key.clone()))
                .await?
                .map_err(|_| Unreachable)?
            else {
                continue;
            };
            if entry.operation != Operation::Put || self.stale(&key, entry.revision) {
                continue;
            }
            if let Some(h) = Holder::parse(&entry.value) {
                members.insert(h.holder);
            }
        }
        Ok(members)
    }

    /// The state of each of `slots`; a slot this instance holds is live with its own value.
    pub(super) async fn observe(
        &mut self,
        store: &kv::Store,
        slots: &[Slot],
    ) -> Result<BTreeMap<Slot, Observed>, Unreachable> {
        let mut out = BTreeMap::new();
        for slot in slots {
            let key = slot_key(slot);
            let entry = self
                .op("read a lease", store.entry(key.clone()))
                .await?
                .map_err(|_| Unreachable)?;
            let observed = match entry {
                Some(e) if e.operation == Operation::Put => {
                    let holder = Holder::parse(&e.value);
                    if let Some(h) = &holder {
                        self.note_holder(slot, &h.holder);
                    }
                    if self.held.contains_key(slot) {
                        Observed::Live(self.held[slot].value.clone())
                    } else if self.stale(&key, e.revision) {
                        Observed::Expired(e.revision, holder)
                    } else {
                        match holder {
                            Some(h) => Observed::Live(h),
                            // Not a value of ours: treat it as held until it expires.
                            None => Observed::Live(Holder {
                                holder: String::new(),
                                token: String::new(),
                                since: 0,
                            }),
                        }
                    }
                }
                _ => Observed::Free,
            };
            out.insert(slot.clone(), observed);
        }
        Ok(out)
    }

    /// Counts a handover of `slot` when its holder differs from the last one seen.
    pub(super) fn note_holder(&mut self, slot: &Slot, holder: &str) {
        let entry = self
            .history
            .entry(slot.clone())
            .or_insert_with(|| (holder.to_string(), 0));
        if entry.0 != holder {
            entry.0 = holder.to_string();
            entry.1 += 1;
        }
    }
}
