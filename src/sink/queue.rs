//! One destination's queue (a client of a unix or tcp sink, a file, a program, a broker):
//! bounded in records AND in bytes, so a stalled reader of large messages holds a few
//! megabytes, not gigabytes.
//!
//! What the consumer takes stays counted until it says it has written it
//! ([`QueueReader::written`]): the bounds cover what is queued plus what is being written,
//! and a record counts as written only then. Whatever a queue still holds when its reader
//! goes (queued, or taken and not written) is counted as dropped, with the reason the owner
//! set ([`QueueSender::set_drop_reason`], [`QueueReader::set_drop_reason`]; by default
//! `shutdown`, a sink stopped before it wrote them).
//! An encoded run larger than either bound still fits an empty queue, alone, so one huge
//! message is never refused for good. When the consumer goes (done, failed or aborted),
//! whatever is left is freed at once and its bytes leave `bytes_buffered`.
//! Consumers that settle run by run (acknowledged by a server) do so through `settle`.

mod settle;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};

use super::{DropReason, Encoded, SinkStats};
use crate::config::SinkConfig;

/// Bytes a consumer takes in one go (several runs, written together).
const ROUND_BYTES: usize = 64 * 1024;
/// Runs a consumer takes in one go, at most (one `writev` each, within Linux's 1,024).
const ROUND_RUNS: usize = 64;

/// How much a destination's queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Records (`buffer`).
    pub records: usize,
    /// Bytes of encoded lines (`buffer_bytes`).
    pub bytes: usize,
}

impl Bounds {
    /// A client queue as the sink's config says.
    pub fn of(config: &SinkConfig) -> Bounds {
        Bounds {
            records: config.buffer,
            bytes: config.buffer_bytes,
        }
    }

    /// The bounds as permit counts a semaphore can hold (a huge setting means "that many").
    fn permits(self) -> (u32, u32) {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).max(1);
        (clamp(self.records), clamp(self.bytes))
    }
}

/// What became of a run offered to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// Not queued: either bound would be exceeded.
    Full,
    /// Not queued: the consumer is gone.
    Gone,
}

/// The free room of a queue, taken when a run is queued and given back once it is written.
#[derive(Debug)]
struct Room {
    records: Semaphore,
    bytes: Semaphore,
    max: (u32, u32),
    /// Why what the queue holds when its reader goes is lost.
    drop_reason: Mutex<DropReason>,
    /// How many times the reader gave room back: progress, for `max_block`.
    progress: std::sync::atomic::AtomicU64,
}

impl Room {
    /// The permits a run takes: never more than the whole room, so it fits an empty queue.
    fn cost(&self, run: &Encoded) -> (u32, u32) {
        let clamp = |n: usize, max: u32| u32::try_from(n).unwrap_or(u32::MAX).clamp(1, max);
        (
            clamp(run.record_count(), self.max.0),
            clamp(run.len(), self.max.1),
        )
    }
}

/// The producing end of a destination's queue (held by the sink's driver).
#[derive(Debug)]
pub struct QueueSender {
    runs: mpsc::Sender<Encoded>,
    room: Arc<Room>,
    stats: Arc<SinkStats>,
}

/// The consuming end of a destination's queue (held by the task that writes to it).
#[derive(Debug)]
pub struct QueueReader {
    runs: mpsc::Receiver<Encoded>,
    room: Arc<Room>,
    stats: Arc<SinkStats>,
    /// Taken and not yet reported written: records, bytes (as permits) and bytes.
    taken: (usize, usize, u64),
    /// Records (not notices) taken and not yet reported written.
    taken_records: u64,
}

/// The records of a run, not counting a notice of our own (a drop report for a client).
pub fn records(run: &Encoded) -> u64 {
    match run.records().next() {
        Some(record) if record.upstream.is_some() => run.record_count() as u64,
        _ => 0,
    }
}

/// A queue bounded by `bounds`, counting into `stats`.
pub fn queue(bounds: Bounds, stats: Arc<SinkStats>) -> (QueueSender, QueueReader) {
    let (records, bytes) = bounds.permits();
    // Every run takes at least one record permit, so the channel never fills first.
    let (tx, rx) = mpsc::channel(records as usize);
    let room = Arc::new(Room {
        records: Semaphore::new(records as usize),
        bytes: Semaphore::new(bytes as usize),
        max: (records, bytes),
        drop_reason: Mutex::new(DropReason::Shutdown),
        progress: std::sync::atomic::AtomicU64::new(0),
    });
    let sender = QueueSender {
        runs: tx,
        room: room.clone(),
        stats: stats.clone(),
    };
    let reader = QueueReader {
        runs: rx,
        room,
        stats,
        taken: (0, 0, 0),
        taken_records: 0,
    };
    (sender, reader)
}

impl QueueSender {
    /// Queues `run` if there is room for it, without waiting.
    pub fn offer(&self, run: &Encoded) -> Offer {
        if self.runs.is_closed() {
            return Offer::Gone;
        }
        let (records, bytes) = self.room.cost(run);
        let Ok(records) = self.room.records.try_acquire_many(records) else {
            return Offer::Full;
        };
        let Ok(bytes) = self.room.bytes.try_acquire_many(bytes) else {
            return Offer::Full; // the record permits go back as `records` drops
        };
        // The consumer gives them back once written.
        records.forget();
        bytes.forget();
        self.enqueue(run)
    }

