//! One task per upstream endpoint: connect, send `on_connect` and queued messages, read
//! frames into events, keep the connection alive, and reconnect with backoff.
//!
//! The task owns its socket and its send queue; the supervisor only starts it, cancels it
//! and reads its [`UpstreamStats`]. `connect` runs the same task in [`RunMode::Once`].

pub mod backoff;
pub mod connect;
pub mod keepalive;
mod outgoing;
pub mod tls;

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UpstreamConfig;
use crate::hub::{Batch, Outlet};
use crate::record::{Event, EventKind};
use backoff::Backoff;
use connect::{ConnectError, WsStream};
use keepalive::{Due, Keepalive};
use outgoing::{Io, Outgoing};

/// Whether the task reconnects forever (the daemon, `connect --reconnect`) or ends with the
/// first connection (plain `connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Reconnect after every failure and Close, with backoff.
    Reconnect,
    /// Return after the first connection ends or the first attempt fails.
    Once,
}

/// The connection state, as the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Connecting (TCP, TLS, handshake).
    Connecting = 0,
    /// Open.
    Open = 1,
    /// Waiting before the next attempt.
    Backoff = 2,
    /// Gave up or shut down.
    Stopped = 3,
}

/// Counters shared between an upstream task and the supervisor. They outlive a task that is
/// restarted on reload, so `seq` keeps counting.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// The last `seq` given to a data message.
    pub seq: AtomicU64,
    /// [`State`] as a number.
    pub state: AtomicU8,
    /// Completed handshakes.
    pub connects: AtomicU64,
    /// Connections that ended or attempts that failed, by [`Cause`].
    pub disconnects: [AtomicU64; Cause::ALL.len()],
    /// Data messages received.
    pub messages_received: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Messages sent (on_connect and inbound).
    pub messages_sent: AtomicU64,
    /// Unix milliseconds of the last data message, 0 if none.
    pub last_message_ms: AtomicU64,
    /// Last Ping round trip, microseconds.
    pub ping_rtt_us: AtomicU64,
}

/// Why a connection ended or an attempt failed, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// TCP, DNS, TLS or the handshake failed, or connect_timeout passed.
    ConnectFailed,
    /// The peer sent Close.
    PeerClosed,
    /// Our Ping went unanswered for ping_timeout.
    PingTimeout,
    /// No data message for receive_timeout.
    ReceiveTimeout,
    /// The peer sent a message larger than max_message_size.
    MessageTooBig,
    /// Reset, EOF without Close, protocol error, failed write.
    ConnectionLost,
    /// We closed (shutdown, reload, `connect` at stdin EOF).
    Closed,
}

impl Cause {
    /// Every cause, in the order of [`UpstreamStats::disconnects`].
    pub const ALL: [Cause; 7] = [
        Cause::ConnectFailed,
        Cause::PeerClosed,
        Cause::PingTimeout,
        Cause::ReceiveTimeout,
        Cause::MessageTooBig,
        Cause::ConnectionLost,
        Cause::Closed,
    ];

    /// The `cause` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ConnectFailed => "connect_failed",
            Cause::PeerClosed => "peer_closed",
            Cause::PingTimeout => "ping_timeout",
            Cause::ReceiveTimeout => "receive_timeout",
            Cause::MessageTooBig => "message_too_big",
            Cause::ConnectionLost => "connection_lost",
            Cause::Closed => "closed",
        }
    }
}

impl SessionEnd {
    /// The cause to count.
    pub fn cause(&self) -> Cause {
        match self {
            SessionEnd::Closed { .. } => Cause::Closed,
            SessionEnd::PeerClosed { .. } => Cause::PeerClosed,
            SessionEnd::Failed(cause, _) => *cause,
        }
    }
}

