//! The stdout sink: records written, in order, by one thread of its own.
//!
//! A blocking thread rather than tokio's `stdout()`: /dev/null and regular files cannot be
//! polled, and a stalled pipe must never block the runtime (signals, the watchdog and the
//! other sinks go on while the upstreams routed here wait: stdout's backpressure). The
//! thread takes the batches the hub routes here itself, encodes each into one buffer with
//! the sink's [`Encoder`], and writes the buffer when it passes [`WRITE_AT`] or nothing more
//! is waiting: `| jq` sees data at once, a burst costs few writes, and a batch costs no task
//! wake-up and no allocation on its way. A closed pipe (`| head`) is a normal ending.
//!
//! Why not the shared driver and queue: stdout has one reader and is always backpressure, so a
//! queue between the hub and this thread would only add a hand-off and a copy per batch.

pub mod settings;

pub use settings::StdoutSettings;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Encoder, SinkError, SinkStats};
use crate::hub::{Delivery, SinkReceiver};
use crate::record::Encoding;

/// The size stdout is given when it is a pipe (Linux's default `pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;
/// The buffer is written once it holds this much, even while more batches are waiting.
const WRITE_AT: usize = 64 * 1024;
/// A buffer grown past this (by one large message) is given back after its write.
const KEEP: usize = 1 << 20;

/// The process's standard output, as a file of its own (a duplicate of fd 1), so writes go
/// straight to the kernel without std's line buffering or lock.
///
/// When stdout is a pipe, it is enlarged to [`PIPE_SIZE`] (as far as the system allows):
/// with the default 64 KiB, a reader like `wc` or `jq` is woken for every 64 KiB.
pub fn process_stdout() -> Result<File, SinkError> {
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(SinkError::Stdout)?;
    let is_pipe = rustix::fs::fstat(&fd).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Fifo
    });
    if is_pipe {
        match rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE) {
            Ok(size) => tracing::debug!(size, "stdout is a pipe; enlarged it"),
            // Above /proc/sys/fs/pipe-max-size or the user's pipe quota: keep what it is.
            Err(e) => tracing::debug!(error = %e, "stdout is a pipe; could not enlarge it"),
        }
    }
    Ok(File::from(fd))
}

/// Writes records to any blocking writer; the daemon and `connect` use [`process_stdout`].
pub struct StdoutSink<W> {
    out: W,
    encoder: Encoder,
}

impl<W: Write + Send + 'static> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W, encoding: Encoding) -> Self {
        StdoutSink {
            out,
            encoder: Encoder::new(encoding),
        }
    }

    /// A sink writing to `out` with `encoder` (a sink's own, with its `filter`).
    pub fn with_encoder(out: W, encoder: Encoder) -> Self {
        StdoutSink { out, encoder }
    }

    /// Writes until the input closes, or until `shutdown` is cancelled and what was queued
    /// is written. The writing happens on a thread of its own; this only waits for it.
    pub async fn run(
        self,
        input: SinkReceiver,
        shutdown: CancellationToken,
        stats: Arc<SinkStats>,
    ) -> Result<(), SinkError> {
        let thread = WriterThread {
            out: self.out,
            encoder: self.encoder,
            input,
            shutdown,
            closing: false,
            runtime: Handle::current(),
            stats,
            buffer: Vec::with_capacity(WRITE_AT),
            records: 0,
        };
        let span = tracing::Span::current();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("wsbridge-stdout".into())
            .spawn(move || {
                let _span = span.enter();
                let _ = done_tx.send(thread.run());
            })
            .map_err(SinkError::Stdout)?;
        match done.await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(SinkError::Stdout(io::Error::other(
                "the stdout writer thread panicked (a bug: please report it with the log)",
            ))),
        }
    }
}