    /// Queues `run` once there is room for it (`on_slow = "block"`); `Gone` if the consumer
    /// goes meanwhile.
    pub async fn offer_waiting(&self, run: &Encoded) -> Offer {
        let (records, bytes) = self.room.cost(run);
        let room = async {
            let records = self.room.records.acquire_many(records).await.ok()?;
            let bytes = self.room.bytes.acquire_many(bytes).await.ok()?;
            records.forget();
            bytes.forget();
            Some(())
        };
        tokio::select! {
            room = room => match room {
                Some(()) => self.enqueue(run),
                None => Offer::Gone,
            },
            _ = self.runs.closed() => Offer::Gone,
        }
    }

    /// Whether the queue has room for `run` and then some: at least half of each bound free.
    /// A queue that overflowed resumes at this point, not at the first small run that fits.
    pub fn has_room_to_resume(&self, run: &Encoded) -> bool {
        let (records, bytes) = self.room.cost(run);
        let enough = |free: usize, max: u32, need: u32| {
            free >= (max as usize / 2).max(need as usize + 1).min(max as usize)
        };
        enough(
            self.room.records.available_permits(),
            self.room.max.0,
            records,
        ) && enough(self.room.bytes.available_permits(), self.room.max.1, bytes)
    }

    /// Whether the consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.runs.is_closed()
    }

    /// Why what the queue holds is lost if its reader goes now (the driver giving up on a
    /// slow client says `slow` before aborting its writer).
    pub fn set_drop_reason(&self, reason: DropReason) {
        set_reason(&self.room, reason);
    }

    /// How many times the consumer has given room back so far: it changes while the
    /// destination makes progress.
    pub fn progress(&self) -> u64 {
        self.room.progress.load(Ordering::Relaxed)
    }

    fn enqueue(&self, run: &Encoded) -> Offer {
        let len = run.len() as u64;
        // Counted before sending, so the consumer never subtracts more than was added.
        self.stats.bytes_buffered.fetch_add(len, Ordering::Relaxed);
        match self.runs.try_send(run.clone()) {
            Ok(()) => {
                self.stats
                    .records_routed
                    .fetch_add(records(run), Ordering::Relaxed);
                Offer::Queued
            }
            Err(_) => {
                self.stats.bytes_buffered.fetch_sub(len, Ordering::Relaxed);
                Offer::Gone
            }
        }
    }
}

impl QueueReader {
    /// Waits for the next run, then takes what else is queued up to a round's worth;
    /// `None` once the queue is closed and empty. Call [`QueueReader::written`] after
    /// writing it.
    pub async fn next_round(&mut self) -> Option<Vec<Encoded>> {
        let first = self.runs.recv().await?;
        let mut round = vec![self.take(first)];
        let mut bytes = round[0].len();
        while bytes < ROUND_BYTES && round.len() < ROUND_RUNS {
            match self.runs.try_recv() {
                Ok(run) => {
                    bytes += run.len();
                    round.push(self.take(run));
                }
                Err(_) => break,
            }
        }
        Some(round)
    }

    /// Everything queued now, without waiting.
    pub fn rest(&mut self) -> Vec<Encoded> {
        let mut rest = Vec::new();
        while let Ok(run) = self.runs.try_recv() {
            rest.push(self.take(run));
        }
        rest
    }

    /// Whether nothing is queued (what was taken may still be unwritten).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// What was taken so far is written: counts it and gives its room back.
    pub fn written(&mut self) {
        let done = std::mem::take(&mut self.taken_records);
        self.stats
            .records_written
            .fetch_add(done, Ordering::Relaxed);
        self.give_back();
    }

    /// What was taken so far is in the hands of a writer that counts it itself: gives its
    /// room back without counting it.
    pub fn handed_off(&mut self) {
        self.taken_records = 0;
        self.give_back();
    }

    /// What was taken so far is lost (a write that failed, a program that exited): counts
    /// it as dropped for `reason` and gives its room back.
    pub fn lost(&mut self, reason: DropReason, why: &dyn std::fmt::Display) {
        let lost = std::mem::take(&mut self.taken_records);
        self.stats.drop_records(reason, lost, why);
        self.give_back();
    }

    /// Why what the queue holds is lost if this reader goes now.
    pub fn set_drop_reason(&self, reason: DropReason) {
        set_reason(&self.room, reason);
    }

    fn give_back(&mut self) {
        let (records, permits, bytes) = std::mem::take(&mut self.taken);
        self.return_room(records, permits, bytes);
    }

    /// Gives the sender back the room of runs taken earlier.
    fn return_room(&mut self, records: usize, permits: usize, bytes: u64) {
        self.stats
            .bytes_buffered
            .fetch_sub(bytes, Ordering::Relaxed);
        self.room.records.add_permits(records);
        self.room.bytes.add_permits(permits);
        self.room.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&mut self, run: Encoded) -> Encoded {
        let (records, permits) = self.room.cost(&run);
        self.taken.0 += records as usize;
        self.taken.1 += permits as usize;
        self.taken.2 += run.len() as u64;
        self.taken_records += self::records(&run);
        run
    }
}

fn set_reason(room: &Room, reason: DropReason) {
    if let Ok(mut r) = room.drop_reason.lock() {
        *r = reason;
    }
}

impl Drop for QueueReader {
    fn drop(&mut self) {
        self.runs.close();
        drop(self.rest());
        let reason = self
            .room
            .drop_reason
            .lock()
            .map(|r| *r)
            .unwrap_or(DropReason::Shutdown);
        let why = match reason {
            DropReason::Shutdown => "the sink stopped before writing them (shutdown_timeout)",
            DropReason::Slow => "the destination was too slow and was given up on",
            DropReason::ProgramExited => "the program exited before reading them",
            _ => "the destination failed with them queued",
        };
        self.lost(reason, &why);
    }
}

#[cfg(test)]
mod tests;
