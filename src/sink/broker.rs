//! What the sinks that publish to a broker (`nats`, `redis`) share: delivery that keeps each
//! record until the server has acknowledged it, and sends it again after a failure.
//!
//! The shared [`super::Driver`] still encodes, applies `on_slow` and bounds the queue; here
//! [`deliver`] is the queue's consumer instead of [`super::writer::pump`]. It takes rounds
//! from the queue and hands them to a [`Publisher`] while earlier rounds await their
//! acknowledgement (many records in flight, not one round trip each). A round gives its
//! room back to the queue only once acknowledged ([`QueueReader::written_run`]), so
//! `buffer` bounds what waits in wsbridge: queued plus unacknowledged. While the server is
//! down or slow the queue fills, and then `on_slow` blocks the upstreams or drops (counted).
//!
//! A failure (connection lost, no acknowledgement in time, a refusal that may pass) drops
//! the connection; after a pause from the upstreams' [`Backoff`] the publisher reconnects and
//! every unacknowledged round is sent again, in order. A server that got a record but whose
//! answer was lost gets it twice: each publisher makes the repeat harmless (JetStream's
//! `Nats-Msg-Id`, explicit Redis entry IDs), so the stream holds it once.
//!
//! A round's acknowledgement says which of its records were not stored for good ([`Settled`]:
//! refused by the server, taken by another writer's entry): those are counted dropped with
//! their reason, the others written.
//! That acknowledgement's type is in `ack`.

mod ack;
pub mod settings;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use super::{DropReason, Encoded, QueueReader, SinkStats};
use crate::backoff::Backoff;
pub use ack::{all_stored, Ack, Settled};
use settings::broker_reconnect;

/// Records published and not yet acknowledged, at most: enough to keep a distant server
/// busy, while `buffer` (in bytes) stays the bound on memory.
const WINDOW_RECORDS: u64 = 16 * 1024;

/// Why a round was not acknowledged; the round is sent again after a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The server cannot be reached or refused the connection.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server's URL, without its password.
        server: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The connection broke, or an answer did not come in time.
    #[error("lost the connection to {server}: {reason}")]
    Lost {
        /// The server's URL, without its password.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The server refused a record (a full stream, a key of another type, …).
    #[error("{server} refused a record: {reason}")]
    Refused {
        /// The server's URL, without its password.
        server: String,
        /// What the server said, and what to do.
        reason: String,
    },
}

/// Counters of a broker sink, beside the queue's in [`SinkStats`]: shown in `/status` and
/// `/metrics` for the sinks that set `active`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Whether this sink publishes to a broker (the other counters mean something).
    pub active: AtomicBool,
    /// Whether a connection to the server is up (the client's view: it may not know yet
    /// that the server is gone).
    pub connected: AtomicBool,
    /// When the server last answered (a connect or an acknowledgement), Unix ms; 0 never.
    pub last_ok_ms: AtomicU64,
    /// Records sent for the first time.
    pub published: AtomicU64,
    /// Records the server has acknowledged (stored, or known to be stored already); not
    /// those it refused for good, counted dropped instead.
    pub acknowledged: AtomicU64,
    /// Records sent again after a failure.
    pub retried: AtomicU64,
    /// nats: records whose `msg_id = { jq = … }` gave no id (the `seq` form was used).
    pub msg_id_fallbacks: AtomicU64,
}

/// One broker's side of delivery: how to connect and how to send a round.
pub trait Publisher: Send + 'static {
    /// A round of runs as this publisher keeps it between attempts (with anything it must
    /// send identically every time, such as assigned IDs).
    type Round: Send + 'static;

    /// The server, without secrets, for logs.
    fn server(&self) -> String;

    /// Makes a round of runs taken from the queue.
    fn round(&mut self, runs: Vec<Encoded>) -> Self::Round;

    /// The runs of a round, to give their room back once acknowledged.
    fn runs(round: &Self::Round) -> &[Encoded];

    /// `round` with only the runs `keep` marks (one flag per run), keeping what the
    /// attempts so far fixed for them: a record sent before must be sent identically.
    fn retain(&mut self, round: Self::Round, keep: &[bool]) -> Self::Round {
        let runs = Self::runs(&round)
            .iter()
            .zip(keep)
            .filter(|(_, kept)| **kept)
            .map(|(run, _)| run.clone())
            .collect();
        self.round(runs)
    }

    /// Connects (again), dropping any previous connection.
    fn connect(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Hands every record of `round` to the connection, in order, and returns the future of
    /// its acknowledgement. Sending the same round again must not store a record twice, nor
    /// count a record stored that is not.
    fn send(
        &mut self,
        round: &mut Self::Round,
    ) -> impl Future<Output = Result<Ack, BrokerError>> + Send;

    /// Drops the connection after a failure: nothing more may be sent on it.
    fn disconnect(&mut self);
}

