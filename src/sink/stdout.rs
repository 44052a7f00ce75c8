//! The stdout sink: every record, in order, encoded and written by a thread of its own.
//!
//! A blocking thread rather than tokio's `stdout()`: /dev/null and regular files cannot be
//! polled, and a stalled pipe must never block the runtime (signals, the watchdog and the
//! other sinks go on while the upstreams routed here wait: stdout's backpressure). Lines
//! gather in one buffer, written when it is full or when the input runs dry, so `| jq` sees
//! data at once and bursts cost few writes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{SinkError, SinkStats};
use crate::hub::{Delivery, SinkReceiver};
use crate::record::{Body, Encoding, LineParts};

/// Lines are gathered up to this size before a write.
const WRITE_SIZE: usize = 64 * 1024;
/// The size stdout is given when it is a pipe (Linux's default `pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;
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

/// Stop after this many data messages (`connect --max-messages`).
struct Limit {
    remaining: u64,
    /// Cancelled when the limit is reached, to close the connection.
    reached: CancellationToken,
}

/// Writes records to any blocking writer; the daemon and `connect` use [`process_stdout`].
pub struct StdoutSink<W> {
    out: W,
    encoding: Encoding,
    limit: Option<Limit>,
}

impl<W: Write + Send + 'static> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W, encoding: Encoding) -> Self {
        StdoutSink {
            out,
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
        self,
        input: SinkReceiver,
        shutdown: CancellationToken,
        stats: Arc<SinkStats>,
    ) -> Result<(), SinkError> {
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("wsbridge-stdout".into())
            .spawn(move || {
                let _ = done_tx.send(self.write_all(input, &shutdown, &stats));
            })
            .map_err(SinkError::Stdout)?;
        done.await.unwrap_or_else(|_| {
            Err(SinkError::Stdout(io::Error::other(
                "the stdout writer thread panicked (a bug: please report it with the log)",
            )))
        })
    }

    /// The thread: encode and write every batch, in order.
    fn write_all(
        mut self,
        mut input: SinkReceiver,
        shutdown: &CancellationToken,
        stats: &SinkStats,
    ) -> Result<(), SinkError> {
        // Waiting for the next batch or for removal on reload (while no upstream sends) is a
        // select, so the thread waits in a small runtime of its own (no I/O, no timers).
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(SinkError::Stdout)?;
        let mut lines = Vec::with_capacity(WRITE_SIZE);
        loop {
            let delivery = match input.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The input ran dry: write what we have before waiting.
                    write_out(&mut self.out, &mut lines)?;
                    match waiter.block_on(next_delivery(&mut input, shutdown)) {
                        Some(delivery) => delivery,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let written = self.encode_batch(&delivery, &mut lines)?;
            drop(delivery); // gives its bytes back to the sink input's budget
            stats.records_written.fetch_add(written, Ordering::Relaxed);
            if let Some(limit) = &self.limit {
                if limit.remaining == 0 && !limit.reached.is_cancelled() {
                    write_out(&mut self.out, &mut lines)?;
                    limit.reached.cancel();
                }
            }
        }
        write_out(&mut self.out, &mut lines)
    }

    /// Appends the lines of one batch to `lines`, writing whenever it is full; a large payload
    /// that is its own line is written from where it lies, not copied. Returns the count.
    fn encode_batch(&mut self, delivery: &Delivery, lines: &mut Vec<u8>) -> Result<u64, SinkError> {
        let batch = &delivery.batch;
        let mut written = 0;
        for event in &batch.events {
            if event.is_data() {
                if let Some(limit) = &mut self.limit {
                    if limit.remaining == 0 {
                        continue;
                    }
                    limit.remaining -= 1;
                }
            }
            // A large payload is written from where it lies or encoded piece by piece: its
            // line never sits whole in `lines` (a 1 MiB text would double it to 2 MiB).
            let parts = (event.payload_len() >= WRITE_SIZE)
                .then(|| self.encoding.parts(&batch.upstream, event))
                .flatten();
            match parts {
                Some(parts) => {
                    self.write_parts(parts, lines)?;
                    written += 1;
                }
                None => {
                    if self.encoding.encode(&batch.upstream, event, lines) {
                        written += 1;
                    }
                }
            }
            if lines.len() >= WRITE_SIZE {
                write_out(&mut self.out, lines)?;
            }
        }
        Ok(written)
    }

    /// Appends `parts` to `lines`, writing `lines` out whenever it fills up.
    fn write_parts(&mut self, parts: LineParts<'_>, lines: &mut Vec<u8>) -> Result<(), SinkError> {
        lines.extend_from_slice(&parts.head);
        match parts.body {
            Body::Verbatim(payload) => {
                write_out(&mut self.out, lines)?;
                self.out.write_all(payload).map_err(classify)?;
            }
            body => {
                let mut at = 0;
                while at < body.len() {
                    at = body.encode_piece(at, WRITE_SIZE.saturating_sub(lines.len()), lines);
                    if lines.len() >= WRITE_SIZE {
                        write_out(&mut self.out, lines)?;
                    }
                }
            }
        }
        lines.extend_from_slice(parts.tail);
        Ok(())
    }
}

/// The next batch; once `shutdown` is cancelled (removed on reload), only what is already
/// queued, then `None`.
async fn next_delivery(input: &mut SinkReceiver, shutdown: &CancellationToken) -> Option<Delivery> {
    tokio::select! {
        biased;
        delivery = input.recv() => delivery,
        _ = shutdown.cancelled() => {
            input.close();
            input.recv().await
        }
    }
}

/// Writes the gathered lines and empties the buffer.
fn write_out(out: &mut impl Write, lines: &mut Vec<u8>) -> Result<(), SinkError> {
    if !lines.is_empty() {
        out.write_all(lines).map_err(classify)?;
        lines.clear();
        // One huge record should not keep its buffer for good.
        if lines.capacity() > 4 * WRITE_SIZE {
            lines.shrink_to(WRITE_SIZE);
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