impl UpstreamStats {
    fn count_disconnect(&self, cause: Cause) {
        self.disconnects[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Connecting,
            1 => State::Open,
            2 => State::Backoff,
            _ => State::Stopped,
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEnd {
    /// We closed: cancelled (Close with [`Upstream::goodbye`]) or a Close frame from the
    /// send queue (`connect` at stdin EOF). Never followed by a reconnect.
    Closed {
        /// The code we sent.
        code: u16,
        /// The reason we sent.
        reason: String,
    },
    /// The peer sent Close.
    PeerClosed {
        /// Its code (1005 if none).
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// The connection failed: reset, dead, protocol error, oversized message, ….
    Failed(Cause, String),
}

/// Why the task returned.
#[derive(Debug)]
pub enum UpstreamExit {
    /// Cancelled.
    Shutdown,
    /// `max_attempts` failures in a row.
    GaveUp,
    /// [`RunMode::Once`]: the attempt failed.
    ConnectFailed(ConnectError),
    /// [`RunMode::Once`]: the connection ended.
    Ended(SessionEnd),
}

/// Everything one upstream task needs.
pub struct Upstream {
    /// What to connect to and how.
    pub config: Arc<UpstreamConfig>,
    /// Shared counters.
    pub stats: Arc<UpstreamStats>,
    /// Where events go.
    pub outlet: Outlet,
    /// Messages to send (from sink clients or stdin), bounded by `send_queue`.
    pub queue: mpsc::Receiver<Message>,
    /// Cancelled to stop: Close with `goodbye` is sent and the task returns.
    pub shutdown: CancellationToken,
    /// The Close code sent when cancelled: 1001 for the daemon, 1000 for `connect`.
    pub goodbye: CloseCode,
    /// Reconnect forever, or once.
    pub mode: RunMode,
    /// How long to wait for the peer's Close after ours.
    pub close_timeout: Duration,
}

impl Upstream {
    /// Runs until cancelled, given up, or (in [`RunMode::Once`]) the connection ends.
    pub async fn run(mut self) -> UpstreamExit {
        let name: Arc<str> = Arc::from(self.config.name.as_str());
        let url = self.config.display_url();
        let tls = if self.config.url.scheme() == "wss" {
            match tls::client_config(self.config.ca_file.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => return self.fail_setup(&name, e.into()).await,
            }
        } else {
            None
        };
        let mut backoff = Backoff::new(self.config.reconnect.clone());
        loop {
            self.stats.set_state(State::Connecting);
            debug!(%url, "connecting");
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                attempt = connect::open(&self.config, tls.clone()) => attempt,
            };
            let end = match attempt {
                Err(error) => {
                    self.stats.count_disconnect(Cause::ConnectFailed);
                    if self.mode == RunMode::Once {
                        self.stats.set_state(State::Stopped);
                        return UpstreamExit::ConnectFailed(error);
                    }
                    let message = format!("cannot connect to {url}: {error}");
                    match self.schedule_retry(&mut backoff) {
                        Some(delay) => {
                            warn!(retry_in = %humantime::format_duration(delay), "{message}");
                            self.emit_error(&name, message, Some(delay)).await;
                            if !self.sleep(delay).await {
                                break;
                            }
                            continue;
                        }
                        None => return self.give_up(&name, &backoff, message).await,
                    }
                }
                Ok(connected) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_state(State::Open);
                    info!(%url, protocol = connected.protocol.as_deref().unwrap_or(""), "connected");
                    self.outlet
                        .deliver(
                            &name,
                            Event::now(EventKind::Open {
                                url: url.clone(),
                                protocol: connected.protocol,
                            }),
                        )
                        .await;
                    let (end, stable) = self.session(connected.ws, &name).await;
                    self.stats.count_disconnect(end.cause());
                    if stable {
                        backoff.reset();
                    }
                    end
                }
            };
            if let SessionEnd::Closed { code, reason } = &end {
                // A Close we sent, still worth a record so readers see the end.
                let kind = EventKind::Close {
                    code: *code,
                    reason: reason.clone(),
                    retry_in_ms: None,
                };
                self.outlet.deliver(&name, Event::now(kind)).await;
                break;
            }
            if self.mode == RunMode::Once {
                self.emit_end(&name, &end, None).await;
                self.stats.set_state(State::Stopped);
                return UpstreamExit::Ended(end);
            }
            let delay = match self.schedule_retry(&mut backoff) {
                Some(delay) => delay,
                None => {
                    self.emit_end(&name, &end, None).await;
                    return self.give_up(&name, &backoff, describe(&end)).await;
                }
            };
            match &end {
                SessionEnd::PeerClosed { code, reason } => {
                    info!(code, reason = %reason, retry_in = %humantime::format_duration(delay), "peer closed the connection")
                }
                other => {
                    warn!(retry_in = %humantime::format_duration(delay), "connection to {url} lost: {}", describe(other))
                }
            }
            self.emit_end(&name, &end, Some(delay)).await;
            if !self.sleep(delay).await {
                break;
            }
        }
        self.stats.set_state(State::Stopped);
        UpstreamExit::Shutdown
    }

    /// One open connection: `on_connect`, then frames, queued messages and keepalive until it
    /// ends. Returns how it ended and whether it counts as stable for backoff (it delivered
    /// data or stayed open for `reconnect.max`).
    async fn session(&mut self, mut ws: WsStream, name: &Arc<str>) -> (SessionEnd, bool) {
        let opened = Instant::now();
        let stable_after = self.config.reconnect.max;
        for text in &self.config.on_connect {
            if let Err(e) = ws.send(Message::text(text.as_str())).await {
                let reason = format!("sending on_connect message: {e}");
                return (SessionEnd::Failed(Cause::ConnectionLost, reason), false);
            }
            self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut frames = Frames {
            keepalive: Keepalive::new(
                self.config.ping_interval,
                self.config.ping_timeout,
                self.config.receive_timeout,
                opened,
            ),
            peer_close: None,
            got_data: false,
            batch: Vec::new(),
            arena: BytesMut::with_capacity(ARENA_SIZE),
            batch_bytes: 0,
            seq: self.stats.seq.load(Ordering::Relaxed),
            rtt: None,
        };
        let timer = tokio::time::sleep_until(frames.keepalive.deadline());
        tokio::pin!(timer);
        let mut queue_open = true;
        let mut outgoing = Outgoing::default();
        // Made once: a new `cancelled()` future on every turn of a hot loop costs.
        let shutdown = self.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let end = loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    let reason = if self.goodbye == CloseCode::Away { "going away" } else { "" };
                    let frame = CloseFrame { code: self.goodbye, reason: reason.into() };
                    self.close(&mut ws, &mut outgoing, Some(frame), &mut frames, name).await;
                    break SessionEnd::Closed { code: self.goodbye.into(), reason: reason.into() };
                }
                io = poll_fn(|cx| outgoing.poll(&mut ws, cx)) => {
                    let frame = match io {
                        Io::Frame(frame) => frame,
                        Io::Flushed(Ok(())) => continue,
                        Io::Flushed(Err(e)) => break SessionEnd::Failed(Cause::ConnectionLost, format!("sending a message: {e}")),
                    };
                    let now = Instant::now();
                    let ts = crate::record::unix_millis();
                    // A frame that answers our Ping moves the deadline earlier (to the next
                    // interval); a Close starts the wait for the peer to hang up.
                    let answers_ping = frames.keepalive.awaiting_pong();
                    let was_closing = frames.peer_close.is_some();
                    let max = self.config.max_message_size;
                    let mut step = frames.on_frame(frame, now, ts, max);
                    if matches!(step, Step::Continue) {
                        // Take every frame that is already here before handing the batch on.
                        step = poll_fn(|cx| Poll::Ready(frames.take_ready(&mut ws, cx, now, ts, max))).await;
                    }
                    self.deliver(name, &mut frames, ts).await;
                    if frames.peer_close.is_some() && !was_closing {
                        // Nothing more may be sent after the peer's Close.
                        outgoing.drop_held();
                        timer.as_mut().reset(now + self.close_timeout);
                    } else if answers_ping && frames.peer_close.is_none() {
                        timer.as_mut().reset(frames.keepalive.deadline());
                    }
                    match step {
                        Step::Continue => {}
                        Step::End(end) => break end,
                        Step::Refuse { code, cause, reason } => {
                            // Tell the peer why before hanging up, as aiohttp does.
                            let frame = CloseFrame { code, reason: close_reason(code).into() };
                            self.close(&mut ws, &mut outgoing, Some(frame), &mut frames, name).await;
                            break SessionEnd::Failed(cause, reason);
                        }
                    }
                }
                // Only once what was sent before is written: tungstenite's buffer stays bounded.
                message = self.queue.recv(), if queue_open && outgoing.idle() && frames.peer_close.is_none() => match message {
                    Some(message) => {
                        // `connect` at stdin EOF queues a Close behind its last line.
                        let close = match message {
                            Message::Close(frame) => Some(frame),
                            message => self.send_queued(&mut outgoing, message),
                        };
                        if let Some(frame) = close {
                            let (code, reason) = frame.as_ref().map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                            self.close(&mut ws, &mut outgoing, frame, &mut frames, name).await;
                            break SessionEnd::Closed { code, reason };
                        }
                    }
                    None => queue_open = false,
                },
                _ = &mut timer => {
                    if let Some((code, reason)) = frames.peer_close.take() {
                        debug!("the peer did not end the connection after its Close; dropping it");
                        break SessionEnd::PeerClosed { code, reason };
                    }
                    let now = Instant::now();
                    match frames.keepalive.check(now) {
                        Due::Ping => {
                            frames.keepalive.ping_sent(now);
                            outgoing.send(Message::Ping(Default::default()));
                        }
                        Due::Dead(cause, reason) => break SessionEnd::Failed(cause, reason),
                        Due::Wait(_) => {}
                    }
                    timer.as_mut().reset(frames.keepalive.deadline());
                }
            }
        };
        (end, frames.got_data || opened.elapsed() >= stable_after)
    }

