//! The reading side of one session: each frame (or the end of the stream) taken into the
//! batch of events being gathered (binary ones inflated by `decompress`), the keepalive,
//! `app_ping` and `reply` state, the feed checks (`sequence`, `event_time`) and the peer's
//! Close.
//!
//! Small payloads are copied out of tungstenite's read buffer as they are taken, large ones
//! kept as tungstenite hands them out (see [`Arena`]); the batch goes to the sinks when it is
//! full or nothing more is here.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::app_ping::AppPinger;
use super::arena::Arena;
use super::checks::FeedChecker;
use super::connect::WsStream;
use super::inflate;
use super::keepalive::Keepalive;
use super::read_ahead::TUNGSTENITE_READ;
use super::reply::Replier;
use super::stats::{Cause, SessionEnd};
use crate::config::Decompress;
use crate::record::{Event, EventKind, Text};

/// At most this many messages, or [`MAX_BATCH_BYTES`], are gathered before the batch is
/// handed to the sinks (and at most this many queued messages are sent per flush).
pub(super) const MAX_BATCH: usize = 1024;
/// See [`MAX_BATCH`].
const MAX_BATCH_BYTES: usize = 256 << 10;
/// A batch of this many payload bytes or more, taken at once: messages are streaming.
const STREAMING: usize = 2 * TUNGSTENITE_READ;

/// What one frame means for the session.
pub(super) enum Step {
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

pub(super) fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Size => "message too big",
        CloseCode::Invalid => "invalid UTF-8 in a text message",
        _ => "",
    }
}

/// The reading side of one session: keepalive, the peer's Close, the batch being gathered.
pub(super) struct Frames {
    pub(super) keepalive: Keepalive,
    /// The peer's Close (code, reason), once it came.
    pub(super) peer_close: Option<(u16, String)>,
    pub(super) batch: Vec<Event>,
    pub(super) batch_bytes: usize,
    /// Where small payloads are copied to as they are taken.
    arena: Arena,
    /// The last `seq` given out (this task is the only writer while it runs).
    pub(super) seq: u64,
    /// The round trip of a Pong that answered our Ping, to publish.
    pub(super) rtt: Option<Duration>,
    /// The payload of the last Pong taken (the session's end-of-input probe looks for its own).
    pub(super) pong: Option<Bytes>,
    /// Data messages still to take before the session must close (`connect --max-messages`);
    /// later ones are dropped.
    pub(super) remaining: Option<u64>,
    /// `app_ping`, when configured.
    pub(super) app_ping: Option<AppPinger>,
    /// Answers to `app_ping` taken since the last publish.
    pub(super) app_answered: u64,
    /// How binary messages are inflated.
    decompress: Decompress,
    /// Binary messages dropped since the last publish because they could not be inflated.
    pub(super) decompress_errors: u64,
    /// `reply`, when configured; the session sends what it made.
    pub(super) reply: Option<Replier>,
    /// `sequence` and `event_time`, when configured (see [`Frames::push_text`]).
    pub(super) checks: Option<FeedChecker>,
}

impl Frames {
    /// The state of a session opened with this keepalive, its first `seq` the one after `seq`.
    /// `remaining` is the message limit left, if any.
    pub(super) fn new(keepalive: Keepalive, seq: u64, remaining: Option<u64>) -> Frames {
        Frames {
            keepalive,
            peer_close: None,
            batch: Vec::new(),
            batch_bytes: 0,
            arena: Arena::default(),
            seq,
            rtt: None,
            pong: None,
            remaining,
            app_ping: None,
            app_answered: 0,
            decompress: Decompress::None,
            decompress_errors: 0,
            reply: None,
            checks: None,
        }
    }

    /// Adds `app_ping`, `decompress` and `reply` to a session's reading side.
    pub(super) fn shaped(
        mut self,
        app_ping: Option<AppPinger>,
        decompress: Decompress,
        reply: Option<Replier>,
    ) -> Frames {
        self.app_ping = app_ping;
        self.decompress = decompress;
        self.reply = reply;
        self
    }

    /// The next instant at which keepalive or `app_ping` may have something to do.
    pub(super) fn deadline(&self) -> Instant {
        let keepalive = self.keepalive.deadline();
        self.app_ping
            .as_ref()
            .map_or(keepalive, |p| keepalive.min(p.deadline()))
    }

    /// A compressed binary message: inflated into a text (when UTF-8) or binary event, or
    /// an error event in its place (too big inflated, corrupt), which drops it.
    fn push_inflated(&mut self, data: &[u8], ts: u64, max_message_size: usize) {
        match inflate::inflate(self.decompress, data, max_message_size) {
            Ok(inflated) => {
                if !self.take_one() {
                    return;
                }
                match String::from_utf8(inflated) {
                    Ok(text) => {
                        self.push_text(ts, Text::from(text));
                    }
                    Err(binary) => {
                        let data = Bytes::from(binary.into_bytes());
                        self.push(ts, data.len(), None, |seq| EventKind::Binary { seq, data });
                    }
                }
            }
            Err(e) => {
                tracing::debug!("{e}");
                self.decompress_errors += 1;
                let kind = EventKind::Error {
                    error: e.to_string(),
                    status: None,
                    retry_in_ms: None,
                };
                self.batch.push(Event {
                    ts,
                    kind,
                    lag_ms: None,
                });
            }
        }
    }

