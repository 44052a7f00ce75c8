//! The writing side of one session: frames handed to tungstenite without waiting for the
//! socket, and the session's single wait for "a frame arrived or a write finished".
//!
//! A session must keep reading while its writes wait. The usual echo server answers each
//! message before it reads the next, so it stops reading while its answers back up; a client
//! that stopped reading until its own writes went out would then wait for a server that waits
//! for it, for good. So nothing here waits for the socket: a frame tungstenite cannot take yet
//! is held, and [`Outgoing::poll`] finishes the flush while it reads.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connect::WsStream;

/// What the connection had for the session.
pub(super) enum Io {
    /// A frame, an error, or the end of the stream.
    Frame(Option<Result<Message, WsError>>),
    /// Everything handed to tungstenite has been written and the held frames handed over
    /// (or writing failed).
    Flushed(Result<(), WsError>),
}

/// Frames on their way out.
#[derive(Default)]
pub(super) struct Outgoing {
    /// tungstenite holds frames that are not written yet.
    flushing: bool,
    /// Frames tungstenite could not take yet, in order; they go before anything sent later.
    /// At most a queued message, a Ping and a Close wait here.
    held: VecDeque<Message>,
}

impl Outgoing {
    /// Nothing is waiting to be written: the session may take more from its send queue.
    pub(super) fn idle(&self) -> bool {
        !self.flushing && self.held.is_empty()
    }

    /// tungstenite took everything so far (more may follow in the same flush).
    pub(super) fn accepting(&self) -> bool {
        self.held.is_empty()
    }

    /// Hands `message` to tungstenite if it takes it now; else holds it until what tungstenite
    /// has is written. Either way the message is on its way; an error means the connection
    /// failed.
    pub(super) fn send(&mut self, ws: &mut WsStream, message: Message) -> Result<(), WsError> {
        self.flushing = true;
        if self.held.is_empty() && try_ready(ws)? {
            return ws.start_send_unpin(message);
        }
        self.held.push_back(message);
        Ok(())
    }

    /// Waits for the next frame, finishing a flush meanwhile. A finished flush is reported
    /// even though nothing arrived, so the caller sees [`Outgoing::idle`] change.
    pub(super) fn poll(&mut self, ws: &mut WsStream, cx: &mut Context<'_>) -> Poll<Io> {
        if self.flushing {
            if let Poll::Ready(result) = ws.poll_flush_unpin(cx) {
                return Poll::Ready(Io::Flushed(result.and_then(|()| self.flushed(ws))));
            }
        }
        ws.poll_next_unpin(cx).map(Io::Frame)
    }

    /// Forgets the frames still held (the peer closed: nothing more may be sent).
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
    }

    /// A flush finished: hands over the frames that were held.
    fn flushed(&mut self, ws: &mut WsStream) -> Result<(), WsError> {
        self.flushing = false;
        while let Some(message) = self.held.pop_front() {
            self.flushing = true;
            if !try_ready(ws)? {
                self.held.push_front(message);
                break;
            }
            ws.start_send_unpin(message)?;
        }
        Ok(())
    }
}

/// Whether tungstenite takes a frame now (it does once what it holds is written).
fn try_ready(ws: &mut WsStream) -> Result<bool, WsError> {
    match poll_fn(|cx| ws.poll_ready_unpin(cx)).now_or_never() {
        Some(Ok(())) => Ok(true),
        Some(Err(e)) => Err(e),
        None => Ok(false),
    }
}
