//! The stdout sink: records written, in order, by one thread of its own.
//!
//! A blocking thread rather than tokio's `stdout()`: /dev/null and regular files cannot be
//! polled, and a stalled pipe must never block the runtime (signals, the watchdog and the
//! other sinks go on while the upstreams routed here wait: stdout's backpressure). The
//! shared [`Driver`] encodes; the thread takes what is queued (a blocking receive) and
//! writes it with one `writev` whenever it has anything, so `| jq` sees data at once and a
//! burst costs few writes. A closed pipe (`| head`) is a normal ending.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::driver::{run_single, Driver};
use super::queue::Bounds;
use super::writer::SinkWriter;
use super::{Encoded, Encoder, SinkError, SinkStats};
use crate::config::OnSlow;
use crate::hub::SinkReceiver;
use crate::record::Encoding;

/// The size stdout is given when it is a pipe (Linux's default `pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;
/// What may wait for the thread: a hand-over, not a buffer (stdout always blocks its
/// upstreams when it is behind, so holding more would only cost memory).
const HAND_OVER: Bounds = Bounds {
    records: 4096,
    bytes: 1 << 20,
};
/// Chunks per `writev`, at most (Linux takes 1,024).
const MAX_IOVECS: usize = 256;

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

    /// Writes at most `max` data messages, then cancels `reached` and writes no more data.
    pub fn with_limit(mut self, max: u64, reached: CancellationToken) -> Self {
        self.encoder = self.encoder.with_limit(max, reached);
        self
    }

    /// Writes until the input closes, or until cancelled and what was queued is written.
    pub async fn run(
        self,
        input: SinkReceiver,
        shutdown: CancellationToken,
        stats: Arc<SinkStats>,
    ) -> Result<(), SinkError> {
        let writer = ThreadWriter::spawn(self.out).map_err(SinkError::Stdout)?;
        let driver = Driver::new(
            "stdout".into(),
            self.encoder,
            OnSlow::Block,
            HAND_OVER,
            stats,
        );
        run_single(input, shutdown, driver, writer)
            .await
            .map_err(classify)
    }
}

/// Hands rounds to the writing thread; waits (asynchronously) while it is behind.
struct ThreadWriter {
    rounds: Option<mpsc::Sender<Vec<Bytes>>>,
    done: Option<oneshot::Receiver<io::Result<()>>>,
}

impl ThreadWriter {
    fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<ThreadWriter> {
        // One round waits while the thread writes the previous one.
        let (tx, rx) = mpsc::channel(1);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("wsbridge-stdout".into())
            .spawn(move || {
                let _ = done_tx.send(write_rounds(out, rx));
            })?;
        Ok(ThreadWriter {
            rounds: Some(tx),
            done: Some(done),
        })
    }

    /// How the thread ended.
    async fn result(&mut self) -> io::Result<()> {
        self.rounds = None; // lets it finish
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the stdout writer thread panicked (a bug: please report it with the log)",
                ))
            }),
            None => Ok(()),
        }
    }
}

impl SinkWriter for ThreadWriter {
    async fn write(&mut self, round: &[Encoded]) -> io::Result<()> {
        let chunks = round.iter().map(|run| run.bytes().clone()).collect();
        let sent = match &self.rounds {
            Some(rounds) => rounds.send(chunks).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: its error says why.
        self.result().await?;
        Err(io::ErrorKind::BrokenPipe.into())
    }

    async fn close(&mut self) -> io::Result<()> {
        self.result().await
    }
}

/// The thread: takes rounds as they come and writes each with the ones already waiting.
fn write_rounds<W: Write>(mut out: W, mut rounds: mpsc::Receiver<Vec<Bytes>>) -> io::Result<()> {
    while let Some(mut chunks) = rounds.blocking_recv() {
        while chunks.len() < MAX_IOVECS {
            match rounds.try_recv() {
                Ok(more) => chunks.extend(more),
                Err(_) => break,
            }
        }
        write_all(&mut out, &chunks)?;
    }
    out.flush()
}

/// Writes every chunk, as few `writev`s as the writer allows.
fn write_all(out: &mut impl Write, chunks: &[Bytes]) -> io::Result<()> {
    for group in chunks.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|c| IoSlice::new(c)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match out.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn classify(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::BrokenPipe
    } else {
        SinkError::Stdout(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Format;
    use crate::hub::{sink_input, Outlet};
    use crate::record::{Event, EventKind};

    /// Larger than a round, so lines span several.
    const WRITE_SIZE: usize = 64 * 1024;

    /// A writer the test can read back; writes in small pieces, as a pipe may.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(10_000);
            self.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(seq: u64, data: String) -> Event {
        Event::now(EventKind::Text {
            seq,
            data: data.into(),
        })
    }

    async fn written_by(
        encoding: Encoding,
        events: Vec<Event>,
        limit: Option<u64>,
    ) -> (Vec<u8>, CancellationToken) {
        let out = Shared::default();
        let (input, receiver) = sink_input(4, 1 << 20);
        let reached = CancellationToken::new();
        let mut sink = StdoutSink::new(out.clone(), encoding);
        if let Some(max) = limit {
            sink = sink.with_limit(max, reached.clone());
        }
        let task = tokio::spawn(sink.run(
            receiver,
            CancellationToken::new(),
            Arc::new(SinkStats::default()),
        ));
        let mut outlet = Outlet::fixed(vec![input]);
        let name: Arc<str> = Arc::from("feed");
        for event in events {
            outlet.deliver(&name, event).await;
        }
        drop(outlet);
        task.await.unwrap().unwrap();
        let bytes = out.0.lock().unwrap().clone();
        (bytes, reached)
    }

    #[tokio::test]
    async fn large_and_small_lines_come_out_whole_and_in_order() {
        let raw = Encoding {
            format: Format::Raw,
            events: true,
            parse_json: false,
            binary_bytes: false,
        };
        let ndjson = Encoding {
            format: Format::Ndjson,
            parse_json: true,
            ..raw
        };
        let events = vec![
            text(1, "small".into()),
            text(2, "x".repeat(3 * WRITE_SIZE)),
            text(
                3,
                format!("{}\nwith a \"break\"", "y".repeat(2 * WRITE_SIZE)),
            ),
            Event::now(EventKind::Binary {
                seq: 4,
                data: (0..2 * WRITE_SIZE + 1).map(|i| i as u8).collect(),
            }),
            text(5, format!("[{}1]", "1,\n".repeat(WRITE_SIZE))),
            text(6, "last".into()),
        ];
        for encoding in [raw, ndjson] {
            let mut expected = Vec::new();
            for event in &events {
                encoding.encode("feed", event, &mut expected);
            }
            let (written, _) = written_by(encoding, events.clone(), None).await;
            assert_eq!(written.len(), expected.len(), "{encoding:?}");
            assert!(
                written == expected,
                "{encoding:?}: the output differs from the encoded lines"
            );
        }
    }

    #[tokio::test]
    async fn the_limit_stops_data_and_says_so() {
        let ndjson = Encoding {
            format: Format::Ndjson,
            events: true,
            parse_json: false,
            binary_bytes: false,
        };
        let events = (1..=5).map(|seq| text(seq, format!("m{seq}"))).collect();
        let (written, reached) = written_by(ndjson, events, Some(3)).await;
        let written = String::from_utf8(written).unwrap();
        assert_eq!(written.lines().count(), 3, "{written}");
        assert!(written.contains("\"data\":\"m3\"") && !written.contains("m4"));
        assert!(reached.is_cancelled());
    }
}
