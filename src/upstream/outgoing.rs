//! The writing side of one session: frames on their way out, and the session's single wait
//! for "a frame arrived or a write finished".
//!
//! A session must keep reading while its writes wait. The usual echo server answers each
//! message before it reads the next, so it stops reading while its answers back up; a client
//! that stopped reading until its own writes went out would then wait for a server that waits
//! for it, for good. So nothing here waits for the socket: frames are held, and
//! [`Outgoing::poll`] hands them to tungstenite and finishes the flush while it reads, all with
//! the task's own [`Context`], so a socket that becomes writable wakes the session.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connect::WsStream;

/// What the connection had for the session.
pub(super) enum Io {
    /// A frame, an error, or the end of the stream.
    Frame(Option<Result<Message, WsError>>),
    /// Everything held has been handed to tungstenite and written (or writing failed).
    Flushed(Result<(), WsError>),
}

/// Frames on their way out.
#[derive(Default)]
pub(super) struct Outgoing {
    /// tungstenite holds frames that are not written yet.
    flushing: bool,
    /// Frames not handed to tungstenite yet, in order. At most one flush's worth of queued
    /// messages (the session takes more only when [`Outgoing::idle`]), a Ping and a Close.
    held: VecDeque<Message>,
}

impl Outgoing {
    /// Nothing is waiting to be written: the session may take more from its send queue.
    pub(super) fn idle(&self) -> bool {
        !self.flushing && self.held.is_empty()
    }

    /// Frames not handed to tungstenite yet.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Puts `message` on its way; the next [`Outgoing::poll`] hands it to tungstenite. An
    /// error writing it comes back from there as [`Io::Flushed`].
    pub(super) fn send(&mut self, message: Message) {
        self.flushing = true;
        self.held.push_back(message);
    }

    /// Waits for the next frame, handing over held frames and finishing a flush meanwhile. A
    /// finished flush is reported even though nothing arrived, so the caller sees
    /// [`Outgoing::idle`] change.
    pub(super) fn poll(&mut self, ws: &mut WsStream, cx: &mut Context<'_>) -> Poll<Io> {
        while self.flushing {
            if let Err(e) = self.hand_over(ws, cx) {
                return Poll::Ready(Io::Flushed(Err(e)));
            }
            match ws.poll_flush_unpin(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Io::Flushed(Err(e))),
                // Written; tungstenite takes frames again, so hand over the rest.
                Poll::Ready(Ok(())) if !self.held.is_empty() => continue,
                Poll::Ready(Ok(())) => {
                    self.flushing = false;
                    return Poll::Ready(Io::Flushed(Ok(())));
                }
                Poll::Pending => break,
            }
        }
        ws.poll_next_unpin(cx).map(Io::Frame)
    }

    /// Forgets the frames still held (the peer closed: nothing more may be sent).
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
    }

    /// Hands held frames to tungstenite while it takes them (it does until its write buffer
    /// is full; then it waits for the socket, registered with `cx`).
    fn hand_over(&mut self, ws: &mut WsStream, cx: &mut Context<'_>) -> Result<(), WsError> {
        while !self.held.is_empty() {
            match ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(message) = self.held.pop_front() {
                        ws.start_send_unpin(message)?;
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }
}
