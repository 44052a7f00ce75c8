//! The hub: which sinks receive which upstream's events, and which upstream a sink client's
//! inbound line goes to.
//!
//! The supervisor owns the [`Hub`] and rewrites its routes on reload. Each upstream task holds
//! an [`Outlet`]: a cached list of its sinks' bounded inputs, refreshed only when the
//! routes change (a version check, no lock on the hot path). Sinks hold a [`Directory`]
//! receiver to find the send queue of the upstream a line is for. Data flows one way:
//! events from upstreams to sinks, inbound messages from sink clients straight into the
//! upstream's own queue, never back through the hub.
//!
//! A sink's input is bounded twice: by batches, and by bytes (payloads plus events), so a
//! feed of 1 MiB messages queues a few of them, not 32 MiB.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::config::SinkConfig;
use crate::fence::{self, Fence};
use crate::record::Event;
use crate::sink::{DropReason, SinkStats};

/// Events of one upstream that arrived together (read without waiting), shared by every sink:
/// one allocation and one channel send per sink per batch, not per message.
#[derive(Debug)]
pub struct Batch {
    /// The upstream's name (once per batch: no reference count to touch per message).
    pub upstream: Arc<str>,
    /// The events, in order.
    pub events: Vec<Event>,
    /// The lease the upstream ran under (`[cluster]`): its records are handed on only while
    /// it holds.
    pub fence: Option<Arc<Fence>>,
}

impl Batch {
    /// A batch of `upstream` without a lease.
    pub fn new(upstream: Arc<str>, events: Vec<Event>) -> Batch {
        Batch {
            upstream,
            events,
            fence: None,
        }
    }

    /// The data messages in it: what a sink makes records of (for counting a batch dropped
    /// before any sink encoded it).
    pub fn data_messages(&self) -> u64 {
        self.events.iter().filter(|e| e.is_data()).count() as u64
    }
}

/// A batch on its way to one sink. It holds its share of the sink's byte budget until the
/// sink drops it, so what a sink has not finished with is bounded in bytes.
#[derive(Debug)]
pub struct Delivery {
    /// The batch, shared with the other sinks.
    pub batch: Arc<Batch>,
    _budget: OwnedSemaphorePermit,
}

/// The receiving end of a sink's input.
pub type SinkReceiver = mpsc::Receiver<Delivery>;

/// A sink's bounded input.
#[derive(Debug, Clone)]
pub struct SinkInput {
    batches: mpsc::Sender<Delivery>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    /// Where a batch refused by its fence before reaching the sink is counted.
    stats: Option<Arc<SinkStats>>,
}

/// A sink's input holding at most `batches` batches and about `bytes` bytes (a batch larger
/// than that still passes, alone).
pub fn sink_input(batches: usize, bytes: usize) -> (SinkInput, SinkReceiver) {
    let (tx, rx) = mpsc::channel(batches);
    let budget_bytes = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
    let input = SinkInput {
        batches: tx,
        budget: Arc::new(Semaphore::new(budget_bytes as usize)),
        budget_bytes,
        stats: None,
    };
    (input, rx)
}

impl SinkInput {
    /// Counts the batches its upstream's fence refuses into `stats` (the sink's).
    pub fn counted_by(mut self, stats: Arc<SinkStats>) -> SinkInput {
        self.stats = Some(stats);
        self
    }

