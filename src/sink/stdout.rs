//! The stdout sink: every record, in order, encoded and written by a thread of its own.
//!
//! A blocking thread rather than tokio's `stdout()`: that one copies every write into a buffer
//! of its own and hands it to the blocking pool, and /dev/null or a regular file cannot be
//! polled anyway. The thread encodes too, so on two cores reading frames and writing lines
//! run side by side, and a stalled pipe never blocks the runtime: signals, the watchdog and
//! the other sinks go on, while the upstreams routed here wait (stdout's backpressure).
//! Lines gather in one buffer, written when it is full or when the input runs dry, so
//! `| jq` sees data at once and bursts cost few writes. In `connect`, batches of large raw
//! payloads are written by the connection itself when that needs no waiting ([`Direct`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{SinkError, SinkStats};
use crate::config::Format;
use crate::hub::{Batch, Delivery, SinkReceiver, TakeNow, Taken};
use crate::record::{Body, Encoding, LineParts};

/// Lines are gathered up to this size before a write.
const WRITE_SIZE: usize = 64 * 1024;
/// The size stdout is given when it is a pipe (Linux's default `pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;
/// How often the thread yields, looking for the next batch, before it sleeps.
const YIELDS_BEFORE_SLEEP: usize = 20;
/// The same after a batch the upstream handed on because it was full
/// ([`crate::hub::Batch::streaming`]): the next one is tens of microseconds away, and a
/// thread woken from sleep costs the reading thread more than that (a futex wake, on a VM an
/// interrupt to the other core).
const YIELDS_WHILE_STREAMING: usize = 200;
/// A full batch of at least this many messages (small ones, then) took the upstream a hundred
/// microseconds or more to gather, and so will the next: rather than yield all that time, the
/// thread naps ([`NAP`]), leaving the core to the reading thread and the peer.
const NAP_AFTER_MESSAGES: usize = 512;
/// One nap; the kernel's timer slack (50 µs by default) makes it 50-80 µs, well within the
/// time the next batch takes and the room the sink input has.
const NAP: Duration = Duration::from_micros(30);
/// Naps before the thread sleeps until woken (a few milliseconds in all).
const NAPS_BEFORE_SLEEP: usize = 40;

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
    /// Shared with a [`Direct`], if there is one.
    progress: Option<Arc<Progress>>,
}

/// How far the stdout thread is, for [`Direct`] to know when nothing queued is unwritten.
#[derive(Debug, Default)]
struct Progress {
    /// Batches queued for the stdout thread.
    queued: AtomicU64,
    /// Batches the stdout thread has taken and written out completely.
    written: AtomicU64,
}

/// A batch of large payloads in raw format needs no encoding: its lines are the payloads and
/// their line breaks. Below this many bytes, the stdout thread's encoding beside the reading
/// (the 64 B case) is worth the hand-over.
const DIRECT_MIN_BYTES: usize = 64 << 10;
/// Two slices a line, within Linux's limit of 1,024 per `writev`.
const DIRECT_MAX_MESSAGES: usize = 512;
/// See [`Direct::worth_it_for_a_pipe`]: a full batch of messages up to 256 KiB (batches
/// close at 256 KiB, so they end up to one message beyond it).
const DIRECT_PIPE_MAX_BYTES: usize = 512 << 10;

/// Writes batches of large raw payloads on the connection's own thread (`connect` only: one
/// sender), when the stdout thread has written everything queued before and the kernel takes
/// them without waiting (`pwritev2` with `RWF_NOWAIT`: pipes and /dev/null do; regular files
/// on most filesystems do not, and then the thread writes everything as before).
///
/// Handing every batch to the stdout thread keeps three threads busy on two cores (the peer's,
/// the reading one, the writing one), and which two share a core decides the rate: 4 KiB
/// messages ran at 430k-870k/s. Written here, with the payloads passed to the kernel where
/// they lie (no copy, the line-break scan on data still in cache), 4 KiB runs at ~850k/s and
/// 1 MiB as fast as the bare client (`bench/PROFILE.md`). A write that would wait (a full
/// pipe) is left to the stdout thread, so a stalled reader of stdout never blocks the runtime.
/// What it writes is not counted in [`SinkStats`] (`connect` has no metrics).
#[derive(Debug)]
pub struct Direct {
    out: File,
    /// The pipe's size, when stdout is a pipe.
    pipe_size: Option<usize>,
    encoding: Encoding,
    progress: Arc<Progress>,
    /// Cleared for good when a write fails for any reason but a full pipe (no `RWF_NOWAIT` on
    /// this file, a closed pipe): the stdout thread then writes everything, and reports errors.
    usable: AtomicBool,
}

