//! The stream under tungstenite: reads that adapt to the traffic.
//!
//! tungstenite reads into a buffer of `read_buffer_size` that it allocates up front, fills
//! with zeros on its first read and keeps for the life of the connection: a size that keeps
//! 10,000 idle upstreams small means many small reads for a busy one, and one that reads like
//! the bare client costs every idle connection that much memory. So tungstenite is given a
//! small buffer ([`TUNGSTENITE_READ`]), and [`ReadAhead`] sits between it and the socket:
//!
//! - Idle or trickling, reads go straight into tungstenite's buffer: no copy, nothing held.
//! - When direct reads bring [`STREAM_FROM`] bytes or more without finding the socket empty,
//!   messages are streaming: the next reads take up to [`READ_AHEAD`] at once into a buffer
//!   of ours, and tungstenite's reads are served from it (one copy, in exchange for many
//!   fewer system calls). Bytes, not the size of one read: tungstenite asks for whatever is
//!   left of its block, which can be a few hundred bytes while a stream is pouring in.
//! - When the socket is found empty again, that buffer is given back: an idle connection
//!   holds only tungstenite's small one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// tungstenite's own read buffer (`read_buffer_size`): what an idle connection keeps.
pub const TUNGSTENITE_READ: usize = 16 * 1024;
/// The most one read takes while messages stream: what a client tuned for throughput gives
/// tungstenite (twice its default), so a stream takes as few reads as it would.
pub const READ_AHEAD: usize = 256 * 1024;
/// Direct reads that bring this much before the socket is found empty start reading ahead:
/// more than a trickle of small messages brings per wake-up.
const STREAM_FROM: usize = 4 * 1024;

/// A stream whose reads grow while data streams and shrink back when it stops.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet taken by tungstenite. Unallocated unless streaming.
    ahead: BytesMut,
    /// Reading ahead, until the socket is found empty.
    streaming: bool,
    /// Bytes of direct reads since the socket was last found empty.
    direct: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`; reads start direct.
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            ahead: BytesMut::new(),
            streaming: false,
            direct: 0,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The memory held for reading ahead.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.ahead.capacity()
    }

    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.ahead.len());
        out.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if !this.streaming {
            let before = out.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, out) {
                Poll::Pending => {
                    this.direct = 0;
                    return Poll::Pending;
                }
                Poll::Ready(result) => result?,
            }
            this.direct += out.filled().len() - before;
            this.streaming = this.direct >= STREAM_FROM;
            return Poll::Ready(Ok(()));
        }
        // Empty, so this reserve moves nothing: it only allocates when the buffer was given
        // back, or rewinds it to its start.
        this.ahead.reserve(READ_AHEAD);
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.ahead) {
            Poll::Pending => {
                // Caught up: idle again until a direct read fills up.
                this.streaming = false;
                this.direct = 0;
                this.ahead = BytesMut::new();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // The end of the stream: tungstenite sees an empty read.
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(_)) => {
                this.serve(out);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