    /// Waits for room (batches and bytes), then queues the batch; does nothing if the sink is
    /// gone. A batch whose fence lapses meanwhile is dropped (counted) instead of waited for.
    async fn send(&self, batch: &Arc<Batch>, cost: usize) {
        let fence = batch.fence.as_ref();
        let cost = u32::try_from(cost)
            .unwrap_or(u32::MAX)
            .min(self.budget_bytes);
        let budget = match self.budget.clone().try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                permit = self.budget.clone().acquire_many_owned(cost) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                // Queued deliveries are dropped with the receiver, giving their budget back;
                // this covers a sink that stops while we wait.
                _ = self.batches.closed() => return,
                _ = fence::lapsed(fence) => return self.fenced(batch),
            },
        };
        let delivery = Delivery {
            batch: batch.clone(),
            _budget: budget,
        };
        // A sink that stopped (removed on reload) just no longer receives.
        let delivery = match self.batches.try_send(delivery) {
            Err(mpsc::error::TrySendError::Full(delivery)) => delivery,
            _ => return,
        };
        tokio::select! {
            _ = self.batches.send(delivery) => {}
            _ = fence::lapsed(fence) => self.fenced(batch),
        }
    }

    /// Counts `batch` routed here and dropped: its lease is no longer proven.
    fn fenced(&self, batch: &Batch) {
        let Some(stats) = &self.stats else { return };
        let n = batch.data_messages();
        if n == 0 {
            return;
        }
        stats
            .records_routed
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        stats.drop_records(
            DropReason::Fenced,
            n,
            &format_args!(
                "the lease of upstream {} is no longer proven",
                batch.upstream
            ),
        );
    }
}

/// An upstream's bounded queue of messages to send.
pub type SendQueue = mpsc::Sender<Message>;

/// Where a sink client's inbound message for one upstream goes.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The upstream's send queue.
    pub queue: SendQueue,
    /// The largest message the upstream takes (its `max_message_size`): a larger one would
    /// come back from an echoing server as a message too large, ending the connection.
    pub max_message_size: usize,
}

/// The inboxes of every running upstream, by name.
pub type Directory = HashMap<String, Inbox>;

/// Delivers one upstream's events to the sinks routed to it.
#[derive(Debug)]
pub struct Outlet {
    routes: watch::Receiver<Arc<Vec<SinkInput>>>,
    current: Arc<Vec<SinkInput>>,
    /// The lease this upstream runs under (`[cluster]`), given to every batch.
    fence: Option<Arc<Fence>>,
}

impl Outlet {
    /// An outlet with a fixed list of sinks (for `connect`, which has no reload).
    pub fn fixed(sinks: Vec<SinkInput>) -> Outlet {
        let (tx, rx) = watch::channel(Arc::new(sinks));
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Outlet::new(rx)
    }

    fn new(mut routes: watch::Receiver<Arc<Vec<SinkInput>>>) -> Outlet {
        let current = routes.borrow_and_update().clone();
        Outlet {
            routes,
            current,
            fence: None,
        }
    }

    /// Delivers only while `fence` holds: each batch carries it to the sinks, which check it
    /// again right before writing.
    pub fn fenced_by(mut self, fence: Option<Arc<Fence>>) -> Outlet {
        self.fence = fence;
        self
    }

    /// The lease this outlet delivers under, if any.
    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.as_ref()
    }

    /// Sends one event of `upstream` to every routed sink.
    pub async fn deliver(&mut self, upstream: &Arc<str>, event: Event) {
        let cost = event.cost();
        let batch = Batch::new(upstream.clone(), vec![event]);
        self.deliver_batch(batch, cost).await;
    }

    /// Sends `batch` (costing `cost` bytes, see [`Event::cost`]) to every routed sink,
    /// waiting where a sink's input is full (that is the backpressure of `on_slow = "block"`;
    /// other sinks drain their input promptly). Once the outlet's fence has lapsed nothing
    /// is handed on: each sink counts the batch dropped (`fenced`), and nothing waits.
    pub async fn deliver_batch(&mut self, mut batch: Batch, cost: usize) {
        if batch.events.is_empty() {
            return;
        }
        if self.routes.has_changed().unwrap_or(false) {
            self.current = self.routes.borrow_and_update().clone();
        }
        batch.fence = self.fence.clone();
        if !fence::holds(self.fence.as_ref()) {
            for sink in self.current.iter() {
                sink.fenced(&batch);
            }
            return;
        }
        let batch = Arc::new(batch);
        for sink in self.current.iter() {
            sink.send(&batch, cost).await;
        }
    }
}

