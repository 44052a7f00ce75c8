//! One open connection: `on_connect`, then one `select!` over shutdown, the next frame (or a
//! finished write), the send queue and the keepalive (and `app_ping`) timer, until the
//! connection ends; and the Close handshake that ends it. Answers made by `reply` go out as
//! soon as the frames that asked for them are taken, ahead of delivering those to the sinks.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use super::app_ping::{AppDue, AppPinger};
use super::checks::FeedChecker;
use super::connect::WsStream;
use super::frames::{close_reason, Frames, Step, MAX_BATCH};
use super::keepalive::{Due, Keepalive};
use super::linger::Linger;
use super::outgoing::{Io, Outgoing};
use super::reply::Replier;
use super::stats::{Cause, SessionEnd};
use super::Upstream;
use crate::hub::Batch;
use crate::record::Event;

/// Room kept for messages taken from the queue between bursts.
const KEEP_QUEUED: usize = 64;

impl Upstream {
    /// One open connection: `on_connect` (this attempt's: `before_connect` may replace it), then frames, queued messages and keepalive until it
    /// ends. Returns how it ended.
    pub(super) async fn session(
        &mut self,
        mut ws: WsStream,
        name: &Arc<str>,
        on_connect: &[String],
    ) -> SessionEnd {
        let opened = Instant::now();
        for text in on_connect {
            if let Err(e) = ws.send(Message::text(text.as_str())).await {
                let reason = format!("sending on_connect message: {e}");
                return SessionEnd::Failed(Cause::ConnectionLost, reason);
            }
            self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        let keepalive = Keepalive::new(
            self.config.ping_interval,
            self.config.ping_timeout,
            self.config.receive_timeout,
            opened,
        );
        let seq = self.stats.seq.load(Ordering::Relaxed);
        let app_ping = self
            .config
            .app_ping
            .clone()
            .map(|p| AppPinger::new(p, opened));
        let reply = self.config.reply.clone().map(Replier::new);
        let mut frames = Frames::new(keepalive, seq, self.max_messages).shaped(
            app_ping,
            self.config.decompress,
            reply,
        );
        frames.checks = FeedChecker::new(&self.config.feed);
        let timer = tokio::time::sleep_until(frames.deadline());
        tokio::pin!(timer);
        let mut queue_open = true;
        // What the queue gave at once (taken together: one release of room for them all).
        let mut queued = Vec::new();
        let mut outgoing = Outgoing::default();
        // The Close that `connect` queued at stdin EOF, held back until the peer is done
        // (see [`Linger`]).
        let mut lingering: Option<Linger> = None;
        let linger = tokio::time::sleep_until(opened);
        tokio::pin!(linger);
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
                        Io::Flushed(Ok(())) => {
                            // Our last messages are out only now: their answers are still to come.
                            if let Some(l) = &mut lingering {
                                l.flushed(Instant::now());
                                linger.as_mut().reset(l.deadline());
                            }
                            continue;
                        }
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
                    let pong = frames.pong.take();
                    if let Some(l) = &mut lingering {
                        if !frames.batch.is_empty() {
                            l.data(now);
                        }
                        if let Some(pong) = pong {
                            l.pong(&pong, now);
                        }
                        linger.as_mut().reset(l.deadline());
                    }
                    // Nothing may be sent after the peer's Close: its pings go unanswered.
                    if let (Some(r), None) = (&mut frames.reply, &frames.peer_close) {
                        r.send_into(&mut outgoing);
                    }
                    self.deliver(name, &mut frames, ts).await;
                    if frames.peer_close.is_some() && !was_closing {
                        // Nothing more may be sent after the peer's Close.
                        outgoing.drop_held();
                        timer.as_mut().reset(now + self.close_timeout);
                    } else if frames.peer_close.is_none()
                        && (answers_ping || frames.deadline() < timer.deadline())
                    {
                        timer.as_mut().reset(frames.deadline());
                    }
                    match step {
                        Step::Continue if frames.limit_reached() => {
                            let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                            self.close(&mut ws, &mut outgoing, Some(frame), &mut frames, name).await;
                            break SessionEnd::Closed { code: CloseCode::Normal.into(), reason: String::new() };
                        }
                        Step::Continue if frames.resubscribe_due() => {
                            // on_gap = "reconnect": the gap and its message are delivered.
                            let reason = frames.checks.as_ref().and_then(|c| c.resubscribe_reason()).unwrap_or_default();
                            let frame = CloseFrame { code: CloseCode::Normal, reason: "sequence gap".into() };
                            self.close(&mut ws, &mut outgoing, Some(frame), &mut frames, name).await;
                            break SessionEnd::Failed(Cause::SequenceGap, reason);
                        }
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
                taken = self.queue.recv_many(&mut queued, MAX_BATCH), if queue_open && lingering.is_none() && outgoing.idle() && frames.peer_close.is_none() => match taken {
                    0 => queue_open = false,
                    _ => {
                        // `connect` at stdin EOF queues a Close behind its last line.
                        match self.send_queued(&mut outgoing, &mut queued) {
                            Some(frame) if self.linger.is_zero() => {
                                let (code, reason) = frame.as_ref().map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                                self.close(&mut ws, &mut outgoing, frame, &mut frames, name).await;
                                break SessionEnd::Closed { code, reason };
                            }
                            Some(frame) => {
                                debug!(linger = %crate::duration::human(self.linger), "end of input; waiting for the peer to be done before closing");
                                // Behind our last message: its answer says the peer read them all.
                                outgoing.send(Message::Ping(Linger::probe()));
                                let l = Linger::new(frame, self.linger, Instant::now());
                                linger.as_mut().reset(l.deadline());
                                lingering = Some(l);
                            }
                            None => {}
                        }
                    }
                },
                _ = &mut linger, if lingering.is_some() => {
                    let frame = lingering.take().and_then(|l| l.frame);
                    let (code, reason) = frame.as_ref().map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    self.close(&mut ws, &mut outgoing, frame, &mut frames, name).await;
                    break SessionEnd::Closed { code, reason };
                }
                _ = &mut timer => {
                    if let Some((code, reason)) = frames.peer_close.take() {
                        debug!("the peer did not end the connection after its Close; dropping it");
                        break SessionEnd::PeerClosed { code, reason };
                    }
                    let now = Instant::now();
                    if let Some(p) = &mut frames.app_ping {
                        match p.check(now) {
                            AppDue::Send => {
                                p.sent(now);
                                outgoing.send(Message::text(p.message()));
                                self.stats.app_pings_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            AppDue::Dead(reason) => break SessionEnd::Failed(Cause::AppPingTimeout, reason),
                            AppDue::Wait => {}
                        }
                    }
                    match frames.keepalive.check(now) {
                        Due::Ping => {
                            frames.keepalive.ping_sent(now);
                            outgoing.send(Message::Ping(Default::default()));
                        }
                        Due::Dead(cause, reason) => break SessionEnd::Failed(cause, reason),
                        Due::Wait(_) => {}
                    }
                    timer.as_mut().reset(frames.deadline());
                }
            }
        };
        self.max_messages = frames.remaining;
        end
    }

    /// Sends the messages taken from the queue (at most [`MAX_BATCH`]): tungstenite takes them
    /// without waiting, and they go out in one flush. Returns the Close frame if a Close (from
    /// `connect` at stdin EOF) came among them.
    fn send_queued(
        &mut self,
        outgoing: &mut Outgoing,
        queued: &mut Vec<Message>,
    ) -> Option<Option<CloseFrame>> {
        let mut sent = 0u64;
        let mut closing = None;
        // Nothing follows our Close: what was queued behind it is not sent.
        for message in queued.drain(..) {
            match message {
                Message::Close(frame) => {
                    closing = Some(frame);
                    break;
                }
                message => {
                    outgoing.send(message);
                    sent += 1;
                }
            }
        }
        // A connection that sent a burst keeps no room for the next one.
        if queued.capacity() > KEEP_QUEUED {
            *queued = Vec::new();
        }
        self.stats.messages_sent.fetch_add(sent, Ordering::Relaxed);
        closing
    }

    /// Hands the frames gathered so far to the sinks and publishes the counters.
    async fn deliver(&mut self, name: &Arc<str>, frames: &mut Frames, ts: u64) {
        let answered = std::mem::take(&mut frames.app_answered);
        if answered > 0 {
            self.stats
                .app_pings_answered
                .fetch_add(answered, Ordering::Relaxed);
        }
        let dropped = std::mem::take(&mut frames.decompress_errors);
        if dropped > 0 {
            self.stats
                .decompress_errors
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if let Some(r) = &mut frames.reply {
            let (sent, errors) = (std::mem::take(&mut r.sent), std::mem::take(&mut r.errors));
            if sent > 0 {
                self.stats.replies_sent.fetch_add(sent, Ordering::Relaxed);
            }
            if errors > 0 {
                self.stats.reply_errors.fetch_add(errors, Ordering::Relaxed);
            }
        }
        if let Some(c) = &mut frames.checks {
            c.publish(&self.stats);
        }
        if let Some(rtt) = frames.rtt.take() {
            self.stats
                .ping_rtt_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
        }
        if frames.batch.is_empty() {
            return;
        }
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
        let batch = Batch::new(name.clone(), events);
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
}
