//! The listener sinks (unix and tcp): one accept loop, one task per client, and the
//! `on_slow` policy applied where the sink hands a record to a client's bounded queue.
//!
//! Each record is encoded once per sink; every client gets a clone of the same [`Bytes`].
//! A client task owns its socket: it writes queued records (flushing when its queue runs
//! dry) and reads the client's inbound lines, answering a bad line with an error record on
//! that connection only.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch};
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

/// A sink's handle on one client.
struct ClientSlot {
    id: u64,
    queue: mpsc::Sender<Bytes>,
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
    let mut line = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok((stream, peer)) => {
                    clients.retain(|c| !c.queue.is_closed());
                    if clients.len() >= max_clients {
                        warn!(sink = %name, %peer, max_clients, "refusing a client: max_clients reached");
                        tasks.spawn(refuse(stream, max_clients));
                        continue;
                    }
                    next_id += 1;
                    let (queue, records) = mpsc::channel(ctx.config.buffer);
                    let client = Client {
                        id: next_id,
                        peer: peer.clone(),
                        sink: name.clone(),
                        config: ctx.config.clone(),
                        directory: ctx.directory.clone(),
                        max_line: ctx.max_line,
                        stats: ctx.stats.clone(),
                    };
                    let task = tasks.spawn(client.run(stream, records));
                    debug!(sink = %name, %peer, id = next_id, "client connected");
                    clients.push(ClientSlot { id: next_id, queue, task, dropped: 0 });
                    ctx.stats.clients.store(clients.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // EMFILE and friends: do not spin, do not die.
                    warn!(sink = %name, error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            event = ctx.input.recv() => {
                let Some(event) = event else { break };
                line.clear();
                if !encoding.encode(&event, &mut line) {
                    continue;
                }
                let record = Bytes::copy_from_slice(&line);
                hand_out(&mut clients, record, ctx.config.on_slow, &name, &ctx).await;
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

/// Gives `record` to every client according to `on_slow`.
async fn hand_out(
    clients: &mut Vec<ClientSlot>,
    record: Bytes,
    on_slow: OnSlow,
    sink: &str,
    ctx: &SinkContext,
) {
    use mpsc::error::TrySendError;
    let stats = &ctx.stats;
    let mut i = 0;
    while i < clients.len() {
        let slot = &mut clients[i];
        let outcome = match on_slow {
            OnSlow::Block => {
                let len = record.len() as u64;
                stats.bytes_buffered.fetch_add(len, Ordering::Relaxed);
                slot.queue.send(record.clone()).await.map_err(|_| {
                    stats.bytes_buffered.fetch_sub(len, Ordering::Relaxed);
                    Gone
                })
            }
            OnSlow::Disconnect => {
                match offer(slot, record.clone(), stats) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => {
                        warn!(sink, id = slot.id, buffer = ctx.config.buffer, "disconnecting a client that is too slow: its buffer of records is full");
                        slot.task.abort();
                        Err(Gone)
                    }
                    Err(TrySendError::Closed(_)) => Err(Gone),
                }
            }
            OnSlow::Drop => try_send_or_drop(slot, &record, sink, stats),
        };
        match outcome {
            Ok(()) => {
                stats.records_written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Err(Gone) => {
                clients.swap_remove(i);
            }
        }
    }
}

/// The client is gone (closed, or disconnected for being slow).
struct Gone;

/// Offers a record to a client's queue, counting its bytes as buffered while it waits there
/// (counted before sending, so the client never subtracts more than was added).
fn offer(
    slot: &ClientSlot,
    record: Bytes,
    stats: &SinkStats,
) -> Result<(), mpsc::error::TrySendError<Bytes>> {
    let len = record.len() as u64;
    stats.bytes_buffered.fetch_add(len, Ordering::Relaxed);
    slot.queue.try_send(record).inspect_err(|_| {
        stats.bytes_buffered.fetch_sub(len, Ordering::Relaxed);
    })
}

/// `on_slow = "drop"`: a full queue drops the record and counts it; once the client has room
/// again it first gets an error record saying how many it missed.
fn try_send_or_drop(
    slot: &mut ClientSlot,
    record: &Bytes,
    sink: &str,
    stats: &SinkStats,
) -> Result<(), Gone> {
    use mpsc::error::TrySendError;
    if slot.dropped > 0 {
        let notice = client_error_line(
            None,
            &format!(
                "{} records were dropped because this client read too slowly (on_slow = \"drop\")",
                slot.dropped
            ),
        );
        match offer(slot, Bytes::from(notice), stats) {
            Ok(()) => {
                info!(
                    sink,
                    id = slot.id,
                    dropped = slot.dropped,
                    "slow client caught up"
                );
                slot.dropped = 0;
            }
            Err(TrySendError::Full(_)) => {
                slot.dropped += 1;
                stats.records_dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(TrySendError::Closed(_)) => return Err(Gone),
        }
    }
    match offer(slot, record.clone(), stats) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => {
            if slot.dropped == 0 {
                warn!(
                    sink,
                    id = slot.id,
                    "client too slow: dropping records for it (on_slow = \"drop\")"
                );
            }
            slot.dropped += 1;
            stats.records_dropped.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(TrySendError::Closed(_)) => Err(Gone),
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

/// One client's task.
struct Client {
    id: u64,
    peer: String,
    sink: String,
    config: Arc<SinkConfig>,
    directory: watch::Receiver<Arc<Directory>>,
    max_line: usize,
    stats: Arc<SinkStats>,
}

/// A client's queue of records, keeping `bytes_buffered` right: what it takes is subtracted
/// once written, and whatever is left when the client goes (even aborted) is subtracted too.
struct ClientQueue {
    records: mpsc::Receiver<Bytes>,
    stats: Arc<SinkStats>,
    taken: u64,
}

impl ClientQueue {
    async fn recv(&mut self) -> Option<Bytes> {
        let record = self.records.recv().await?;
        self.taken += record.len() as u64;
        Some(record)
    }

    fn try_recv(&mut self) -> Option<Bytes> {
        let record = self.records.try_recv().ok()?;
        self.taken += record.len() as u64;
        Some(record)
    }

    fn written(&mut self) {
        self.stats
            .bytes_buffered
            .fetch_sub(std::mem::take(&mut self.taken), Ordering::Relaxed);
    }
}

impl Drop for ClientQueue {
    fn drop(&mut self) {
        self.records.close();
        while self.try_recv().is_some() {}
        self.written();
    }
}

impl Client {
    async fn run(self, stream: Stream, records: mpsc::Receiver<Bytes>) {
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
        records: mpsc::Receiver<Bytes>,
    ) -> io::Result<()> {
        let mut records = ClientQueue {
            records,
            stats: self.stats.clone(),
            taken: 0,
        };
        let (reader, writer) = tokio::io::split(stream);
        let mut out = BufWriter::with_capacity(64 * 1024, writer);
        let mut lines = FramedRead::new(reader, BoundedLines::new(self.max_line));
        let mut reading = true;
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => {
                        out.write_all(&record).await?;
                        // Batch what is already queued into few writes.
                        while out.buffer().len() < 48 * 1024 {
                            match records.try_recv() {
                                Some(more) => out.write_all(&more).await?,
                                None => break,
                            }
                        }
                        out.flush().await?;
                        records.written();
                    }
                    None => break,
                },
                line = lines.next(), if reading => match line {
                    None => reading = false, // half-closed: keep writing records
                    Some(Ok(line)) => {
                        let reply = match line {
                            Line::Text(text) => self.inbound(&text),
                            Line::TooLong => Some(client_error_line(None, &format!("line longer than {} bytes; it is discarded up to its newline", self.max_line))),
                            Line::NotUtf8 => Some(client_error_line(None, "line is not valid UTF-8; it is discarded")),
                        };
                        if let Some(reply) = reply {
                            out.write_all(&reply).await?;
                            out.flush().await?;
                        }
                    }
                    Some(Err(e)) => return Err(e),
                },
            }
        }
        out.flush().await?;
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
