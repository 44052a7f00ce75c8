//! Taking a slot: a revision-checked create of a free key or update of an expired one, so
//! of several instances racing for a slot exactly one wins; and retaking a slot this
//! instance let lapse when nobody else wrote it meanwhile.

use std::collections::BTreeMap;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use tracing::{debug, info};

use super::observe::Observed;
use super::renew::Sent;
use super::{Leases, Slot, Unreachable};
use crate::cluster::keys::slot_key;

impl Leases {
    /// Retakes lapsed slots that nobody took meanwhile (their revision is still ours).
    pub(super) async fn recover(
        &mut self,
        store: &kv::Store,
        observed: &BTreeMap<Slot, Observed>,
    ) -> Result<(), Unreachable> {
        let lapsed = std::mem::take(&mut self.lapsed);
        for (slot, (revision, value)) in lapsed {
            let ours = match observed.get(&slot) {
                Some(Observed::Expired(r, Some(h))) => *r == revision && h.token == value.token,
                Some(Observed::Live(h)) => h.token == value.token,
                _ => false,
            };
            if !ours || self.holds_upstream(&slot.upstream) {
                continue;
            }
            let sent = Sent::now();
            if let Ok(revision) = self
                .op(
                    "retake a lease",
                    store.update(slot_key(&slot), value.to_bytes(), revision),
                )
                .await?
            {
                info!(upstream = %slot.upstream, slot = slot.index, "lease retaken");
                self.hold(slot, revision, value, sent);
                self.ch.view.update(|v| v.acquired += 1);
            }
        }
        Ok(())
    }

    /// Takes `slot`: creates its key, or updates it at the `expired` revision. Losing the
    /// race to another instance is not an error.
    pub(super) async fn acquire(
        &mut self,
        store: &kv::Store,
        slot: &Slot,
        expired: Option<u64>,
    ) -> Result<(), Unreachable> {
        let value = self.new_value();
        let key = slot_key(slot);
        let sent = Sent::now();
        let revision = match expired {
            None => match self
                .op("take a lease", store.create(&key, value.to_bytes()))
                .await?
            {
                Ok(r) => r,
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => return Ok(()),
                Err(e) => {
                    debug!(upstream = %slot.upstream, "taking the lease: {e}");
                    return Err(Unreachable);
                }
            },
            Some(revision) => match self
                .op(
                    "take over a lease",
                    store.update(&key, value.to_bytes(), revision),
                )
                .await?
            {
                Ok(r) => r,
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(()),
                Err(e) => {
                    debug!(upstream = %slot.upstream, "taking over the lease: {e}");
                    return Err(Unreachable);
                }
            },
        };
        info!(upstream = %slot.upstream, slot = slot.index, takeover = expired.is_some(), "lease acquired");
        self.note_holder(slot, &value.holder);
        self.hold(slot.clone(), revision, value, sent);
        self.ch.view.update(|v| v.acquired += 1);
        Ok(())
    }
}