/// A round sent and awaiting its acknowledgement.
struct Flight<R> {
    round: R,
    records: u64,
    ack: Ack,
}

/// The consumer's state; what is still in it when the sink is aborted is reported lost.
struct Delivery<P: Publisher> {
    sink: String,
    publisher: P,
    queue: QueueReader,
    stats: Arc<SinkStats>,
    in_flight: VecDeque<Flight<P::Round>>,
    in_flight_records: u64,
    /// Rounds to send again, oldest first, once connected.
    retry: VecDeque<P::Round>,
    connected: bool,
    backoff: Backoff,
}

/// Feeds `publisher` from `queue` until the queue closes and everything taken from it has
/// been acknowledged. Runs until then even while the server is away: the sink is aborted
/// at the end of `shutdown_timeout`, and then says how many records it could not deliver.
pub async fn deliver<P: Publisher>(
    queue: QueueReader,
    publisher: P,
    stats: Arc<SinkStats>,
    sink: String,
) -> io::Result<()> {
    stats.broker.active.store(true, Ordering::Relaxed);
    let mut d = Delivery {
        sink,
        publisher,
        queue,
        stats,
        in_flight: VecDeque::new(),
        in_flight_records: 0,
        retry: VecDeque::new(),
        connected: false,
        backoff: Backoff::new(broker_reconnect()),
    };
    let mut closed = false;
    loop {
        if !d.connected && !d.reconnect().await {
            continue;
        }
        if closed && d.in_flight.is_empty() {
            break;
        }
        let room = d.in_flight_records < WINDOW_RECORDS;
        tokio::select! {
            biased;
            acked = next_ack(&mut d.in_flight) => match acked {
                Ok(settled) => d.acknowledged(settled),
                Err(e) => d.fail(e, None).await,
            },
            round = d.queue.next_round(), if room && !closed => match round {
                Some(runs) => {
                    // Right before publishing: records whose lease lapsed are not sent.
                    let runs = d.queue.drop_fenced(runs);
                    if !runs.is_empty() {
                        let round = d.publisher.round(runs);
                        d.send(round, false).await;
                    }
                }
                None => closed = true,
            },
        }
    }
    let published = d.stats.broker.acknowledged.load(Ordering::Relaxed);
    info!(sink = %d.sink, acknowledged = published, "every record was acknowledged");
    Ok(())
}

/// The front flight's acknowledgement; pending for ever when nothing is in flight.
async fn next_ack<R>(in_flight: &mut VecDeque<Flight<R>>) -> Result<Settled, BrokerError> {
    match in_flight.front_mut() {
        Some(flight) => (&mut flight.ack).await,
        None => std::future::pending().await,
    }
}

/// The records of a round, without the driver's drop notices (meant for the reader of a
/// socket; publishers skip them, and the drops are counted already).
fn record_count<P: Publisher>(round: &P::Round) -> u64 {
    P::runs(round).iter().map(records).sum()
}

fn records(run: &Encoded) -> u64 {
    match run.records().next() {
        Some(record) if record.upstream.is_some() => run.record_count() as u64,
        _ => 0,
    }
}

