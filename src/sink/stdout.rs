//! The stdout sink: every record, in order, through one buffered writer that is flushed
//! whenever the input runs dry (so `| jq` sees data at once, and bursts cost few writes).

use std::io;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::{SinkContext, SinkError};

/// Writes records to any writer; `run` uses the process's stdout.
pub struct StdoutSink<W> {
    out: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(64 * 1024, out),
        }
    }

    /// Writes until the input closes, or until cancelled and what was queued is written.
    pub async fn run(mut self, mut ctx: SinkContext) -> Result<(), SinkError> {
        let encoding = ctx.encoding();
        let mut line = Vec::with_capacity(1024);
        loop {
            let event = tokio::select! {
                biased;
                event = ctx.input.recv() => event,
                _ = ctx.shutdown.cancelled() => {
                    // Removed on reload: write what is already queued, then stop.
                    ctx.input.close();
                    ctx.input.recv().await
                }
            };
            let Some(event) = event else { break };
            line.clear();
            if encoding.encode(&event, &mut line) {
                self.out.write_all(&line).await.map_err(classify)?;
                ctx.stats.records_written.fetch_add(1, Ordering::Relaxed);
            }
            if ctx.input.is_empty() {
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