/// What the writing thread owns: the input, the encoder and the one buffer.
struct WriterThread<W> {
    out: W,
    encoder: Encoder,
    input: SinkReceiver,
    shutdown: CancellationToken,
    /// Shutdown was seen and the input closed: what is left in it is written, then the end.
    closing: bool,
    /// Only to wait for the next batch or shutdown, whichever comes first, from this thread.
    runtime: Handle,
    stats: Arc<SinkStats>,
    /// Encoded lines not yet written.
    buffer: Vec<u8>,
    /// Records in `buffer`.
    records: u64,
}

impl<W: Write> WriterThread<W> {
    /// Encodes and writes until the input is closed and read to the end; a write error ends
    /// it (and drops the input, so the upstreams routed here no longer wait for it).
    fn run(mut self) -> io::Result<()> {
        loop {
            let delivery = match self.input.try_recv() {
                Ok(delivery) => delivery,
                Err(TryRecvError::Disconnected) => break,
                // Nothing more is ready: what was gathered goes out before waiting.
                Err(TryRecvError::Empty) => {
                    self.write_buffer()?;
                    match self.next() {
                        Some(delivery) => delivery,
                        None => break,
                    }
                }
            };
            let batch = &delivery.batch;
            if !crate::fence::holds(batch.fence.as_ref()) {
                let why = format_args!(
                    "the lease of upstream {} is no longer proven",
                    batch.upstream
                );
                let n = batch.data_messages();
                self.stats.records_routed.fetch_add(n, Ordering::Relaxed);
                self.stats.drop_records(super::DropReason::Fenced, n, &why);
                continue;
            }
            let records = self.encoder.encode_into(batch, &mut self.buffer) as u64;
            self.records += records;
            self.stats
                .records_routed
                .fetch_add(records, Ordering::Relaxed);
            // Gives the batch's share of the input's byte budget back.
            drop(delivery);
            if self.buffer.len() >= WRITE_AT {
                self.write_buffer()?;
            }
        }
        self.write_buffer()?;
        self.out.flush()
    }

    /// Waits for the next batch; `None` once the input is closed and read to the end.
    fn next(&mut self) -> Option<Delivery> {
        if !self.closing {
            let (input, shutdown) = (&mut self.input, &self.shutdown);
            let next = self.runtime.block_on(async {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => None,
                    delivery = input.recv() => Some(delivery),
                }
            });
            match next {
                Some(delivery) => return delivery,
                None => self.close_input(),
            }
        }
        // Closed: this returns what is left, then `None`, without waiting for senders.
        self.input.blocking_recv()
    }

    /// Shutdown: no more batches are taken in; those already queued are still written.
    fn close_input(&mut self) {
        self.closing = true;
        self.input.close();
    }

    /// Writes the buffer (if it holds anything), then counts its records as written.
    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let len = self.buffer.len() as u64;
        self.stats.bytes_buffered.fetch_add(len, Ordering::Relaxed);
        let written = self.out.write_all(&self.buffer);
        self.stats.bytes_buffered.fetch_sub(len, Ordering::Relaxed);
        if let Err(e) = written {
            // The sink ends with this error: what the buffer held is lost with it. A reader
            // that went away (`| head`) is a normal, quiet ending of the whole process.
            let lost = std::mem::take(&mut self.records);
            if e.kind() != io::ErrorKind::BrokenPipe {
                self.stats.drop_records(super::DropReason::Io, lost, &e);
            }
            return Err(e);
        }
        self.stats
            .records_written
            .fetch_add(std::mem::take(&mut self.records), Ordering::Relaxed);
        self.buffer.clear();
        if self.buffer.capacity() > KEEP {
            self.buffer = Vec::with_capacity(WRITE_AT);
        }
        // A feed that never pauses still sees shutdown, once per write.
        if !self.closing && self.shutdown.is_cancelled() {
            self.close_input();
        }
        Ok(())
    }
}

fn classify(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::BrokenPipe
    } else {
        SinkError::Stdout(e)
    }
}

#[cfg(test)]
mod tests;
