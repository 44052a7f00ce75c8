//! One client of a unix or tcp sink: a task owning its socket, writing what its queue holds
//! ([`SocketWriter`], several runs per `writev`, no copy into a buffer of ours) and reading
//! its inbound lines.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::inbound::{Inbound, Router};
use super::writer::{pump, SinkWriter};
use super::{Encoded, QueueReader};

/// Runs per `writev`, at most.
const MAX_IOVECS: usize = 64;

/// A connected client stream of either kind.
pub enum Stream {
    /// A unix socket client.
    Unix(tokio::net::UnixStream),
    /// A TCP client.
    Tcp(tokio::net::TcpStream),
}

/// One client's task.
pub struct Client {
    /// Its id within the sink, for logs.
    pub id: u64,
    /// Who it is, for logs.
    pub peer: String,
    /// The sink's name, for logs.
    pub sink: String,
    /// Where its lines go.
    pub router: Router,
}

impl Client {
    /// Serves the client until it leaves, a write fails, or the sink closes its queue.
    pub async fn run(self, stream: Stream, queue: QueueReader) {
        let result = match stream {
            Stream::Unix(s) => self.serve(s, queue).await,
            Stream::Tcp(s) => self.serve(s, queue).await,
        };
        match result {
            Ok(()) => debug!(sink = %self.sink, id = self.id, peer = %self.peer, "client left"),
            Err(e) => {
                debug!(sink = %self.sink, id = self.id, peer = %self.peer, error = %e, "client connection ended")
            }
        }
    }

    async fn serve<S>(&self, stream: S, queue: QueueReader) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let inbound = Inbound::new(reader, self.router.clone());
        pump(queue, SocketWriter::new(writer), Some(inbound)).await
    }
}

/// Writes rounds to a socket; shuts its sending side down at the end.
pub struct SocketWriter<W> {
    out: W,
    pending: Vec<Bytes>,
}

impl<W> SocketWriter<W> {
    /// A writer on `out`.
    pub fn new(out: W) -> Self {
        SocketWriter {
            out,
            pending: Vec::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> SinkWriter for SocketWriter<W> {
    async fn write(&mut self, round: &[Encoded]) -> io::Result<()> {
        self.pending
            .extend(round.iter().map(|run| run.bytes().clone()));
        write_chunks(&mut self.out, &mut self.pending).await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.out.shutdown().await
    }
}

/// Writes every chunk, several per `writev`, and empties `chunks`.
async fn write_chunks<W: AsyncWrite + Unpin>(
    out: &mut W,
    chunks: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_IOVECS)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = out.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Skip what went out; a chunk cut in the middle goes on from there.
        while written > 0 {
            let chunk = &mut chunks[first];
            if written >= chunk.len() {
                written -= chunk.len();
                first += 1;
            } else {
                chunk.advance(written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// Takes at most 7 bytes per write, as a congested socket may.
    #[derive(Default)]
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn chunks_are_written_whole_and_in_order_through_partial_writes() {
        let pieces: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; usize::from(i % 13)]).collect();
        let mut chunks: Vec<Bytes> = pieces.iter().cloned().map(Bytes::from).collect();
        let mut out = Trickle::default();
        write_chunks(&mut out, &mut chunks).await.unwrap();
        assert!(chunks.is_empty());
        assert_eq!(out.0, pieces.concat());
    }
}
