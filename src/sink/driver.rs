//! The shared half of every sink: takes the batches the hub routes to it, encodes each once,
//! and hands the same bytes to every destination's bounded queue under the sink's `on_slow`
//! policy, counting what is queued and dropped. [`run_single`] runs a sink with one
//! destination; the listener sinks drive one destination per client, and may keep a
//! [`History`] that a new destination gets first.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

mod slow;

use self::slow::{count_dropped, offer_blocking, offer_or_drop};
use super::fenced;
use super::history::History;
use super::queue::{queue, Bounds, Offer, QueueReader, QueueSender};
use super::writer::{pump, SinkWriter};
use super::{DropReason, Encoder, SinkStats};
use crate::config::OnSlow;
use crate::hub::{Delivery, SinkReceiver};

/// A destination the driver feeds.
struct Destination {
    id: u64,
    queue: QueueSender,
    /// The task writing to it, aborted when `on_slow = "disconnect"` gives up on it.
    task: AbortHandle,
    /// Records dropped since it last had room (`on_slow = "drop"`).
    dropped: u64,
    /// `on_slow = "block"`: it took nothing for `max_block`, so runs are dropped, not
    /// waited for, until it has room again.
    stalled: bool,
}

/// A destination whose queue exists and whose writer task is about to start.
pub struct Pending {
    /// Its id, for logs (1, 2, … per sink).
    pub id: u64,
    queue: QueueSender,
}

/// Encodes and fans out one sink's records.
pub struct Driver {
    sink: String,
    encoder: Encoder,
    on_slow: OnSlow,
    /// How long `block` waits on a destination that takes nothing; `None`: for ever.
    max_block: Option<Duration>,
    bounds: Bounds,
    stats: Arc<SinkStats>,
    destinations: Vec<Destination>,
    next_id: u64,
    /// The newest records, for destinations that join later (`replay`).
    history: Option<History>,
}

/// The destination is gone (closed, or disconnected for being slow).
struct Gone;

impl Driver {
    /// A driver for the sink named `sink`, with no destinations yet.
    pub fn new(
        sink: String,
        encoder: Encoder,
        on_slow: OnSlow,
        bounds: Bounds,
        stats: Arc<SinkStats>,
    ) -> Driver {
        Driver {
            sink,
            encoder,
            on_slow,
            max_block: None,
            bounds,
            stats,
            destinations: Vec::new(),
            next_id: 0,
            history: None,
        }
    }

    /// With `on_slow = "block"`, stops waiting on a destination that took nothing for
    /// `max_block` (`None`: waits for ever, as `connect`'s stdout does).
    pub fn with_max_block(mut self, max_block: Option<Duration>) -> Driver {
        self.max_block = max_block;
        self
    }

    /// Keeps `history` of what is delivered; each new destination gets it first.
    pub fn with_history(mut self, history: History) -> Driver {
        self.history = Some(history);
        self
    }

    /// A new destination's queue: spawn the task that feeds its writer from the reader (with
    /// [`pump`]), then [`Driver::add`] it.
    ///
    /// With a history, the queue starts with it, and is that much larger so the history does
    /// not count against the live records' bounds. Taken between two deliveries, it ends
    /// where the next delivery starts.
    pub fn open(&mut self) -> (Pending, QueueReader) {
        self.next_id += 1;
        let snapshot = self
            .history
            .as_ref()
            .map(History::snapshot)
            .unwrap_or_default();
        let bounds = Bounds {
            records: self.bounds.records + snapshot.records,
            bytes: self.bounds.bytes + snapshot.bytes,
        };
        let (queue, reader) = queue(bounds, self.stats.clone());
        for run in &snapshot.runs {
            // Room was made for exactly these runs in an empty queue.
            let offered = queue.offer(run);
            debug_assert_eq!(offered, Offer::Queued);
        }
        let pending = Pending {
            id: self.next_id,
            queue,
        };
        (pending, reader)
    }

    /// Starts feeding a destination whose writer runs as `task`.
    pub fn add(&mut self, pending: Pending, task: AbortHandle) {
        self.destinations.push(Destination {
            id: pending.id,
            queue: pending.queue,
            task,
            dropped: 0,
            stalled: false,
        });
    }

