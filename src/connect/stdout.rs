//! `connect`'s stdout: records written by a task on the connection's own thread, without a
//! hand-off to another thread per batch, wherever a write cannot block that thread.
//!
//! `connect` runs on one thread: the connection, its timers, Ctrl-C. The daemon's stdout sink
//! writes from a thread of its own so that a stalled reader never blocks its runtime, and each
//! batch then crosses threads: a wake-up each way, and the encoding done away from the cache
//! that read the frames. Here stdout is written by a task beside the connection's:
//!
//! - A regular file or a device that is not a terminal (`> out.ndjson`, `> /dev/null`) is
//!   written in place: such a write returns once the kernel has the bytes, whoever reads them.
//! - A pipe (`| jq`) is written through a non-blocking descriptor of its own, opened anew
//!   through `/proc/self/fd`. Never by setting `O_NONBLOCK` on the descriptor we inherited:
//!   that flag belongs to every process sharing it (the shell, a `( … ; echo done ) | jq`),
//!   which would then get EAGAIN. When the pipe is full, the task waits for room as for a
//!   socket, and the thread goes on.
//! - A terminal, a socket, or a pipe that cannot be opened again (no /proc) keeps the
//!   daemon's [`StdoutSink`] and its thread.
//!
//! A reader that stops reading (the pipe full) holds everything behind it, exactly as with
//! the thread: batches queue in front of the writer up to `STDOUT_BYTES`, then the connection
//! stops taking frames, so its TCP window closes and the server sees a slow reader. It has to:
//! taking frames means keeping them, and memory would grow with the backlog. Meanwhile the
//! peer's Pings wait in the socket unanswered (a server may close a connection whose reader
//! stalls for longer than its ping timeout), our keepalive is not checked, and stdin lines
//! wait, bounded, in the send queue. Nothing is dropped: once the reader reads again,
//! everything comes through in order, the Pings are answered and the timers run. Ctrl-C and
//! SIGTERM still work, since the thread never blocks: after twice `--shutdown-timeout`
//! `connect` exits saying what it could not write.

use std::fs::File;
use std::io::{self, IoSlice, IsTerminal as _, Write as _};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use rustix::fs::FileType;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gather::{write_all_with, Gather};
use crate::hub::SinkReceiver;
use crate::record::Encoding;
use crate::sink::{SinkError, SinkStats, StdoutSink};

/// Lines are written once this much is gathered, even while more batches are waiting.
const WRITE_AT: usize = 256 * 1024;
/// ... or once the buffer of encoded lines holds this much.
const BUFFER: usize = 64 * 1024;
/// A buffer grown past this (by one large line) is given back after its write.
const KEEP: usize = 1 << 20;

/// Where `connect` writes, chosen once from what stdout is.
pub(super) enum Stdout {
    /// Written by a task on the connection's thread.
    Inline(Inline),
    /// The daemon's stdout sink, with its own thread.
    Thread(File),
}

/// A stdout whose writes cannot block the thread.
pub(super) enum Inline {
    /// A regular file or a device other than a terminal: blocking writes that do not wait.
    File(File),
    /// A pipe, through a non-blocking descriptor of its own.
    Pipe(pipe::Sender),
}

impl Stdout {
    /// Chooses how to write `stdout` (see the module's doc). Must run inside the runtime: a
    /// pipe is registered with it.
    pub(super) fn choose(stdout: File) -> Stdout {
        let Ok(stat) = rustix::fs::fstat(&stdout) else {
            return Stdout::Thread(stdout);
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Stdout::Inline(Inline::File(stdout)),
            FileType::CharacterDevice if !stdout.is_terminal() => {
                Stdout::Inline(Inline::File(stdout))
            }
            FileType::Fifo => match reopen_nonblocking(&stdout) {
                Ok(pipe) => Stdout::Inline(Inline::Pipe(pipe)),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open stdout's pipe again; writing it from a thread");
                    Stdout::Thread(stdout)
                }
            },
            _ => Stdout::Thread(stdout),
        }
    }

    /// Starts writing what `input` brings, encoded with `encoding`, until it closes.
    pub(super) fn spawn(
        self,
        input: SinkReceiver,
        encoding: Encoding,
    ) -> JoinHandle<Result<(), SinkError>> {
        match self {
            Stdout::Inline(out) => tokio::spawn(out.run(input, encoding)),
            // `connect` ends its writer by closing the input, never by this token.
            Stdout::Thread(file) => tokio::spawn(StdoutSink::new(file, encoding).run(
                input,
                CancellationToken::new(),
                Arc::new(SinkStats::default()),
            )),
        }
    }
}

/// The same pipe as `stdout`, with a file description (and so an `O_NONBLOCK`) of its own.
fn reopen_nonblocking(stdout: &File) -> io::Result<pipe::Sender> {
    let path = format!("/proc/self/fd/{}", stdout.as_raw_fd());
    pipe::OpenOptions::new().open_sender(path)
}

impl Inline {
    /// Gathers each batch's lines (encoded with the one encoder of the wire format,
    /// [`Encoding`], large payloads by reference: [`Gather`]) and writes them when they pass
    /// [`WRITE_AT`] or nothing more is waiting: `| jq` sees data at once, a burst costs few
    /// writes.
    async fn run(mut self, mut input: SinkReceiver, encoding: Encoding) -> Result<(), SinkError> {
        let mut lines = Gather::with_capacity(BUFFER);
        loop {
            let delivery = match input.try_recv() {
                Ok(delivery) => delivery,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.write(&mut lines).await?;
                    match input.recv().await {
                        Some(delivery) => delivery,
                        None => break,
                    }
                }
            };
            for event in &delivery.batch.events {
                lines.push(&delivery.batch.upstream, event, encoding);
                if lines.full() {
                    self.write(&mut lines).await?;
                }
            }
            // Gives the batch's share of the input's byte budget back (payloads held by
            // reference are not counted: they are at most `WRITE_AT` more).
            drop(delivery);
            if lines.len() >= WRITE_AT || lines.buffered() >= BUFFER {
                self.write(&mut lines).await?;
            }
        }
        self.write(&mut lines).await
    }

    /// Writes and empties `lines`.
    async fn write(&mut self, lines: &mut Gather) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        // Everything in the buffer (small lines): one plain write, no list of pieces.
        if lines.buffered() == lines.len() {
            let written = self.write_all(lines.buffer()).await;
            lines.clear(KEEP);
            return written;
        }
        let mut slices = lines.slices();
        let written = match self {
            Inline::File(file) => write_all_with(&mut slices, |s| file.write_vectored(s)),
            Inline::Pipe(pipe) => {
                let mut rest = &mut slices[..];
                let mut result = Ok(());
                while !rest.is_empty() {
                    match pipe.write_vectored(rest).await {
                        Ok(0) => result = Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => IoSlice::advance_slices(&mut rest, n),
                        Err(e) => result = Err(e),
                    }
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
        };
        drop(slices);
        lines.clear(KEEP);
        written.map_err(stdout_error)
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let written = match self {
            Inline::File(file) => file.write_all(bytes),
            Inline::Pipe(pipe) => pipe.write_all(bytes).await,
        };
        written.map_err(stdout_error)
    }
}

fn stdout_error(e: io::Error) -> SinkError {
    match e.kind() {
        io::ErrorKind::BrokenPipe => SinkError::BrokenPipe,
        _ => SinkError::Stdout(e),
    }
}
