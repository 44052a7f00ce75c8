//! Keeping what is held: the member heartbeat, revision-checked renewals at a third of
//! `lease_ttl`, and the local deadline past which an upstream whose lease was not renewed
//! is stopped, whether or not NATS answers.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Held, Leases, Slot, Unreachable};
use crate::cluster::keys::{member_key, slot_key, Holder};
use crate::fence::{Fence, Stamp};

/// When a write was sent, on the lease task's clock and on the fence's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    at: Instant,
    stamp: Stamp,
}

impl Sent {
    pub(super) fn now() -> Sent {
        Sent {
            at: Instant::now(),
            stamp: Stamp::now(),
        }
    }
}

impl Leases {
    /// Records `slot` as held from a write sent at `sent`, with a new fence.
    pub(super) fn hold(&mut self, slot: Slot, revision: u64, value: Holder, sent: Sent) {
        let deadline = self.deadline_after(sent.at);
        let fence = Fence::new(sent.stamp.after(self.ttl * 4 / 5));
        self.held.insert(
            slot,
            Held {
                revision,
                value,
                renewed: sent.at,
                deadline,
                releasing: None,
                fence,
            },
        );
    }

    /// When an upstream whose lease was written at `sent` must have stopped: others take
    /// over only after seeing the revision unchanged for a whole `lease_ttl` from some time
    /// after `sent`, and the margin covers the time the supervisor takes to stop it.
    fn deadline_after(&self, sent: Instant) -> Instant {
        sent + self.ttl * 4 / 5
    }

    /// The first deadline of a held slot.
    pub(super) fn earliest_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// How long one request may take: never past the earliest deadline, so a hanging
    /// server cannot keep an upstream running past its lease.
    pub(super) fn op_deadline(&self) -> Instant {
        let op = Instant::now() + (self.ttl / 8).max(Duration::from_millis(100));
        self.earliest_deadline().map_or(op, |d| d.min(op))
    }

    /// Stops (by publishing without them) every upstream whose deadline has passed.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let gone: Vec<Slot> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for slot in gone {
            if let Some(held) = self.held.remove(&slot) {
                warn!(upstream = %slot.upstream, slot = slot.index, "lease not renewed within lease_ttl; stopping the upstream");
                self.ch.view.update(|v| v.lost += 1);
                if held.releasing.is_none() {
                    self.lapsed
                        .insert(slot, (held.revision, held.value.clone()));
                }
            }
        }
        self.publish();
    }

    /// Writes this instance's member key, at a third of `lease_ttl`.
    pub(super) async fn heartbeat(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
        let now = Instant::now();
        if self.heartbeat.is_some_and(|at| now < at + self.ttl / 3) {
            return Ok(());
        }
        let value = self.new_value().to_bytes();
        match self
            .op("heartbeat", store.put(member_key(self.me()), value))
            .await?
        {
            Ok(_) => {
                self.heartbeat = Some(now);
                Ok(())
            }
            Err(e) => {
                debug!("heartbeat failed: {e}");
                Err(Unreachable)
            }
        }
    }

    /// Renews every held slot last renewed a third of `lease_ttl` ago; a slot whose revision
    /// another instance wrote is lost and its upstream stopped.
    pub(super) async fn renew(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
        let due: Vec<Slot> = self
            .held
            .iter()
            .filter(|(_, h)| Instant::now() >= h.renewed + self.ttl / 3)
            .map(|(s, _)| s.clone())
            .collect();
        for slot in due {
            let Some(held) = self.held.get(&slot) else {
                continue;
            };
            let (revision, value) = (held.revision, held.value.clone());
            let sent = Sent::now();
            let key = slot_key(&slot);
            match self
                .op("renew", store.update(&key, value.to_bytes(), revision))
                .await?
            {
                Ok(revision) => self.renewed(&slot, revision, sent),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    // Our own write may have landed without its answer reaching us.
                    let entry = self
                        .op("read a lease", store.entry(key.clone()))
                        .await?
                        .map_err(|_| Unreachable)?;
                    let ours = entry
                        .as_ref()
                        .filter(|e| e.operation == Operation::Put)
                        .and_then(|e| Holder::parse(&e.value))
                        .is_some_and(|h| h.token == value.token);
                    match entry {
                        Some(e) if ours => {
                            if let Some(h) = self.held.get_mut(&slot) {
                                h.revision = e.revision;
                            }
                        }
                        other => {
                            let by = other
                                .and_then(|e| Holder::parse(&e.value))
                                .map(|h| h.holder);
                            warn!(upstream = %slot.upstream, slot = slot.index, by = ?by, "lease taken by another instance; stopping the upstream");
                            self.held.remove(&slot);
                            self.ch.view.update(|v| v.lost += 1);
                            self.publish();
                        }
                    }
                }
                Err(e) => {
                    debug!(upstream = %slot.upstream, "renewal failed: {e}");
                    return Err(Unreachable);
                }
            }
        }
        Ok(())
    }

    /// A renewal sent at `sent` was acknowledged: the lease is proven until four fifths of
    /// `lease_ttl` after `sent`. If its fence lapsed meanwhile (this process was paused, or
    /// the answer came late), what the upstream received since cannot be proven: the slot
    /// counts as expired, its upstream stops, and the next round retakes it with a new fence.
    fn renewed(&mut self, slot: &Slot, revision: u64, sent: Sent) {
        let deadline = self.deadline_after(sent.at);
        let until = sent.stamp.after(self.ttl * 4 / 5);
        let Some(h) = self.held.get_mut(slot) else {
            return;
        };
        h.revision = revision;
        if h.fence.extend(until) {
            h.renewed = sent.at;
            h.deadline = deadline;
            return;
        }
        warn!(upstream = %slot.upstream, slot = slot.index, "lease renewed only after its fence lapsed (was this process paused?); stopping the upstream");
        if let Some(held) = self.held.remove(slot) {
            self.ch.view.update(|v| v.lost += 1);
            if held.releasing.is_none() {
                self.lapsed
                    .insert(slot.clone(), (held.revision, held.value.clone()));
            }
        }
        self.publish();
    }
}
