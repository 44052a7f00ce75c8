//! The extension point: [`SinkWriter`], the one thing a sink implements, and [`pump`], the
//! shared task that feeds a writer from its destination's queue.
//!
//! Everything else is shared and a new sink does not see it: the hub routes batches to the
//! sink; the [`super::Driver`] encodes each batch once with the sink's encoding, applies
//! `on_slow` and the queue's bounds (records and bytes), counts what it queued and drops, and
//! closes the queues on shutdown; [`pump`] takes what is queued in rounds, writes them,
//! gives their room back, flushes when the queue runs dry and closes the writer at the end.
//!
//! A sink with one destination (file, exec, NATS, Redis) is its writer plus one call to
//! [`super::driver::run_single`]. A listener sink (unix, tcp) makes a writer per client and
//! lets [`pump`] read the client's inbound lines too. Stdout is the exception: its one thread
//! takes the batches and encodes them itself (`super::stdout`), with no task between.

use std::future::Future;
use std::io;

use super::inbound::Inbound;
use super::{DropReason, Encoded, QueueReader};

/// Writes records to one destination.
///
/// Each call gets a round of [`Encoded`] runs, in order: write all of them (or fail) before
/// returning. The bytes of a run are its records' lines back to back ([`Encoded::bytes`]);
/// a sink that publishes per record walks [`Encoded::records`], which gives each record's
/// line with its upstream, `seq` and `ts` (for headers such as `Nats-Msg-Id`).
///
/// While a write waits (a full pipe, a slow server), the destination's queue fills and the
/// sink's `on_slow` decides what happens: nothing is lost silently and memory stays bounded.
/// A write must never block the thread: wait asynchronously, or hand blocking writes to a
/// thread of the sink's own. An error ends this destination: [`pump`]
/// returns it, and the sink's runner decides whether that ends the sink (stdout) or only
/// that client.
pub trait SinkWriter: Send + 'static {
    /// Writes `round` completely.
    fn write(&mut self, round: &[Encoded]) -> impl Future<Output = io::Result<()>> + Send;

    /// Makes what was written visible to the reader; called whenever the queue runs dry, so
    /// a writer that buffers may hold bytes only while more are coming.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Whether the writer counts what it wrote (and drops) itself: one that hands records to
    /// a thread of its own, which alone knows whether they reached the disk.
    fn counts_itself(&self) -> bool {
        false
    }

    /// Ends the destination after the last write: shut a socket down, close a file (after
    /// fsync), wait for acknowledgements. Not called after an error.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// Feeds `writer` from `queue` until the queue closes (the sink stops) or, with `inbound`,
/// until the peer closes its side; inbound lines are handled as they come and their error
/// replies written to this destination only. The writer is flushed whenever the queue runs
/// dry and closed at the end.
pub async fn pump<W: SinkWriter>(
    mut queue: QueueReader,
    writer: W,
    inbound: Option<Inbound>,
) -> io::Result<()> {
    let result = pump_until_done(&mut queue, writer, inbound).await;
    if result.is_err() {
        // What the failed write held, and what is still queued, is lost with the destination.
        queue.set_drop_reason(DropReason::Io);
    }
    result
}

async fn pump_until_done<W: SinkWriter>(
    queue: &mut QueueReader,
    mut writer: W,
    mut inbound: Option<Inbound>,
) -> io::Result<()> {
    loop {
        tokio::select! {
            round = queue.next_round() => match round {
                Some(round) => {
                    // Right before writing: records whose lease lapsed are not written.
                    let round = queue.drop_fenced(round);
                    writer.write(&round).await?;
                    drop(round);
                    if writer.counts_itself() {
                        queue.handed_off();
                    } else {
                        queue.written();
                    }
                    if queue.is_empty() {
                        writer.flush().await?;
                    }
                }
                None => break,
            },
            line = next_line(&mut inbound) => match line {
                // The peer closed (at least its sending side): it is done. Without this, a
                // client leaving a quiet sink would hold its task and fd until the next
                // record failed to write.
                None => {
                    // What is routed to it from now on is lost with the client that left.
                    queue.set_drop_reason(DropReason::Io);
                    let rest = queue.rest();
                    let rest = queue.drop_fenced(rest);
                    writer.write(&rest).await?;
                    if writer.counts_itself() {
                        queue.handed_off();
                    } else {
                        queue.written();
                    }
                    break;
                }
                Some(Ok(Some(reply))) => writer.write(&[reply]).await?,
                Some(Ok(None)) => {}
                Some(Err(e)) => return Err(e),
            },
        }
    }
    writer.flush().await?;
    writer.close().await
}

/// The next inbound line's reply; pending for ever without inbound lines.
async fn next_line(inbound: &mut Option<Inbound>) -> Option<io::Result<Option<Encoded>>> {
    match inbound {
        Some(inbound) => inbound.next().await,
        None => std::future::pending().await,
    }
}
