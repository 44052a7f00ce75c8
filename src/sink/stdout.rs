//! The stdout sink: every record, in order, through one buffered writer that is flushed
//! whenever the input runs dry (so `| jq` sees data at once, and bursts cost few writes).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{SinkError, SinkStats};
use crate::hub::Batch;
use crate::record::Encoding;

/// Stop after this many data messages (`connect --max-messages`).
struct Limit {
    remaining: u64,
    /// Cancelled when the limit is reached, to close the connection.
    reached: CancellationToken,
}

/// Writes records to any writer; the daemon and `connect` use the process's stdout.
pub struct StdoutSink<W> {
    out: BufWriter<W>,
    encoding: Encoding,
    limit: Option<Limit>,
}

impl<W: AsyncWrite + Unpin> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W, encoding: Encoding) -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(64 * 1024, out),
            encoding,
            limit: None,
        }
    }

    /// Writes at most `max` data messages, then cancels `reached` and writes no more data.
    pub fn with_limit(mut self, max: u64, reached: CancellationToken) -> Self {
        self.limit = Some(Limit {
            remaining: max,
            reached,
        });
        self
    }

    /// Writes until the input closes, or until cancelled and what was queued is written.
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        shutdown: CancellationToken,
        stats: Arc<SinkStats>,
    ) -> Result<(), SinkError> {
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            let batch = tokio::select! {
                biased;
                batch = input.recv() => batch,
                _ = shutdown.cancelled() => {
                    // Removed on reload: write what is already queued, then stop.
                    input.close();
                    input.recv().await
                }
            };
            let Some(batch) = batch else { break };
            chunk.clear();
            let mut written = 0;
            for event in batch.iter() {
                if event.is_data() {
                    if let Some(limit) = &mut self.limit {
                        if limit.remaining == 0 {
                            continue;
                        }
                        limit.remaining -= 1;
                    }
                }
                if self.encoding.encode(event, &mut chunk) {
                    written += 1;
                }
            }
            self.out.write_all(&chunk).await.map_err(classify)?;
            stats.records_written.fetch_add(written, Ordering::Relaxed);
            if let Some(limit) = &self.limit {
                if limit.remaining == 0 && !limit.reached.is_cancelled() {
                    self.out.flush().await.map_err(classify)?;
                    limit.reached.cancel();
                }
            }
            if input.is_empty() {
                self.out.flush().await.map_err(classify)?;
            }
        }
        self.out.flush().await.map_err(classify)
    }
}

fn classify(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::BrokenPipe
    } else {
        SinkError::Stdout(e)
    }
}
