//! The lease task: one round every `tick` renews what this instance holds, reads the bucket,
//! and takes or hands back slots as [`spread::assign`] says; between rounds nothing else
//! touches NATS. See the module doc of [`super`] for the rules that keep one holder per slot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, stream::StorageType};
use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::{member_key, slot_key, Holder, MEMBER_PREFIX};
use super::spread::{self, Slot};
use super::status::{ClusterView, LeaseStatus};
use super::Ownership;
use crate::config::cluster::ClusterConfig;
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
}

/// A slot as the bucket shows it this round.
enum Observed {
    /// No key, or deleted: `create` takes it.
    Free,
    /// Its holder has renewed it within `lease_ttl` (as far as this instance saw).
    Live(Holder),
    /// Unchanged for `lease_ttl`: an `update` at this revision takes it over.
    Expired(u64, Option<Holder>),
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
    published: BTreeSet<String>,
    last_members: BTreeSet<String>,
    /// Whether the last round reached NATS (to log an outage once).
    reachable: bool,
}

/// Runs until `stop`, then deletes this instance's leases and heartbeat.
pub(super) async fn run(ch: Channels) {
    let ttl = ch.config.lease_ttl;
    let tick = (ttl / 8).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let client = match connect(&ch.config, tick).await {
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
        published: BTreeSet::new(),
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

async fn connect(
    config: &ClusterConfig,
    tick: Duration,
) -> Result<Client, async_nats::ConnectError> {
    let mut options = ConnectOptions::new()
        .name("wsbridge-cluster")
        .connection_timeout(config.lease_ttl)
        .request_timeout(Some(config.lease_ttl / 4))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |n| (tick * n.min(4) as u32).min(Duration::from_secs(1)));
    let url = &config.nats;
    if !url.username().is_empty() {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        options =
            options.user_and_password(decode(url.username()), decode(url.password().unwrap_or("")));
    }
    let mut plain = url.clone();
    let _ = plain.set_username("");
    let _ = plain.set_password(None);
    options.connect(plain.as_str()).await
}

impl Leases {
    fn me(&self) -> &str {
        &self.ch.config.instance
    }

    /// How long one request may take: never past the earliest deadline, so a hanging
    /// server cannot keep an upstream running past its lease.
    fn op_deadline(&self) -> Instant {
        let op = Instant::now() + (self.ttl / 8).max(Duration::from_millis(100));
        self.earliest_deadline().map_or(op, |d| d.min(op))
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

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

    async fn round(&mut self) -> Result<(), Unreachable> {
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
        let stable = members == self.last_members;
        self.last_members = members.clone();
        // Hand back what the plan gives another live member (or what left the config).
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
                held.releasing = Some(u64::MAX);
                handing = true;
            }
        }
        if handing {
            self.publish();
            let generation = self.generation;
            for held in self.held.values_mut() {
                if held.releasing == Some(u64::MAX) {
                    held.releasing = Some(generation);
                }
            }
        }
        // Take what the plan gives this instance and nobody holds.
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
        Ok(())
    }

    async fn store(&mut self) -> Result<kv::Store, Unreachable> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let js = jetstream::new(self.client.clone());
        let bucket = self.ch.config.bucket.clone();
        let store = match self
            .op("open the bucket", js.get_key_value(bucket.clone()))
            .await?
        {
            Ok(store) => store,
            Err(_) => {
                // The stream a KV bucket is, written out: async-nats' create_key_value first
                // reads the account's limits in a form servers before 2.10 do not answer.
                let max_age = self.ttl * 3;
                let config = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("wsbridge leases: which instance runs which upstream".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    // A key nobody renewed is gone after this, whatever became of its holder.
                    max_age,
                    duplicate_window: max_age.min(Duration::from_secs(120)),
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..Default::default()
                };
                if let Err(e) = self
                    .op("create the bucket", js.get_or_create_stream(config))
                    .await?
                {
                    warn!(bucket = %bucket, "cannot create the lease bucket: {e}; is JetStream enabled on the server (nats-server -js)?");
                    return Err(Unreachable);
                }
                match self
                    .op("open the bucket", js.get_key_value(bucket.clone()))
                    .await?
                {
                    Ok(store) => store,
                    Err(e) => {
                        warn!(bucket = %bucket, "cannot open the lease bucket: {e}");
                        return Err(Unreachable);
                    }
                }
            }
        };
        info!(bucket = %bucket, "lease bucket ready");
        self.store = Some(store.clone());
        Ok(store)
    }

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

    fn holds_upstream(&self, upstream: &str) -> bool {
        self.held.keys().any(|s| s.upstream == upstream)
    }

    fn new_value(&self) -> Holder {
        Holder {
            holder: self.me().to_string(),
            token: format!("{:016x}", rand::random::<u64>()),
            since: unix_millis(),
        }
    }

    /// Stops (by publishing without them) every upstream whose deadline has passed.
    fn expire(&mut self) {
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
                    self.lapsed.insert(slot, (held.revision, held.value));
                }
            }
        }
        self.publish();
    }

    async fn heartbeat(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
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

    async fn renew(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
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
            let sent = Instant::now();
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

    fn renewed(&mut self, slot: &Slot, revision: u64, sent: Instant) {
        if let Some(h) = self.held.get_mut(slot) {
            h.revision = revision;
            h.renewed = sent;
            h.deadline = sent + self.ttl * 4 / 5;
        }
    }

    async fn finish_releases(&mut self, store: &kv::Store) -> Result<(), Unreachable> {
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

    /// Notes `revision` of `key`; whether it has stayed the same for `lease_ttl`.
    fn stale(&mut self, key: &str, revision: u64) -> bool {
        let now = Instant::now();
        let entry = self.seen.entry(key.to_string()).or_insert((revision, now));
        if entry.0 != revision {
            *entry = (revision, now);
        }
        now >= entry.1 + self.ttl
    }

    async fn members(&mut self, store: &kv::Store) -> Result<BTreeSet<String>, Unreachable> {
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

    async fn observe(
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

    fn note_holder(&mut self, slot: &Slot, holder: &str) {
        let entry = self
            .history
            .entry(slot.clone())
            .or_insert_with(|| (holder.to_string(), 0));
        if entry.0 != holder {
            entry.0 = holder.to_string();
            entry.1 += 1;
        }
    }

    /// Retakes lapsed slots that nobody took meanwhile (their revision is still ours).
    async fn recover(
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
            let sent = Instant::now();
            if let Ok(revision) = self
                .op(
                    "retake a lease",
                    store.update(slot_key(&slot), value.to_bytes(), revision),
                )
                .await?
            {
                info!(upstream = %slot.upstream, slot = slot.index, "lease retaken");
                self.held.insert(
                    slot,
                    Held {
                        revision,
                        value,
                        renewed: sent,
                        deadline: sent + self.ttl * 4 / 5,
                        releasing: None,
                    },
                );
                self.ch.view.update(|v| v.acquired += 1);
            }
        }
        Ok(())
    }

    async fn acquire(
        &mut self,
        store: &kv::Store,
        slot: &Slot,
        expired: Option<u64>,
    ) -> Result<(), Unreachable> {
        let value = self.new_value();
        let key = slot_key(slot);
        let sent = Instant::now();
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
        self.held.insert(
            slot.clone(),
            Held {
                revision,
                value,
                renewed: sent,
                deadline: sent + self.ttl * 4 / 5,
                releasing: None,
            },
        );
        self.ch.view.update(|v| v.acquired += 1);
        Ok(())
    }

    /// Tells the supervisor what to run, when that changed.
    fn publish(&mut self) {
        let upstreams: BTreeSet<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_none())
            .map(|(s, _)| s.upstream.clone())
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

    /// At shutdown, after the upstreams stopped: the heartbeat first (so nobody plans for
    /// this instance), then every lease.
    async fn release_everything(&mut self) {
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
