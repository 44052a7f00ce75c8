//! The listener sinks (unix and tcp): one accept loop beside the sink's [`Driver`], one
//! [`Client`] task per connection, `max_clients` enforced with an error record, and
//! `accept` failures (out of file descriptors) backed off and reported at a bounded rate.
//!
//! Accepting and delivering share one task, so a client is added between two batches: with
//! `replay`, its queue starts with the driver's history and every later batch follows it.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::client::{Client, Stream};
use super::history::History;
use super::inbound::Router;
use super::{SinkContext, SinkError};
use crate::record::client_error_line;
use crate::throttle::Throttled;

/// How long accepting pauses after it failed: with no descriptor left, retrying at once
/// would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener of a sink.
pub enum Listener<'a> {
    /// A unix socket.
    Unix(&'a tokio::net::UnixListener),
    /// A TCP socket.
    Tcp(&'a tokio::net::TcpListener),
}

impl Listener<'_> {
    async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), "unix client".to_string()))
            }
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), addr.to_string()))
            }
        }
    }
}

/// Runs a listener sink until its input closes or it is cancelled.
pub async fn run(
    listener: Listener<'_>,
    max_clients: usize,
    mut ctx: SinkContext,
) -> Result<(), SinkError> {
    let name = ctx.config.name();
    let mut driver = ctx.driver(ctx.config.on_slow);
    if ctx.config.listener.replay > 0 {
        let history = History::new(ctx.config.listener.replay, ctx.config.buffer_bytes);
        driver = driver.with_history(history);
    }
    let router = Router {
        config: ctx.config.clone(),
        directory: ctx.directory.clone(),
        max_line: ctx.max_line,
    };
    let mut tasks = JoinSet::new();
    let (mut failures, mut refusals) = (Throttled::default(), Throttled::default());
    let mut paused_until: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                // A client left: free its slot now, not at the next record.
                let clients = driver.prune();
                ctx.stats.clients.store(clients as u64, Ordering::Relaxed);
            }
            _ = sleep_until_some(paused_until), if paused_until.is_some() => paused_until = None,
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((stream, peer)) => {
                    if driver.prune() >= max_clients {
                        if let Some(count) = refusals.due() {
                            warn!(sink = %name, %peer, max_clients, count, "refusing clients: max_clients reached");
                        }
                        tasks.spawn(refuse(stream, max_clients));
                        continue;
                    }
                    let (pending, queue) = driver.open();
                    let client = Client {
                        id: pending.id,
                        peer: peer.clone(),
                        sink: name.clone(),
                        router: router.clone(),
                    };
                    debug!(sink = %name, %peer, id = pending.id, "client connected");
                    let task = tasks.spawn(client.run(stream, queue));
                    driver.add(pending, task);
                    let clients = driver.prune();
                    ctx.stats.clients.store(clients as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if let Some(count) = failures.due() {
                        warn!(sink = %name, error = %e, count, "accepting clients fails (out of file descriptors?); pausing accepts briefly; raise LimitNOFILE or lower max_clients");
                    }
                    paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            },
            delivery = ctx.input.recv() => {
                let Some(delivery) = delivery else { break };
                driver.deliver(delivery).await;
                let clients = driver.prune();
                ctx.stats.clients.store(clients as u64, Ordering::Relaxed);
            }
        }
    }
    // Closing the queues lets each client write what it has and finish; the supervisor's
    // shutdown deadline aborts clients that do not read (dropping the JoinSet aborts them).
    drop(driver);
    while tasks.join_next().await.is_some() {}
    ctx.stats.clients.store(0, Ordering::Relaxed);
    Ok(())
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
