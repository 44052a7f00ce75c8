//! The listener sinks (unix and tcp): one accept loop, one task per client, and the
//! `on_slow` policy applied where the sink hands a record to a client's bounded queue.
//!
//! Each batch of records is encoded once per sink into one [`Chunk`]; every client gets a
//! clone of the same bytes. A client's queue is bounded in records (`buffer`) by a semaphore
//! of permits that the client returns once it has written them. A client task owns its
//! socket: it writes queued chunks (flushing when its queue runs dry) and reads the client's
//! inbound lines, answering a bad line with an error record on that connection only.

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::{SinkContext, SinkError, SinkStats};
use crate::config::{OnSlow, SinkConfig};
use crate::hub::Directory;
use crate::lines::{BoundedLines, Line};
use crate::record::{client_error_line, parse_inbound};

/// The listener of a sink.
pub enum Listener<'a> {
    /// A unix socket.
    Unix(&'a tokio::net::UnixListener),
    /// A TCP socket and its `max_clients`.
    Tcp(&'a tokio::net::TcpListener, usize),
}

/// Records encoded together (one upstream batch, or one error record), shared by clients.
#[derive(Debug, Clone)]
struct Chunk {
    bytes: Bytes,
    /// How many records the bytes hold.
    records: u64,
    /// How much of a client's `buffer` it takes: its records, but never more than the whole
    /// buffer (a batch larger than the buffer still fits an empty queue).
    permits: u32,
}

impl Chunk {
    fn new(bytes: Bytes, records: u64, buffer: usize) -> Chunk {
        let permits = records.min(buffer as u64).min(u64::from(u32::MAX)) as u32;
        Chunk {
            bytes,
            records,
            permits,
        }
    }
}

/// A sink's handle on one client.
struct ClientSlot {
    id: u64,
    queue: mpsc::Sender<Chunk>,
    /// Free room in the client's queue, in records.
    room: Arc<Semaphore>,
    task: AbortHandle,
    /// Records dropped since the client last had room (`on_slow = "drop"`).
    dropped: u64,
}

/// Runs a listener sink until its input closes or it is cancelled.
pub async fn run(listener: Listener<'_>, mut ctx: SinkContext) -> Result<(), SinkError> {
    let name = ctx.config.name();
    let encoding = ctx.encoding();
    let max_clients = match listener {
        Listener::Tcp(_, max) => max,
        Listener::Unix(_) => usize::MAX,
    };
    let mut clients: Vec<ClientSlot> = Vec::new();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut encoded = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                // A client left: free its slot now, not at the next record.
                clients.retain(|c| !c.queue.is_closed());
                ctx.stats.clients.store(clients.len() as u64, Ordering::Relaxed);
            }
            accepted = accept(&listener) => match accepted {
                Ok((stream, peer)) => {
                    clients.retain(|c| !c.queue.is_closed());
                    if clients.len() >= max_clients {
                        warn!(sink = %name, %peer, max_clients, "refusing a client: max_clients reached");
                        tasks.spawn(refuse(stream, max_clients));
                        continue;
                    }
                    next_id += 1;
                    // Every chunk takes at least one permit, so the channel never fills first.
                    let (queue, records) = mpsc::channel(ctx.config.buffer);
                    let room = Arc::new(Semaphore::new(ctx.config.buffer));
                    let client = Client {
                        id: next_id,
                        peer: peer.clone(),
                        sink: name.clone(),
                        config: ctx.config.clone(),
                        directory: ctx.directory.clone(),
                        max_line: ctx.max_line,
                        stats: ctx.stats.clone(),
                        room: room.clone(),
                    };
                    let task = tasks.spawn(client.run(stream, records));
                    debug!(sink = %name, %peer, id = next_id, "client connected");
                    clients.push(ClientSlot { id: next_id, queue, room, task, dropped: 0 });
                    ctx.stats.clients.store(clients.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // EMFILE and friends: do not spin, do not die.
                    warn!(sink = %name, error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            delivery = ctx.input.recv() => {
                let Some(delivery) = delivery else { break };
                let batch = &delivery.batch;
                let records = batch.events.iter().filter(|event| encoding.encode(&batch.upstream, event, &mut encoded)).count() as u64;
                // The encoded chunk takes over from the batch (counted in clients' rooms).
                drop(delivery);
                if records == 0 {
                    continue;
                }
                // Hand the buffer over without copying; the next one starts at a similar size.
                let next = Vec::with_capacity(encoded.len().max(1024));
                let chunk = Chunk::new(Bytes::from(std::mem::replace(&mut encoded, next)), records, ctx.config.buffer);
                hand_out(&mut clients, chunk, ctx.config.on_slow, &name, &ctx).await;
                ctx.stats.clients.store(clients.len() as u64, Ordering::Relaxed);
            }
        }
    }
    // Closing the queues lets each client write what it has and finish; the supervisor's
    // shutdown deadline aborts clients that do not read (dropping the JoinSet aborts them).
    drop(clients);
    while tasks.join_next().await.is_some() {}
    ctx.stats.clients.store(0, Ordering::Relaxed);
    Ok(())
}

/// Gives `chunk` to every client according to `on_slow`.
async fn hand_out(
    clients: &mut Vec<ClientSlot>,
    chunk: Chunk,
    on_slow: OnSlow,
    sink: &str,
    ctx: &SinkContext,
) {
    let stats = &ctx.stats;
    let mut i = 0;
    while i < clients.len() {
        let slot = &mut clients[i];
        let outcome = match on_slow {
            OnSlow::Block => offer_waiting(slot, chunk.clone(), stats).await,
            OnSlow::Disconnect => {
                match offer(slot, chunk.clone(), stats) {
                    Offer::Queued => Ok(()),
                    Offer::Full => {
                        warn!(sink, id = slot.id, buffer = ctx.config.buffer, "disconnecting a client that is too slow: its buffer of records is full");
                        slot.task.abort();
                        Err(Gone)
                    }
                    Offer::Gone => Err(Gone),
                }
            }
            OnSlow::Drop => offer_or_drop(slot, &chunk, sink, ctx),
        };
        match outcome {
            Ok(()) => i += 1,
            Err(Gone) => {
                clients.swap_remove(i);
            }
        }
    }
}

/// The client is gone (closed, or disconnected for being slow).
struct Gone;

/// What became of a chunk offered to a client without waiting.
enum Offer {
    Queued,
    Full,
    Gone,
}

/// Queues a chunk if the client has room for its records. Its bytes count as buffered until
/// the client has written them.
fn offer(slot: &ClientSlot, chunk: Chunk, stats: &SinkStats) -> Offer {
    if slot.queue.is_closed() {
        return Offer::Gone;
    }
    let Ok(permits) = slot.room.try_acquire_many(chunk.permits) else {
        return Offer::Full;
    };
    permits.forget(); // the client gives them back once written
    enqueue(slot, chunk, stats).map_or(Offer::Gone, |()| Offer::Queued)
}

/// `on_slow = "block"`: waits for room, which holds up this sink and, behind it, the upstream.
async fn offer_waiting(slot: &ClientSlot, chunk: Chunk, stats: &SinkStats) -> Result<(), Gone> {
    let permits = tokio::select! {
        permits = slot.room.acquire_many(chunk.permits) => permits.map_err(|_| Gone)?,
        _ = slot.queue.closed() => return Err(Gone),
    };
    permits.forget();
    enqueue(slot, chunk, stats)
}

fn enqueue(slot: &ClientSlot, chunk: Chunk, stats: &SinkStats) -> Result<(), Gone> {
    let (len, records) = (chunk.bytes.len() as u64, chunk.records);
    // Counted before sending, so the client never subtracts more than was added.
    stats.bytes_buffered.fetch_add(len, Ordering::Relaxed);
    match slot.queue.try_send(chunk) {
        Ok(()) => {
            stats.records_written.fetch_add(records, Ordering::Relaxed);
            Ok(())
        }
        Err(_) => {
            stats.bytes_buffered.fetch_sub(len, Ordering::Relaxed);
            Err(Gone)
        }
    }
}

/// `on_slow = "drop"`: a full queue drops the chunk and counts its records; once the client
/// has room again it first gets an error record saying how many it missed.
fn offer_or_drop(
    slot: &mut ClientSlot,
    chunk: &Chunk,
    sink: &str,
    ctx: &SinkContext,
) -> Result<(), Gone> {
    let stats = &ctx.stats;
    // Once dropping, resume only when half the buffer is free again: batches vary in size,
    // and a small one slipping into a nearly full queue is not the client catching up.
    let resume_at = (ctx.config.buffer / 2)
        .max(chunk.permits as usize + 1)
        .min(ctx.config.buffer);
    if slot.dropped > 0 && slot.room.available_permits() < resume_at && !slot.queue.is_closed() {
        slot.dropped += chunk.records;
        stats
            .records_dropped
            .fetch_add(chunk.records, Ordering::Relaxed);
        return Ok(());
    }
    if slot.dropped > 0 {
        let notice = client_error_line(
            None,
            &format!(
                "{} records were dropped because this client read too slowly (on_slow = \"drop\")",
                slot.dropped
            ),
        );
        match offer(
            slot,
            Chunk::new(Bytes::from(notice), 1, ctx.config.buffer),
            stats,
        ) {
            Offer::Queued => {
                info!(
                    sink,
                    id = slot.id,
                    dropped = slot.dropped,
                    "slow client caught up"
                );
                slot.dropped = 0;
            }
            Offer::Full => {
                slot.dropped += chunk.records;
                stats
                    .records_dropped
                    .fetch_add(chunk.records, Ordering::Relaxed);
                return Ok(());
            }
            Offer::Gone => return Err(Gone),
        }
    }
    match offer(slot, chunk.clone(), stats) {
        Offer::Queued => Ok(()),
        Offer::Full => {
            if slot.dropped == 0 {
                warn!(
                    sink,
                    id = slot.id,
                    "client too slow: dropping records for it (on_slow = \"drop\")"
                );
            }
            slot.dropped += chunk.records;
            stats
                .records_dropped
                .fetch_add(chunk.records, Ordering::Relaxed);
            Ok(())
        }
        Offer::Gone => Err(Gone),
    }
}

/// A connected client stream of either kind.
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listener<'_>) -> io::Result<(Stream, String)> {
    match listener {
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), "unix client".to_string()))
        }
        Listener::Tcp(l, _) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), addr.to_string()))
        }
    }
}