/// The routing table, owned by the supervisor.
#[derive(Debug)]
pub struct Hub {
    outlets: HashMap<String, watch::Sender<Arc<Vec<SinkInput>>>>,
    sinks: Vec<(Arc<SinkConfig>, SinkInput)>,
    directory: watch::Sender<Arc<Directory>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            outlets: HashMap::new(),
            sinks: Vec::new(),
            directory: watch::channel(Arc::new(Directory::new())).0,
        }
    }
}

impl Hub {
    /// An outlet for `upstream`, already routed to the current sinks.
    pub fn outlet(&mut self, upstream: &str) -> Outlet {
        let sinks = self.sinks_for(upstream);
        let sender = self
            .outlets
            .entry(upstream.to_string())
            .or_insert_with(|| watch::channel(Arc::new(Vec::new())).0);
        sender.send_replace(Arc::new(sinks));
        Outlet::new(sender.subscribe())
    }

    /// A receiver of the upstream directory, for a sink.
    pub fn directory(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.subscribe()
    }

    /// Replaces the set of sinks and re-routes every upstream.
    pub fn set_sinks(&mut self, sinks: Vec<(Arc<SinkConfig>, SinkInput)>) {
        self.sinks = sinks;
        for (name, sender) in &self.outlets {
            let routed: Vec<_> = self
                .sinks
                .iter()
                .filter(|(config, _)| config.routes(name))
                .map(|(_, input)| input.clone())
                .collect();
            sender.send_replace(Arc::new(routed));
        }
    }

    /// Replaces the directory of upstream inboxes; forgets outlets of removed upstreams.
    pub fn set_upstreams(&mut self, queues: Directory) {
        self.outlets.retain(|name, _| queues.contains_key(name));
        self.directory.send_replace(Arc::new(queues));
    }

    /// Drops every route, so sinks see their input close once the upstream tasks are gone.
    pub fn clear(&mut self) {
        self.set_sinks(Vec::new());
        self.outlets.clear();
        self.directory.send_replace(Arc::new(Directory::new()));
    }

    fn sinks_for(&self, upstream: &str) -> Vec<SinkInput> {
        self.sinks
            .iter()
            .filter(|(config, _)| config.routes(upstream))
            .map(|(_, input)| input.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::EventKind;

    fn binary(len: usize) -> Event {
        Event::now(EventKind::Binary {
            seq: 1,
            data: vec![0u8; len].into(),
        })
    }

    #[tokio::test]
    async fn a_sink_input_holds_at_most_its_bytes() {
        let (input, mut receiver) = sink_input(32, 1000);
        let mut outlet = Outlet::fixed(vec![input]);
        let name: Arc<str> = Arc::from("feed");
        // 600 bytes fit; a second 600 must wait until the first is done with.
        outlet
            .deliver(&name, binary(600 - size_of::<Event>()))
            .await;
        let second = outlet.deliver(&name, binary(600 - size_of::<Event>()));
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut second)
                .await
                .is_err(),
            "a second batch was queued beyond the byte budget"
        );
        let first = receiver.recv().await.expect("the first batch");
        assert_eq!(first.batch.upstream.as_ref(), "feed");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("room once the first batch was dropped");
        assert!(receiver.recv().await.is_some());
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_passes_alone() {
        let (input, mut receiver) = sink_input(32, 100);
        let mut outlet = Outlet::fixed(vec![input]);
        let name: Arc<str> = Arc::from("feed");
        outlet.deliver(&name, binary(10_000)).await;
        let delivery = receiver.recv().await.expect("the large batch");
        assert_eq!(delivery.batch.events.len(), 1);
    }

    #[tokio::test]
    async fn a_stopped_sink_does_not_hold_up_the_upstream() {
        let (input, receiver) = sink_input(1, 100);
        let mut outlet = Outlet::fixed(vec![input]);
        let name: Arc<str> = Arc::from("feed");
        outlet.deliver(&name, binary(50)).await;
        drop(receiver);
        tokio::time::timeout(Duration::from_secs(5), outlet.deliver(&name, binary(50)))
            .await
            .expect("delivery to a stopped sink returns at once");
    }
}