    /// Sends a queued message and the data messages queued behind it, while tungstenite takes
    /// them without waiting; they go out in one flush. Returns the Close frame if a Close (from
    /// `connect` at stdin EOF) followed them.
    fn send_queued(
        &mut self,
        outgoing: &mut Outgoing,
        first: Message,
    ) -> Option<Option<CloseFrame>> {
        outgoing.send(first);
        let mut sent = 1u64;
        let mut closing = None;
        while sent < MAX_BATCH as u64 {
            match self.queue.try_recv() {
                Ok(Message::Close(frame)) => {
                    closing = Some(frame);
                    break;
                }
                Ok(message) => {
                    outgoing.send(message);
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        self.stats.messages_sent.fetch_add(sent, Ordering::Relaxed);
        closing
    }

    /// Hands the frames gathered so far to the sinks and publishes the counters.
    async fn deliver(&mut self, name: &Arc<str>, frames: &mut Frames, ts: u64) {
        if let Some(rtt) = frames.rtt.take() {
            self.stats
                .ping_rtt_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
        }
        if frames.batch.is_empty() {
            return;
        }
        let streaming = frames.batch_full();
        // The next batch is likely the size of this one: one allocation, not one per doubling.
        let next = Vec::with_capacity(frames.batch.len());
        let events = std::mem::replace(&mut frames.batch, next);
        let stats = &self.stats;
        stats
            .messages_received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let bytes = std::mem::take(&mut frames.batch_bytes);
        stats
            .bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
        stats.last_message_ms.store(ts, Ordering::Relaxed);
        stats.seq.store(frames.seq, Ordering::Relaxed);
        let cost = bytes + events.len() * std::mem::size_of::<Event>();
        let batch = Batch {
            upstream: name.clone(),
            events,
            streaming,
        };
        self.outlet.deliver_batch(batch, cost).await;
    }

    /// Sends Close (after what is still unwritten) and waits for the peer's, delivering any
    /// data still arriving; all within `close_timeout`.
    async fn close(
        &mut self,
        ws: &mut WsStream,
        outgoing: &mut Outgoing,
        frame: Option<CloseFrame>,
        frames: &mut Frames,
        name: &Arc<str>,
    ) {
        outgoing.send(Message::Close(frame));
        let deadline = Instant::now() + self.close_timeout;
        let max = self.config.max_message_size;
        while let Ok(io) =
            tokio::time::timeout_at(deadline, poll_fn(|cx| outgoing.poll(ws, cx))).await
        {
            let frame = match io {
                Io::Flushed(Ok(())) => continue,
                Io::Flushed(Err(_)) => return,
                Io::Frame(Some(frame)) => frame,
                Io::Frame(None) => return,
            };
            let ts = crate::record::unix_millis();
            let step = frames.on_frame(Some(frame), Instant::now(), ts, max);
            self.deliver(name, frames, ts).await;
            if !matches!(step, Step::Continue) {
                break;
            }
        }
    }

    fn schedule_retry(&self, backoff: &mut Backoff) -> Option<Duration> {
        let delay = backoff.next_delay()?;
        self.stats.set_state(State::Backoff);
        Some(delay)
    }

    async fn emit_error(&mut self, name: &Arc<str>, error: String, retry: Option<Duration>) {
        let retry_in_ms = retry.map(|d| d.as_millis() as u64);
        self.outlet
            .deliver(name, Event::now(EventKind::Error { error, retry_in_ms }))
            .await;
    }

    /// The record for a connection that ended: `close` for a peer Close, else `error`.
    async fn emit_end(&mut self, name: &Arc<str>, end: &SessionEnd, retry: Option<Duration>) {
        let retry_in_ms = retry.map(|d| d.as_millis() as u64);
        let kind = match end {
            SessionEnd::PeerClosed { code, reason } => EventKind::Close {
                code: *code,
                reason: reason.clone(),
                retry_in_ms,
            },
            other => EventKind::Error {
                error: describe(other),
                retry_in_ms,
            },
        };
        self.outlet.deliver(name, Event::now(kind)).await;
    }

    async fn give_up(&mut self, name: &Arc<str>, backoff: &Backoff, last: String) -> UpstreamExit {
        let message = format!(
            "giving up after {} failed attempts in a row (reconnect.max_attempts); last error: {last}; fix the upstream and reload (SIGHUP) to try again",
            backoff.failures()
        );
        tracing::error!("{message}");
        self.emit_error(name, message, None).await;
        self.stats.set_state(State::Stopped);
        UpstreamExit::GaveUp
    }

    async fn fail_setup(&mut self, name: &Arc<str>, error: ConnectError) -> UpstreamExit {
        tracing::error!("{error}");
        self.stats.set_state(State::Stopped);
        if self.mode == RunMode::Once {
            return UpstreamExit::ConnectFailed(error);
        }
        self.emit_error(name, error.to_string(), None).await;
        UpstreamExit::GaveUp
    }

    /// Waits `delay`; false if cancelled meanwhile.
    async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// At most this many messages, or [`MAX_BATCH_BYTES`], are gathered before the batch is
/// handed to the sinks (and at most this many queued messages are sent per flush).
const MAX_BATCH: usize = 1024;
/// See [`MAX_BATCH`].
const MAX_BATCH_BYTES: usize = 256 << 10;
/// Payloads smaller than this are copied out of the read buffer ([`Frames::detach`]).
const DETACH_BELOW: usize = 16 << 10;
/// The allocation size of the buffer small payloads are copied to.
const ARENA_SIZE: usize = 64 << 10;

/// What one frame means for the session.
enum Step {
    /// Keep reading.
    Continue,
    /// The connection ended.
    End(SessionEnd),
    /// The peer broke a rule we can name: close with `code` (1009 too big, 1007 invalid
    /// UTF-8), then end.
    Refuse {
        code: CloseCode,
        cause: Cause,
        reason: String,
    },
}

fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Size => "message too big",
        CloseCode::Invalid => "invalid UTF-8 in a text message",
        _ => "",
    }
}

/// The reading side of one session: keepalive, the peer's Close, the batch being gathered.
struct Frames {
    keepalive: Keepalive,
    peer_close: Option<(u16, String)>,
    got_data: bool,
    batch: Vec<Event>,
    batch_bytes: usize,
    /// Where small payloads are copied to (see [`Frames::detach`]).
    arena: BytesMut,
    /// The last `seq` given out (this task is the only writer while it runs).
    seq: u64,
    /// The round trip of a Pong that answered our Ping, to publish.
    rtt: Option<Duration>,
}

impl Frames {
    fn batch_full(&self) -> bool {
        self.batch.len() >= MAX_BATCH || self.batch_bytes >= MAX_BATCH_BYTES
    }

    /// Copies a small payload out of tungstenite's read buffer into ours. Handed on as it
    /// came, a payload keeps the connection's whole read buffer shared until the sinks are
    /// done with it, and tungstenite then reads into a fresh buffer sized for one frame: one
    /// read(2) per 4 KiB message. Detached, the read buffer is free again at once and each
    /// read takes up to `read_buffer_size`. Our buffer is shared by many payloads: one
    /// allocation per 64 KiB, not one per message.
    fn detach(&mut self, payload: &[u8]) -> Option<Bytes> {
        if payload.len() >= DETACH_BELOW {
            return None; // a large payload fills its read buffer anyway
        }
        self.arena.reserve(payload.len());
        self.arena.extend_from_slice(payload);
        Some(self.arena.split().freeze())
    }

    /// [`Frames::detach`] for text. The copy is checked to be UTF-8 again (it is, being the
    /// same bytes): one pass over bytes just copied, still in cache.
    fn detach_text(&mut self, text: &Utf8Bytes) -> Option<Utf8Bytes> {
        Utf8Bytes::try_from(self.detach(text.as_bytes())?).ok()
    }

    /// Takes the frames that are already here into the batch, until it is full or the
    /// session must act on one (registering `cx` for the next frame when none is left).
    fn take_ready(
        &mut self,
        ws: &mut WsStream,
        cx: &mut Context<'_>,
        now: Instant,
        ts: u64,
        max_message_size: usize,
    ) -> Step {
        while !self.batch_full() {
            let Poll::Ready(frame) = ws.poll_next_unpin(cx) else {
                break;
            };
            let step = self.on_frame(frame, now, ts, max_message_size);
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        Step::Continue
    }

    fn push(&mut self, ts: u64, len: usize, kind: impl FnOnce(u64) -> EventKind) {
        self.got_data = true;
        self.seq += 1;
        self.batch_bytes += len;
        self.batch.push(Event {
            ts,
            kind: kind(self.seq),
        });
    }

    /// Takes one frame (or the end of the stream) into the session state.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, WsError>>,
        now: Instant,
        ts: u64,
        max_message_size: usize,
    ) -> Step {
        match frame {
            Some(Ok(Message::Text(data))) => {
                self.keepalive.data_received(now);
                let data = self.detach_text(&data).unwrap_or(data);
                self.push(ts, data.len(), |seq| EventKind::Text { seq, data });
            }
            Some(Ok(Message::Binary(data))) => {
                self.keepalive.data_received(now);
                let data = self.detach(&data).unwrap_or(data);
                self.push(ts, data.len(), |seq| EventKind::Binary { seq, data });
            }
            // tungstenite queues the Pong itself; it goes out as we keep polling.
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Frame(_))) => {
                self.keepalive.frame_received(now)
            }
            Some(Ok(Message::Pong(_))) => {
                if let Some(rtt) = self.keepalive.pong_received(now) {
                    self.rtt = Some(rtt);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                // tungstenite answers the Close; the server should now end the TCP connection.
                self.keepalive.frame_received(now);
                self.peer_close = Some(frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
            }
            Some(Err(WsError::ConnectionClosed)) | None => {
                return Step::End(match self.peer_close.take() {
                    Some((code, reason)) => SessionEnd::PeerClosed { code, reason },
                    None => SessionEnd::Failed(
                        Cause::ConnectionLost,
                        "the connection ended without a Close frame".into(),
                    ),
                });
            }
            Some(Err(e)) => {
                if let Some((code, reason)) = self.peer_close.take() {
                    return Step::End(SessionEnd::PeerClosed { code, reason });
                }
                let reason = read_error(&e, max_message_size);
                // Errors we can name to the peer get a Close saying so before we hang up.
                let refusal = match e {
                    WsError::Capacity(_) => Some((CloseCode::Size, Cause::MessageTooBig)),
                    WsError::Utf8(_) => Some((CloseCode::Invalid, Cause::ConnectionLost)),
                    _ => None,
                };
                if let Some((code, cause)) = refusal {
                    return Step::Refuse {
                        code,
                        cause,
                        reason,
                    };
                }
                return Step::End(SessionEnd::Failed(Cause::ConnectionLost, reason));
            }
        }
        Step::Continue
    }
}

/// A one-line description of how a connection ended.
pub fn describe(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Closed { code, .. } => format!("closed by us with code {code}"),
        SessionEnd::PeerClosed { code, reason } if reason.is_empty() => {
            format!("peer closed the connection with code {code}")
        }
        SessionEnd::PeerClosed { code, reason } => {
            format!("peer closed the connection with code {code}: {reason}")
        }
        SessionEnd::Failed(_, reason) => reason.clone(),
    }
}

fn read_error(error: &WsError, max_message_size: usize) -> String {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => format!(
            "the peer sent a message of {size} bytes, larger than max_message_size ({max_message_size} bytes); raise max_message_size if such messages are expected"
        ),
        WsError::Io(e) => format!("connection error: {e}"),
        other => format!("WebSocket error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Frames {
        Frames {
            keepalive: Keepalive::new(None, Duration::from_secs(10), None, Instant::now()),
            peer_close: None,
            got_data: false,
            batch: Vec::new(),
            arena: BytesMut::with_capacity(ARENA_SIZE),
            batch_bytes: 0,
            seq: 0,
            rtt: None,
        }
    }

    #[tokio::test]
    async fn payloads_come_through_whole_whether_copied_or_not() {
        let mut frames = frames();
        // Sizes around the copy threshold and enough of them to fill several arenas.
        let sizes = [0, 1, 64, 4096, DETACH_BELOW - 1, DETACH_BELOW, 100_000];
        let mut sent = Vec::new();
        for round in 0..20u8 {
            for (i, &size) in sizes.iter().enumerate() {
                let fill = round.wrapping_mul(31).wrapping_add(i as u8);
                // Multi-byte characters too: a copied text must still be the same string.
                let text = "x".repeat(size) + "é€" + &fill.to_string();
                let binary = Bytes::from(vec![fill; size]);
                let message = if i % 2 == 0 {
                    Message::text(text.clone())
                } else {
                    Message::Binary(binary.clone())
                };
                let original = match &message {
                    Message::Text(t) => t.as_bytes().as_ptr(),
                    Message::Binary(b) => b.as_ptr(),
                    _ => unreachable!(),
                };
                frames.on_frame(Some(Ok(message.clone())), Instant::now(), 0, usize::MAX);
                sent.push((message, original));
            }
        }
        assert_eq!(frames.batch.len(), sent.len());
        for (event, (message, original)) in frames.batch.iter().zip(&sent) {
            let (got, kept) = match (&event.kind, message) {
                (EventKind::Text { data, .. }, Message::Text(t)) => (
                    data.as_str() == t.as_str(),
                    data.as_bytes().as_ptr() == *original,
                ),
                (EventKind::Binary { data, .. }, Message::Binary(b)) => {
                    (data == b, data.as_ptr() == *original)
                }
                other => panic!("kind changed: {other:?}"),
            };
            assert!(got, "payload changed");
            let len = event.payload_len();
            assert_eq!(
                kept,
                len >= DETACH_BELOW,
                "copied or not by size ({len} bytes)"
            );
        }
    }
}
