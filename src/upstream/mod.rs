//! One task per upstream endpoint: connect, send `on_connect` and queued messages, read
//! frames into events, keep the connection alive, and reconnect with backoff.
//!
//! The task owns its socket and its send queue; the supervisor only starts it, cancels it
//! and reads its [`UpstreamStats`]. `connect` runs the same task in [`RunMode::Once`].

pub mod backoff;
pub mod connect;
pub mod keepalive;
pub mod tls;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UpstreamConfig;
use crate::hub::Outlet;
use crate::record::{Event, EventKind};
use backoff::Backoff;
use connect::{ConnectError, WsStream};
use keepalive::{Due, Keepalive};

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
                        .deliver(Event::now(
                            name.clone(),
                            EventKind::Open {
                                url: url.clone(),
                                protocol: connected.protocol,
                            },
                        ))
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
                self.outlet.deliver(Event::now(name.clone(), kind)).await;
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
        let mut got_data = false;
        let stable_after = self.config.reconnect.max;
        for text in &self.config.on_connect {
            if let Err(e) = ws.send(Message::text(text.as_str())).await {
                return (
                    SessionEnd::Failed(
                        Cause::ConnectionLost,
                        format!("sending on_connect message: {e}"),
                    ),
                    false,
                );
            }
            self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut keepalive = Keepalive::new(
            self.config.ping_interval,
            self.config.ping_timeout,
            self.config.receive_timeout,
            opened,
        );
        let timer = tokio::time::sleep_until(keepalive.deadline());
        tokio::pin!(timer);
        let mut peer_close: Option<(u16, String)> = None;
        let mut queue_open = true;
        let end = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    let reason = if self.goodbye == CloseCode::Away { "going away" } else { "" };
                    self.close(&mut ws, Some(CloseFrame { code: self.goodbye, reason: reason.into() }), name).await;
                    break SessionEnd::Closed { code: self.goodbye.into(), reason: reason.into() };
                }
                frame = ws.next() => {
                    let now = Instant::now();
                    if keepalive.awaiting_pong() {
                        // Whatever this frame is, it answers for the peer: the next Ping is
                        // due an interval from now, which may be before the Ping's timeout.
                        keepalive.frame_received(now);
                        timer.as_mut().reset(keepalive.deadline());
                    }
                    match frame {
                        Some(Ok(Message::Text(data))) => {
                            keepalive.data_received(now);
                            got_data = true;
                            let seq = self.count_received(data.len());
                            self.outlet.deliver(Event::now(name.clone(), EventKind::Text { seq, data })).await;
                        }
                        Some(Ok(Message::Binary(data))) => {
                            keepalive.data_received(now);
                            got_data = true;
                            let seq = self.count_received(data.len());
                            self.outlet.deliver(Event::now(name.clone(), EventKind::Binary { seq, data })).await;
                        }
                        // tungstenite queues the Pong itself; it goes out as we keep polling.
                        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Frame(_))) => keepalive.frame_received(now),
                        Some(Ok(Message::Pong(_))) => {
                            if let Some(rtt) = keepalive.pong_received(now) {
                                self.stats.ping_rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite answers the Close; the server should now end the TCP
                            // connection. Wait for that, but not past close_timeout.
                            peer_close = Some(frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string())));
                            timer.as_mut().reset(now + self.close_timeout);
                        }
                        Some(Err(WsError::ConnectionClosed)) | None => {
                            break match peer_close.take() {
                                Some((code, reason)) => SessionEnd::PeerClosed { code, reason },
                                None => SessionEnd::Failed(Cause::ConnectionLost, "the connection ended without a Close frame".into()),
                            };
                        }
                        Some(Err(e)) => {
                            if let Some((code, reason)) = peer_close.take() {
                                break SessionEnd::PeerClosed { code, reason };
                            }
                            let reason = read_error(&e, self.config.max_message_size);
                            if matches!(e, WsError::Capacity(_)) {
                                // Tell the peer why, as aiohttp does: 1009 Message Too Big.
                                let frame = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
                                self.close(&mut ws, Some(frame), name).await;
                                break SessionEnd::Failed(Cause::MessageTooBig, reason);
                            }
                            break SessionEnd::Failed(Cause::ConnectionLost, reason);
                        }
                    }
                }
                message = self.queue.recv(), if queue_open && peer_close.is_none() => match message {
                    Some(Message::Close(frame)) => {
                        // `connect` at stdin EOF: everything queued before it has been sent.
                        let (code, reason) = frame.as_ref().map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                        self.close(&mut ws, frame, name).await;
                        break SessionEnd::Closed { code, reason };
                    }
                    Some(message) => {
                        if let Err(e) = ws.send(message).await {
                            break SessionEnd::Failed(Cause::ConnectionLost, format!("sending a message: {e}"));
                        }
                        self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    None => queue_open = false,
                },
                _ = &mut timer => {
                    if let Some((code, reason)) = peer_close.take() {
                        debug!("the peer did not end the connection after its Close; dropping it");
                        break SessionEnd::PeerClosed { code, reason };
                    }
                    let now = Instant::now();
                    match keepalive.check(now) {
                        Due::Ping => {
                            keepalive.ping_sent(now);
                            if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                                break SessionEnd::Failed(Cause::ConnectionLost, format!("sending a Ping: {e}"));
                            }
                        }
                        Due::Dead(cause, reason) => break SessionEnd::Failed(cause, reason),
                        Due::Wait(_) => {}
                    }
                    timer.as_mut().reset(keepalive.deadline());
                }
            }
        };
        (end, got_data || opened.elapsed() >= stable_after)
    }

    fn count_received(&self, len: usize) -> u64 {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_received
            .fetch_add(len as u64, Ordering::Relaxed);
        self.stats
            .last_message_ms
            .store(crate::record::unix_millis(), Ordering::Relaxed);
        self.stats.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends Close and waits (bounded) for the peer's, delivering any data still arriving.
    async fn close(&mut self, ws: &mut WsStream, frame: Option<CloseFrame>, name: &Arc<str>) {
        if ws.send(Message::Close(frame)).await.is_err() {
            return;
        }
        let deadline = Instant::now() + self.close_timeout;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(data)))) => {
                    let seq = self.count_received(data.len());
                    self.outlet
                        .deliver(Event::now(name.clone(), EventKind::Text { seq, data }))
                        .await;
                }
                Ok(Some(Ok(Message::Binary(data)))) => {
                    let seq = self.count_received(data.len());
                    self.outlet
                        .deliver(Event::now(name.clone(), EventKind::Binary { seq, data }))
                        .await;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return,
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
            .deliver(Event::now(
                name.clone(),
                EventKind::Error { error, retry_in_ms },
            ))
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
        self.outlet.deliver(Event::now(name.clone(), kind)).await;
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