/// Tells a client over `max_clients` why it is refused, then closes.
async fn refuse(stream: Stream, max_clients: usize) {
    let line = client_error_line(
        None,
        &format!(
            "too many clients (max_clients = {max_clients}); try again later or raise max_clients"
        ),
    );
    let write = async {
        match stream {
            Stream::Unix(mut s) => s.write_all(&line).await,
            Stream::Tcp(mut s) => s.write_all(&line).await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Bytes written to a client between giving its room back.
const WRITE_ROUND: usize = 64 * 1024;
/// Chunks per write(2), at most.
const MAX_IOVECS: usize = 64;

/// Writes every chunk, several per write(2), and empties `chunks`.
async fn write_chunks<W: AsyncWrite + Unpin>(
    out: &mut W,
    chunks: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_IOVECS)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = out.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Skip what went out; a chunk cut in the middle goes on from there.
        while written > 0 {
            let chunk = &mut chunks[first];
            if written >= chunk.len() {
                written -= chunk.len();
                first += 1;
            } else {
                chunk.advance(written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

/// One client's task.
struct Client {
    id: u64,
    peer: String,
    sink: String,
    config: Arc<SinkConfig>,
    directory: watch::Receiver<Arc<Directory>>,
    max_line: usize,
    stats: Arc<SinkStats>,
    /// Free room in this client's queue, in records (given back as chunks are written).
    room: Arc<Semaphore>,
}

/// A client's queue of chunks. What it takes is given back once written: the bytes to
/// `bytes_buffered`, the permits to the client's room. Whatever is left when the client goes
/// (even aborted) is subtracted from `bytes_buffered` too.
struct ClientQueue {
    chunks: mpsc::Receiver<Chunk>,
    stats: Arc<SinkStats>,
    room: Arc<Semaphore>,
    taken_bytes: u64,
    taken_permits: usize,
}

impl ClientQueue {
    fn take(&mut self, chunk: Chunk) -> Bytes {
        self.taken_bytes += chunk.bytes.len() as u64;
        self.taken_permits += chunk.permits as usize;
        chunk.bytes
    }

    async fn recv(&mut self) -> Option<Bytes> {
        let chunk = self.chunks.recv().await?;
        Some(self.take(chunk))
    }

    fn try_recv(&mut self) -> Option<Bytes> {
        let chunk = self.chunks.try_recv().ok()?;
        Some(self.take(chunk))
    }

    fn written(&mut self) {
        let bytes = std::mem::take(&mut self.taken_bytes);
        self.stats
            .bytes_buffered
            .fetch_sub(bytes, Ordering::Relaxed);
        self.room
            .add_permits(std::mem::take(&mut self.taken_permits));
    }
}

impl Drop for ClientQueue {
    fn drop(&mut self) {
        self.chunks.close();
        while self.try_recv().is_some() {}
        self.written();
    }
}

impl Client {
    async fn run(self, stream: Stream, records: mpsc::Receiver<Chunk>) {
        let result = match stream {
            Stream::Unix(s) => self.serve(s, records).await,
            Stream::Tcp(s) => self.serve(s, records).await,
        };
        match result {
            Ok(()) => debug!(sink = %self.sink, id = self.id, peer = %self.peer, "client left"),
            Err(e) => {
                debug!(sink = %self.sink, id = self.id, peer = %self.peer, error = %e, "client connection ended")
            }
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite>(
        &self,
        stream: S,
        chunks: mpsc::Receiver<Chunk>,
    ) -> io::Result<()> {
        let mut records = ClientQueue {
            chunks,
            stats: self.stats.clone(),
            room: self.room.clone(),
            taken_bytes: 0,
            taken_permits: 0,
        };
        let (reader, mut out) = tokio::io::split(stream);
        let mut lines = FramedRead::new(reader, BoundedLines::new(self.max_line));
        // Chunks go out as they are, several per write(2): no copy into a buffer of ours.
        let mut round: Vec<Bytes> = Vec::new();
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => {
                        // Batch what is already queued into few writes, but give the room
                        // back every round: holding it until the queue runs dry would keep
                        // the room of records the client has long read under a steady feed,
                        // and a fast reader would be judged slow.
                        let mut bytes = record.len();
                        round.push(record);
                        while bytes < WRITE_ROUND && round.len() < MAX_IOVECS {
                            match records.try_recv() {
                                Some(more) => {
                                    bytes += more.len();
                                    round.push(more);
                                }
                                None => break,
                            }
                        }
                        write_chunks(&mut out, &mut round).await?;
                        records.written();
                    }
                    None => {
                        round.extend(std::iter::from_fn(|| records.try_recv()));
                        write_chunks(&mut out, &mut round).await?;
                        records.written();
                        break;
                    }
                },
                line = lines.next() => match line {
                    // The client closed (at least its sending side): it is done. Without this,
                    // a client leaving a quiet sink would hold its task and fd until the next
                    // record failed to write.
                    None => {
                        round.extend(std::iter::from_fn(|| records.try_recv()));
                        write_chunks(&mut out, &mut round).await?;
                        records.written();
                        break;
                    }
                    Some(Ok(line)) => {
                        let reply = match line {
                            Line::Text(text) => self.inbound(&text),
                            Line::TooLong => Some(client_error_line(None, &format!("line longer than {} bytes; it is discarded up to its newline", self.max_line))),
                            Line::NotUtf8 => Some(client_error_line(None, "line is not valid UTF-8; it is discarded")),
                        };
                        if let Some(reply) = reply {
                            out.write_all(&reply).await?;
                        }
                    }
                    Some(Err(e)) => return Err(e),
                },
            }
        }
        out.shutdown().await
    }

    /// Handles one inbound line; returns the error record for the client, if any.
    fn inbound(&self, line: &str) -> Option<Vec<u8>> {
        if line.trim().is_empty() {
            return None;
        }
        if !self.config.inbound {
            return Some(client_error_line(
                None,
                "this sink does not accept lines (inbound = false)",
            ));
        }
        let inbound = match parse_inbound(line) {
            Ok(inbound) => inbound,
            Err(e) => return Some(client_error_line(None, &e.to_string())),
        };
        let directory = self.directory.borrow().clone();
        let name = match inbound.upstream {
            Some(name) => {
                if !self.config.routes(&name) || !directory.contains_key(&name) {
                    return Some(client_error_line(
                        Some(&name),
                        &format!("this sink serves no upstream named {name:?}"),
                    ));
                }
                name
            }
            None => {
                let mut served = directory.keys().filter(|n| self.config.routes(n));
                match (served.next(), served.next()) {
                    (Some(only), None) => only.clone(),
                    _ => {
                        return Some(client_error_line(
                            None,
                            "this sink serves several upstreams: name one with \"upstream\"",
                        ))
                    }
                }
            }
        };
        let Some(queue) = directory.get(&name) else {
            return Some(client_error_line(Some(&name), "upstream is gone"));
        };
        match queue.try_send(inbound.message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(_)) => Some(client_error_line(
                Some(&name),
                "the upstream's send queue is full (it may be reconnecting); the message was not sent, retry later",
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(client_error_line(Some(&name), "the upstream is stopped; the message was not sent")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// Takes at most 7 bytes per write, as a congested socket may.
    #[derive(Default)]
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn chunks_are_written_whole_and_in_order_through_partial_writes() {
        let pieces: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; usize::from(i % 13)]).collect();
        let mut chunks: Vec<Bytes> = pieces.iter().cloned().map(Bytes::from).collect();
        let mut out = Trickle::default();
        write_chunks(&mut out, &mut chunks).await.unwrap();
        assert!(chunks.is_empty());
        assert_eq!(out.0, pieces.concat());
    }
}