impl<P: Publisher> Delivery<P> {
    /// Connects and sends again what was not acknowledged; false (after the pause) if that
    /// failed.
    async fn reconnect(&mut self) -> bool {
        if let Err(e) = self.publisher.connect().await {
            self.pause(&e).await;
            return false;
        }
        self.connected = true;
        self.stats.broker.connected.store(true, Ordering::Relaxed);
        self.answered();
        info!(sink = %self.sink, server = %self.publisher.server(), resending = self.retry.len(), "connected");
        while let Some(round) = self.retry.pop_front() {
            let Some(round) = self.unfenced(round) else {
                continue;
            };
            self.send(round, true).await;
            if !self.connected {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, mut round: P::Round, again: bool) {
        let records = record_count::<P>(&round);
        match self.publisher.send(&mut round).await {
            Ok(ack) => {
                let counter = if again {
                    &self.stats.broker.retried
                } else {
                    &self.stats.broker.published
                };
                counter.fetch_add(records, Ordering::Relaxed);
                self.in_flight_records += records;
                self.in_flight.push_back(Flight {
                    round,
                    records,
                    ack,
                });
            }
            Err(e) => self.fail(e, Some(round)).await,
        }
    }

    /// A round to send again, without the runs whose lease has lapsed since (counted
    /// dropped, `fenced`); `None` if none is left. A round of which only some runs lapsed
    /// keeps the others as they were sent ([`Publisher::retain`]).
    fn unfenced(&mut self, round: P::Round) -> Option<P::Round> {
        let runs = P::runs(&round);
        if runs.iter().all(Encoded::may_write) {
            return Some(round);
        }
        let keep = self.queue.settle_fenced(runs);
        keep.contains(&true)
            .then(|| self.publisher.retain(round, &keep))
    }

    fn acknowledged(&mut self, settled: Settled) {
        let Some(flight) = self.in_flight.pop_front() else {
            return;
        };
        for (i, run) in P::runs(&flight.round).iter().enumerate() {
            let drops: Vec<(DropReason, u64, &dyn std::fmt::Display)> = settled
                .refused
                .iter()
                .filter(|r| r.run == i)
                .map(|r| (r.reason, r.records, &r.why as &dyn std::fmt::Display))
                .collect();
            self.queue.settled_run_by(run, &drops);
        }
        self.in_flight_records -= flight.records;
        let stored = flight.records.saturating_sub(settled.dropped());
        self.stats
            .broker
            .acknowledged
            .fetch_add(stored, Ordering::Relaxed);
        self.backoff.reset();
        self.answered();
    }

    /// The server answered: a round trip worked now.
    fn answered(&self) {
        let now = crate::record::unix_millis();
        self.stats.broker.last_ok_ms.store(now, Ordering::Relaxed);
    }

    /// Gives up the connection: what is in flight, then `unsent` (the round that failed to
    /// go out), are sent again before the rounds still waiting to be, after a pause.
    async fn fail(&mut self, e: BrokerError, unsent: Option<P::Round>) {
        self.publisher.disconnect();
        self.connected = false;
        self.stats.broker.connected.store(false, Ordering::Relaxed);
        if let Some(round) = unsent {
            self.retry.push_front(round);
        }
        for flight in self.in_flight.drain(..).rev() {
            self.retry.push_front(flight.round);
        }
        self.in_flight_records = 0;
        self.pause(&e).await;
    }

    async fn pause(&mut self, e: &BrokerError) {
        // `max_attempts` is 0: there is always a next delay.
        let delay = self.backoff.next_delay().unwrap_or_default();
        let waiting: u64 = self.retry.iter().map(record_count::<P>).sum();
        warn!(
            sink = %self.sink,
            retry_in_ms = delay.as_millis() as u64,
            unacknowledged = waiting,
            "{e}"
        );
        tokio::time::sleep(delay).await;
    }
}

impl<P: Publisher> Drop for Delivery<P> {
    fn drop(&mut self) {
        let queued: u64 = self.queue.rest().iter().map(records).sum();
        let unacknowledged =
            self.in_flight_records + self.retry.iter().map(record_count::<P>).sum::<u64>();
        let left = queued + unacknowledged;
        self.stats.broker.connected.store(false, Ordering::Relaxed);
        if left > 0 {
            warn!(
                sink = %self.sink,
                left,
                unacknowledged,
                "stopped before the server acknowledged every record (shutdown_timeout); these may be missing from the stream"
            );
        }
    }
}