    /// Forgets destinations whose writer has ended; returns how many are left.
    pub fn prune(&mut self) -> usize {
        self.destinations.retain(|d| !d.queue.is_closed());
        self.destinations.len()
    }

    /// Encodes `delivery` and hands it to every destination; waits only with `block`.
    pub async fn deliver(&mut self, delivery: Delivery) {
        let encoded = self.encoder.encode(&delivery.batch);
        // The encoded lines take over from the batch (counted in the destinations' queues).
        drop(delivery);
        let Some(encoded) = encoded else { return };
        if !encoded.may_write() {
            // The upstream's lease lapsed since it handed the batch on: nothing is queued.
            for _ in &self.destinations {
                count_dropped(
                    &self.stats,
                    &encoded,
                    DropReason::Fenced,
                    &fenced::why(&encoded),
                );
            }
            return;
        }
        if let Some(history) = &mut self.history {
            history.push(&encoded);
        }
        let mut i = 0;
        while i < self.destinations.len() {
            let destination = &mut self.destinations[i];
            let kept = match self.on_slow {
                OnSlow::Block => {
                    offer_blocking(
                        destination,
                        &encoded,
                        self.max_block,
                        &self.sink,
                        &self.stats,
                    )
                    .await
                }
                OnSlow::Disconnect => match destination.queue.offer(&encoded) {
                    Offer::Queued => Ok(()),
                    Offer::Full => {
                        warn!(sink = %self.sink, id = destination.id, buffer = self.bounds.records, buffer_bytes = self.bounds.bytes, "disconnecting a client that is too slow: its buffer is full");
                        destination.queue.set_drop_reason(DropReason::Slow);
                        destination.task.abort();
                        count_dropped(
                            &self.stats,
                            &encoded,
                            DropReason::Slow,
                            &"a client too slow was disconnected (on_slow = \"disconnect\")",
                        );
                        Err(Gone)
                    }
                    Offer::Gone => Err(Gone),
                },
                OnSlow::Drop => offer_or_drop(destination, &encoded, &self.sink, &self.stats),
            };
            match kept {
                Ok(()) => i += 1,
                Err(Gone) => {
                    // Its queue goes with it: what it held is freed now.
                    self.destinations.swap_remove(i);
                }
            }
        }
    }
}

/// Runs a sink with one destination, written by `writer`, until its input closes or
/// `shutdown` is cancelled (then what is already queued is still written). A write error
/// ends the sink and is returned.
pub async fn run_single<W: SinkWriter>(
    input: SinkReceiver,
    shutdown: CancellationToken,
    driver: Driver,
    writer: W,
) -> io::Result<()> {
    run_single_with(input, shutdown, driver, |reader| pump(reader, writer, None)).await
}

/// [`run_single`] with a consumer of the queue of its own instead of [`pump`]: for sinks
/// that keep records until a server acknowledges them (`super::broker`). The consumer runs
/// as a task of its own, aborted if this future is dropped (the sink aborted at the end of
/// `shutdown_timeout`).
pub async fn run_single_with<F, C>(
    mut input: SinkReceiver,
    shutdown: CancellationToken,
    mut driver: Driver,
    consume: C,
) -> io::Result<()>
where
    C: FnOnce(QueueReader) -> F,
    F: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    let (pending, reader) = driver.open();
    let task = tokio::spawn(consume(reader));
    driver.add(pending, task.abort_handle());
    let mut task = AbortOnDrop(task);
    loop {
        tokio::select! {
            biased;
            // The writer failed: stop at once (the queue is gone, so nothing waits on it).
            done = &mut task.0 => return joined(done),
            _ = shutdown.cancelled() => {
                input.close();
                while let Some(delivery) = input.recv().await {
                    driver.deliver(delivery).await;
                }
                break;
            }
            delivery = input.recv() => match delivery {
                Some(delivery) => driver.deliver(delivery).await,
                None => break,
            },
        }
    }
    // Closing the queue lets the writer write what it holds, then close.
    drop(driver);
    joined((&mut task.0).await)
}

/// A task that does not outlive the sink that spawned it.
struct AbortOnDrop(tokio::task::JoinHandle<io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn joined(done: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    done.unwrap_or_else(|e| {
        Err(io::Error::other(format!(
            "the sink's writer task failed (a bug: please report it with the log): {e}"
        )))
    })
}