impl TakeNow for Direct {
    fn take_now(&self, batch: &Batch) -> Taken {
        let idle = self.progress.queued.load(Ordering::Relaxed)
            == self.progress.written.load(Ordering::Acquire);
        if !idle || !self.usable.load(Ordering::Relaxed) {
            return Taken::Nothing;
        }
        let Some((mut lines, bytes)) = self.lines(batch) else {
            return Taken::Nothing;
        };
        if !self.worth_it_for_a_pipe(bytes) {
            return Taken::Nothing;
        }
        let mut lines = &mut lines[..];
        let mut written = 0;
        while !lines.is_empty() {
            let flags = rustix::io::ReadWriteFlags::NOWAIT;
            // u64::MAX is -1: the file's current position, as write(2) uses.
            match rustix::io::pwritev2(&self.out, lines, u64::MAX, flags) {
                Ok(0) => break,
                Ok(n) => {
                    written += n;
                    io::IoSlice::advance_slices(&mut lines, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "stdout: no direct writes; the stdout thread writes everything");
                    self.usable.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        if written == 0 {
            Taken::Nothing
        } else if lines.is_empty() {
            Taken::All
        } else {
            Taken::Part(written)
        }
    }

    fn queueing(&self) {
        self.progress.queued.fetch_add(1, Ordering::Relaxed);
    }
}

impl Direct {
    /// Whether writing `bytes` of lines here is worth it when stdout is a pipe (anything else
    /// takes the payloads without copying them): the kernel copies them on this thread, which
    /// the stdout thread would do beside the reading. Up to [`DIRECT_PIPE_MAX_BYTES`] the
    /// hand-over costs more than the copy (4 KiB messages: 373k -> 405k msgs/s); a larger
    /// batch, or one the pipe has no room for (a part written here and the rest there gains
    /// nothing), goes to the thread (1 MiB messages: 1.51k msgs/s written here, 1.54-1.66k
    /// there).
    fn worth_it_for_a_pipe(&self, bytes: usize) -> bool {
        let Some(size) = self.pipe_size else {
            return true;
        };
        if bytes > DIRECT_PIPE_MAX_BYTES {
            return false;
        }
        let queued = rustix::io::ioctl_fionread(&self.out).map_or(size, |n| n as usize);
        bytes <= size.saturating_sub(queued)
    }

    /// The batch's lines and their size, if they are worth writing here: few, large
    /// together, and all of them payloads as they are.
    fn lines<'a>(&self, batch: &'a Batch) -> Option<(Vec<io::IoSlice<'a>>, usize)> {
        if batch.events.len() > DIRECT_MAX_MESSAGES {
            return None;
        }
        let lines = verbatim_lines(self.encoding, batch)?;
        let bytes: usize = lines.iter().map(|line| line.len()).sum();
        (bytes >= DIRECT_MIN_BYTES).then_some((lines, bytes))
    }
}

/// The lines of `batch` as slices of its payloads and their line breaks, if every line is a
/// payload as it is (raw format: a text without line breaks, `--binary` bytes).
fn verbatim_lines(encoding: Encoding, batch: &Batch) -> Option<Vec<io::IoSlice<'_>>> {
    let mut lines = Vec::with_capacity(2 * batch.events.len());
    for event in &batch.events {
        match encoding.parts(&batch.upstream, event) {
            Some(LineParts {
                head,
                body: Body::Verbatim(payload),
                tail,
            }) if head.is_empty() => {
                lines.push(io::IoSlice::new(payload));
                if !tail.is_empty() {
                    lines.push(io::IoSlice::new(tail));
                }
            }
            // Raw format writes nothing for open, close and error.
            None if encoding.format == Format::Raw && !event.is_data() => {}
            _ => return None,
        }
    }
    Some(lines)
}

impl StdoutSink<File> {
    /// A [`Direct`] writer for this sink, to hand to its input with
    /// [`crate::hub::SinkInput::taking_now`]; `None` unless the format is raw, there is no
    /// message limit (counted by the stdout thread) and stdout can be duplicated.
    pub fn direct(&mut self) -> Option<Arc<Direct>> {
        if self.encoding.format != Format::Raw || self.limit.is_some() {
            return None;
        }
        let out = self.out.try_clone().ok()?;
        let pipe_size = rustix::pipe::fcntl_getpipe_size(&out).ok();
        let progress = Arc::new(Progress::default());
        self.progress = Some(progress.clone());
        Some(Arc::new(Direct {
            out,
            pipe_size,
            encoding: self.encoding,
            progress,
            usable: AtomicBool::new(true),
        }))
    }
}

impl<W: Write + Send + 'static> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W, encoding: Encoding) -> Self {
        StdoutSink {
            out,
            encoding,
            limit: None,
            progress: None,
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
        fill_thread_cache_with_own_chunks();
        // Waiting for the next batch or for removal on reload (while no upstream sends) is a
        // select, so the thread waits in a small runtime of its own (no I/O, no timers).
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(SinkError::Stdout)?;
        let mut lines = Vec::with_capacity(WRITE_SIZE);
        // Set by a full batch; kept while batches keep coming before the wait runs out.
        let mut pace = Pace::Trickle;
        // Batches taken, for `progress`.
        let mut taken = 0;
        loop {
            let delivery = match input.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The input ran dry: write what we have before waiting.
                    write_out(&mut self.out, &mut lines)?;
                    if let Some(progress) = &self.progress {
                        progress.written.store(taken, Ordering::Release);
                    }
                    match pace.soon(&mut input) {
                        Some(delivery) => delivery,
                        None => {
                            pace = Pace::Trickle;
                            match waiter.block_on(next_delivery(&mut input, shutdown)) {
                                Some(delivery) => delivery,
                                None => break,
                            }
                        }
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            pace = pace.after(&delivery.batch);
            taken += 1;
            let written = if delivery.written > 0 {
                self.write_rest(&delivery, &mut lines)?
            } else {
                self.encode_batch(&delivery, &mut lines)?
            };
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

    /// Writes the lines of a batch that [`Direct`] began to write (a pipe filled up meanwhile),
    /// from where it stopped. Returns the count.
    fn write_rest(&mut self, delivery: &Delivery, lines: &mut Vec<u8>) -> Result<u64, SinkError> {
        write_out(&mut self.out, lines)?;
        let mut whole = Vec::new();
        let mut rest = match verbatim_lines(self.encoding, &delivery.batch) {
            Some(slices) => slices,
            // Not a batch Direct takes; cannot happen, but the encoding says the same.
            None => {
                for event in &delivery.batch.events {
                    self.encoding
                        .encode(&delivery.batch.upstream, event, &mut whole);
                }
                vec![io::IoSlice::new(&whole)]
            }
        };
        let mut rest = &mut rest[..];
        io::IoSlice::advance_slices(&mut rest, delivery.written);
        while !rest.is_empty() {
            match self.out.write_vectored(rest) {
                Ok(0) => return Err(classify(io::ErrorKind::WriteZero.into())),
                Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
            }
        }
        let records = delivery.batch.events.iter().filter(|e| e.is_data());
        Ok(records.count() as u64)
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

/// Fills glibc's per-thread cache of small freed chunks with chunks of this thread's own.
///
/// glibc keeps up to seven freed chunks of each small size in a cache of the thread that frees
/// them, whoever allocated them. This thread frees the small pieces the connection's thread
/// allocates for every batch (the `Arc<Batch>`, its event vector, a payload's shared handle);
/// they would pile up here while that thread, finding none free, carves new ones out of
/// whatever is free in its heap: with 1 MiB messages, out of a payload buffer just freed, which
/// can then never be whole again (the heap went from three 1 MiB slots to four to seven; peak
/// RSS 7 -> 8-12.7 MiB). With the cache full from the start, those pieces go straight back to
/// the shared heap, where the connection's thread takes them again: three slots in every
/// sampled run (24). It costs 56 chunks (about 4 KiB) at the thread's start.
fn fill_thread_cache_with_own_chunks() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return; // other allocators cache differently; nothing to fill
    }
    // glibc's default `tcache_count`; the sizes are requests whose chunks are 32 to 128 bytes,
    // glibc's "fast" sizes, which stay unmerged with their neighbours once freed.
    const PER_SIZE: usize = 7;
    let mut held: [Option<Vec<u8>>; PER_SIZE] = [const { None }; PER_SIZE];
    for size in (8..=120).step_by(16) {
        for slot in held.iter_mut() {
            // black_box: an allocation nobody looks at may be optimised away.
            *slot = Some(std::hint::black_box(Vec::with_capacity(size)));
        }
        held.iter_mut().for_each(|slot| drop(slot.take()));
    }
}

/// How the thread looks for the next batch before it sleeps until woken, from the batches so
/// far. Under a steady feed the next one is close, and catching it awake spares the reading
/// thread a wake (a futex call, on a VM an interrupt to the other core) for every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// No full batch since the last sleep: a trickle, which may stop at any time.
    Trickle,
    /// A full batch of large messages: the next is tens of microseconds away, and the
    /// upstream may be waiting for room in the input: yield for it.
    Streaming,
    /// A full batch of many small messages: the next is a hundred microseconds or more away:
    /// nap for it.
    StreamingSmall,
}

impl Pace {
    /// The pace after `batch`: a full batch sets it, a partial one keeps it (the feed is still
    /// going if it came before the wait ran out).
    fn after(self, batch: &Batch) -> Pace {
        match (batch.streaming, batch.events.len() >= NAP_AFTER_MESSAGES) {
            (true, true) => Pace::StreamingSmall,
            (true, false) => Pace::Streaming,
            (false, _) => self,
        }
    }

    /// The next batch, if it arrives while the thread yields or naps.
    fn soon(self, input: &mut SinkReceiver) -> Option<Delivery> {
        let (yields, naps) = match self {
            Pace::Trickle => (YIELDS_BEFORE_SLEEP, 0),
            Pace::Streaming => (YIELDS_WHILE_STREAMING, 0),
            Pace::StreamingSmall => (YIELDS_BEFORE_SLEEP, NAPS_BEFORE_SLEEP),
        };
        for _ in 0..yields {
            std::thread::yield_now();
            if let Ok(delivery) = input.try_recv() {
                return Some(delivery);
            }
        }
        for _ in 0..naps {
            std::thread::sleep(NAP);
            if let Ok(delivery) = input.try_recv() {
                return Some(delivery);
            }
        }
        None
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

    #[test]
    fn a_full_batch_sets_how_the_writer_waits_and_a_partial_one_keeps_it() {
        let batch = |messages: usize, size: usize, streaming: bool| Batch {
            upstream: Arc::from("feed"),
            events: (1..=messages as u64)
                .map(|seq| text(seq, "x".repeat(size)))
                .collect(),
            streaming,
        };
        let small_full = batch(NAP_AFTER_MESSAGES, 64, true);
        let large_full = batch(1, 1 << 20, true);
        let partial = batch(3, 64, false);
        assert_eq!(Pace::Trickle.after(&small_full), Pace::StreamingSmall);
        assert_eq!(Pace::StreamingSmall.after(&large_full), Pace::Streaming);
        assert_eq!(Pace::Trickle.after(&partial), Pace::Trickle);
        assert_eq!(Pace::StreamingSmall.after(&partial), Pace::StreamingSmall);
        assert_eq!(Pace::Streaming.after(&partial), Pace::Streaming);
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
