//! One session's WebSocket: tungstenite's protocol over the connection's stream, polled by
//! the one task that owns the connection.
//!
//! tokio-tungstenite lets the read and the write half of a connection live in different
//! tasks, so every poll registers the polling task's waker in two `AtomicWaker`s: four
//! compare-and-swaps for every message read, a large part of a small message's cost. A
//! session is one task (one task per connection), so here the stream keeps the
//! waker it was last polled with and replaces it only when another one polls: a comparison,
//! no atomic. What tungstenite reads or writes goes through [`Io`], which turns the async
//! stream's `Pending` into the `WouldBlock` tungstenite expects, exactly as tokio-tungstenite
//! does; the handshake is tungstenite's own, resumed on each wake-up.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::handshake::{HandshakeError, MidHandshake};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::ClientHandshake;
use tokio_tungstenite::tungstenite::{self, Error as WsError, Message};

/// The async stream as the blocking `Read + Write` tungstenite drives, with the waker of the
/// task polling it.
#[derive(Debug)]
pub struct Io<S> {
    inner: S,
    waker: Waker,
}

impl<S> Io<S> {
    /// Remembers the waker of `cx`; a clone only when it is another task's.
    fn set_waker(&mut self, cx: &Context<'_>) {
        if !self.waker.will_wake(cx.waker()) {
            self.waker = cx.waker().clone();
        }
    }

    /// Runs one poll of the stream with the remembered waker, `Pending` as `WouldBlock`.
    fn poll<T>(
        &mut self,
        f: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T>
    where
        S: Unpin,
    {
        let mut cx = Context::from_waker(&self.waker);
        match f(Pin::new(&mut self.inner), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> Read for Io<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        self.poll(|s, cx| s.poll_read(cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

impl<S: AsyncWrite + Unpin> Write for Io<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|s, cx| s.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|s, cx| s.poll_flush(cx))
    }
}

/// A client WebSocket over `S`: a [`Stream`] of messages and a [`Sink`] for them.
#[derive(Debug)]
pub struct Socket<S> {
    ws: tungstenite::WebSocket<Io<S>>,
    /// A message tungstenite queued while its write buffer was full: flush before the next.
    blocked: bool,
    /// The stream ended (or failed); it yields nothing more.
    ended: bool,
}

/// `Pending` for tungstenite's `WouldBlock`.
fn pending_on_block<T>(result: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match result {
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// The client handshake of `request` over `stream`, as tungstenite does it, resumed whenever
/// the stream is ready again.
pub async fn client<S, R>(
    request: R,
    stream: S,
    config: Option<WebSocketConfig>,
) -> Result<(Socket<S>, Response), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: IntoClientRequest,
{
    let mut start = Some((request, stream));
    let mut mid: Option<MidHandshake<ClientHandshake<Io<S>>>> = None;
    let (ws, response) = poll_fn(|cx| {
        let attempt = match (start.take(), mid.take()) {
            (Some((request, inner)), _) => {
                let io = Io {
                    inner,
                    waker: cx.waker().clone(),
                };
                tungstenite::client::client_with_config(request, io, config)
            }
            (None, Some(mut handshake)) => {
                handshake.get_mut().get_mut().set_waker(cx);
                handshake.handshake()
            }
            (None, None) => return Poll::Ready(Err(WsError::AlreadyClosed)),
        };
        match attempt {
            Ok(done) => Poll::Ready(Ok(done)),
            Err(HandshakeError::Interrupted(waiting)) => {
                mid = Some(waiting);
                Poll::Pending
            }
            Err(HandshakeError::Failure(e)) => Poll::Ready(Err(e)),
        }
    })
    .await?;
    let socket = Socket {
        ws,
        blocked: false,
        ended: false,
    };
    Ok((socket, response))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Socket<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        self.ws.get_mut().set_waker(cx);
        match std::task::ready!(pending_on_block(self.ws.read())) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(e) => {
                self.ended = true;
                match e {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Socket<S> {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if !self.blocked {
            return Poll::Ready(Ok(()));
        }
        self.ws.get_mut().set_waker(cx);
        let flushed = std::task::ready!(pending_on_block(self.ws.flush()));
        self.blocked = false;
        Poll::Ready(flushed)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        match self.ws.write(message) {
            Ok(()) => Ok(()),
            // Queued, the buffer full: `poll_ready` flushes before the next one.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.ws.get_mut().set_waker(cx);
        let flushed = std::task::ready!(pending_on_block(self.ws.flush()));
        self.blocked = false;
        match flushed {
            // Our Close went out after the peer's: nothing is left to write.
            Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.ws.get_mut().set_waker(cx);
        self.blocked = false;
        match pending_on_block(self.ws.close(None)) {
            Poll::Ready(Ok(())) | Poll::Ready(Err(WsError::ConnectionClosed)) => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