    pub(super) fn batch_full(&self) -> bool {
        self.batch.len() >= MAX_BATCH
            || self.batch_bytes >= MAX_BATCH_BYTES
            || self.limit_reached()
            || self.resubscribe_due()
    }

    /// A gap with `on_gap = "reconnect"` was taken: the session delivers, then reconnects.
    pub(super) fn resubscribe_due(&self) -> bool {
        self.checks.as_ref().is_some_and(|c| c.reconnect.is_some())
    }

    /// The message limit is reached: the session closes.
    pub(super) fn limit_reached(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Counts a data message against the limit; false if it is beyond it (dropped).
    fn take_one(&mut self) -> bool {
        match &mut self.remaining {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }

    /// Takes the frames that are already here into the batch, until it is full or the
    /// session must act on one (registering `cx` for the next frame when none is left).
    pub(super) fn take_ready(
        &mut self,
        ws: &mut WsStream,
        cx: &mut Context<'_>,
        now: Instant,
        ts: u64,
        max_message_size: usize,
    ) -> Step {
        let step = loop {
            if self.batch_full() {
                break Step::Continue;
            }
            let Poll::Ready(frame) = ws.poll_next_unpin(cx) else {
                break Step::Continue;
            };
            let step = self.on_frame(frame, now, ts, max_message_size);
            if !matches!(step, Step::Continue) {
                break step;
            }
        };
        if self.batch_bytes >= STREAMING {
            self.arena.streaming();
        } else {
            self.arena.idle();
        }
        step
    }

    fn push(
        &mut self,
        ts: u64,
        len: usize,
        lag_ms: Option<i64>,
        kind: impl FnOnce(u64) -> EventKind,
    ) {
        self.seq += 1;
        self.batch_bytes += len;
        self.batch.push(Event {
            ts,
            kind: kind(self.seq),
            lag_ms,
        });
    }

    /// A small text out of tungstenite's read buffer: inside the event when it fits, else
    /// in the [`Arena`].
    fn detach_text(&mut self, data: Utf8Bytes) -> Text {
        if let Some(inline) = Text::inline(&data) {
            return inline;
        }
        match self.arena.copy(data.as_bytes()) {
            Some(copy) => Text::copy_of(&data, copy),
            None => Text::from(data),
        }
    }

    /// Takes a text message, after the feed checks: a `gap` record goes ahead of it, and it
    /// carries its `lag_ms`.
    fn push_text(&mut self, ts: u64, data: Text) {
        let mut lag_ms = None;
        if let Some(checks) = &mut self.checks {
            let seen = checks.see(data.as_bytes(), ts);
            if let Some(gap) = seen.gap {
                let (expected, got) = (gap.expected, gap.got);
                self.batch.push(Event {
                    ts,
                    kind: EventKind::Gap { expected, got },
                    lag_ms: None,
                });
            }
            lag_ms = seen.lag_ms;
        }
        self.push(ts, data.len(), lag_ms, |seq| EventKind::Text { seq, data });
    }

    /// Takes one frame (or the end of the stream) into the session state.
    pub(super) fn on_frame(
        &mut self,
        frame: Option<Result<Message, WsError>>,
        now: Instant,
        ts: u64,
        max_message_size: usize,
    ) -> Step {
        match frame {
            Some(Ok(Message::Text(data))) => {
                if let Some(p) = &mut self.app_ping {
                    if p.text_received(&data, now) {
                        // The answer to our app_ping: proof of life, neither data nor forwarded.
                        self.keepalive.frame_received(now);
                        self.app_answered += 1;
                        return Step::Continue;
                    }
                }
                if let Some(r) = &mut self.reply {
                    if r.answer(&data) {
                        // The server's own ping, answered: proof of life, not data.
                        self.keepalive.frame_received(now);
                        return Step::Continue;
                    }
                }
                self.keepalive.data_received(now);
                if self.take_one() {
                    let data = self.detach_text(data);
                    self.push_text(ts, data);
                }
            }
            Some(Ok(Message::Binary(data))) => {
                self.keepalive.data_received(now);
                if let Some(p) = &mut self.app_ping {
                    p.binary_received(now);
                }
                if self.decompress != Decompress::None {
                    self.push_inflated(&data, ts, max_message_size);
                } else if self.take_one() {
                    let data = self.arena.copy(&data).unwrap_or(data);
                    self.push(ts, data.len(), None, |seq| EventKind::Binary { seq, data });
                }
            }
            // tungstenite queues the Pong itself; it goes out as we keep polling.
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Frame(_))) => {
                self.keepalive.frame_received(now)
            }
            Some(Ok(Message::Pong(payload))) => {
                if let Some(rtt) = self.keepalive.pong_received(now) {
                    self.rtt = Some(rtt);
                }
                self.pong = Some(payload);
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
mod tests;
