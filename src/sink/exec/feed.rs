//! The exec sink's feeder: one task for the sink's whole life that owns its queue and writes
//! it to the stdin of each program in turn, so a program that exits hands what is queued to
//! the one that replaces it.
//!
//! How records are counted: a record leaves the queue's bounds when the pipe takes it (the
//! pipe then holds it, at most its capacity), and counts as written once the program has
//! read it from the pipe ([`Unread`], checked after each write and every [`SETTLE`] while
//! some is unread). When the program goes, what it left in the pipe is dropped
//! (`program_exited`), and so is a record a failed write cut (part of it went in, the rest
//! never will); records no write reached stay queued for the next program. At the end the
//! feeder waits until the program has read everything before closing its stdin, so that
//! the pipe can still be asked what is left.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::unread::{bytes_in_pipe, InPipe, Unread};
use crate::sink::queue::{records, QueueReader};
use crate::sink::{DropReason, Encoded, SinkStats};

/// How often the pipe is asked what the program has read while it has not read everything.
const SETTLE: Duration = Duration::from_millis(100);
/// The same at the end, while the feeder waits for the program to read the rest.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Slices per `writev`, at most.
const MAX_IOVECS: usize = 64;
/// Bytes offered per `writev`, about: more than a pipe takes at once.
const MAX_WRITE: usize = 256 * 1024;

/// One program's stdin, handed to the feeder when the program starts.
pub struct Stdin {
    /// The write end of its stdin pipe.
    pub pipe: ChildStdin,
    /// Resolves (sent or dropped) once the program and its process group are gone: nothing
    /// reads the pipe any more, so what it holds is lost.
    pub gone: oneshot::Receiver<()>,
    /// Told when a write fails: the program stopped reading (it closed its stdin).
    pub stopped_reading: oneshot::Sender<io::Error>,
}

/// A record's line taken from the queue and not yet wholly in a pipe.
struct Line {
    /// The run it belongs to (shared bytes, no copy).
    run: Encoded,
    /// Where it is in the run's bytes.
    start: usize,
    end: usize,
    /// A record, not a notice of our own: counted.
    counts: bool,
    /// The run's last line: the run's room goes back to the queue once it is in the pipe.
    last: bool,
}

/// The queue and the lines taken from it, across programs.
pub struct Feeder {
    queue: QueueReader,
    /// Taken from the queue, not yet wholly written, oldest first.
    lines: VecDeque<Line>,
    /// Bytes of the first line already in the current program's pipe.
    offset: usize,
    unread: Unread,
    /// The queue is closed and empty: the sink is stopping.
    closed: bool,
}

/// How feeding one program ended.
enum End {
    /// Everything was written and read; the sink is stopping.
    Done,
    /// The program is gone.
    Gone,
    /// The sink's time to stop ran out.
    Stopped,
}

impl Feeder {
    /// A feeder of `queue`, counting into `stats`.
    pub fn new(queue: QueueReader, stats: Arc<SinkStats>) -> Feeder {
        Feeder {
            queue,
            lines: VecDeque::new(),
            offset: 0,
            unread: Unread::new(stats),
            closed: false,
        }
    }

    /// Feeds each program sent on `programs` until the queue is closed and read, the
    /// programs end, or `stop`. Lines still taken at the end are counted dropped when the
    /// queue's reader goes (`shutdown`).
    pub async fn run(mut self, mut programs: mpsc::Receiver<Stdin>, stop: CancellationToken) {
        loop {
            let program = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                program = programs.recv() => match program {
                    Some(program) => program,
                    None => break,
                },
            };
            match self.serve(program, &stop).await {
                End::Gone => continue,
                End::Done | End::Stopped => break,
            }
        }
    }

    async fn serve(&mut self, program: Stdin, stop: &CancellationToken) -> End {
        let Stdin {
            mut pipe,
            mut gone,
            stopped_reading,
        } = program;
        let mut stopped_reading = Some(stopped_reading);
        let end = loop {
            if self.lines.is_empty() {
                if self.closed && self.unread.is_empty() {
                    break End::Done;
                }
                let wait = if self.closed { DRAIN_POLL } else { SETTLE };
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break End::Stopped,
                    _ = &mut gone => break End::Gone,
                    round = self.queue.next_round(), if !self.closed => match round {
                        Some(round) => {
                            // A lapsed lease's records are not handed to the program.
                            let round = self.queue.drop_fenced(round);
                            self.take(&round)
                        }
                        None => self.closed = true,
                    },
                    () = tokio::time::sleep(wait), if !self.unread.is_empty() => self.check(&pipe),
                }
                continue;
            }
            let written = tokio::select! {
                biased;
                () = stop.cancelled() => break End::Stopped,
                _ = &mut gone => break End::Gone,
                written = write_some(&mut pipe, &self.lines, self.offset) => written,
            };
            match written {
                Ok(n) => {
                    self.advance(n);
                    self.check(&pipe);
                }
                Err(e) => {
                    // The program will be stopped and restarted; until it is gone, what
                    // it left in the pipe is not final.
                    if let Some(tell) = stopped_reading.take() {
                        let _ = tell.send(e);
                    }
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break End::Stopped,
                        _ = &mut gone => break End::Gone,
                    }
                }
            }
        };
        self.cut_line();
        let reason = match end {
            End::Stopped => DropReason::Shutdown,
            End::Done | End::Gone => DropReason::ProgramExited,
        };
        self.unread.settle(bytes_in_pipe(&pipe), reason);
        end
    }

    /// Splits the runs of a round into lines.
    fn take(&mut self, round: &[Encoded]) {
        for run in round {
            let counts = records(run) > 0;
            let bytes = run.bytes().as_ptr() as usize;
            let count = run.record_count();
            for (i, record) in run.records().enumerate() {
                let start = record.line.as_ptr() as usize - bytes;
                self.lines.push_back(Line {
                    run: run.clone(),
                    start,
                    end: start + record.line.len(),
                    counts,
                    last: i + 1 == count,
                });
            }
        }
    }

    /// The pipe took `n` more bytes.
    fn advance(&mut self, mut n: usize) {
        while let Some(line) = self.lines.front() {
            let rest = line.end - line.start - self.offset;
            if n < rest {
                self.offset += n;
                return;
            }
            n -= rest;
            self.offset = 0;
            if let Some(line) = self.lines.pop_front() {
                let len = line.end - line.start;
                self.went_in(&line, len, true);
            }
        }
    }

    /// The program is gone with the first line partly written: the part that went in is
    /// in the pipe, and the line is lost whatever the program read of it.
    fn cut_line(&mut self) {
        if self.offset > 0 {
            if let Some(line) = self.lines.pop_front() {
                self.went_in(&line, self.offset, false);
            }
            self.offset = 0;
        }
    }

    fn went_in(&mut self, line: &Line, len: usize, whole: bool) {
        if line.counts {
            self.queue.counted_elsewhere(1);
        }
        if line.last {
            self.queue.released_run(&line.run);
        }
        self.unread.push(InPipe {
            len,
            counts: line.counts,
            whole,
        });
    }

    /// Counts what the program has read so far.
    fn check(&mut self, pipe: &ChildStdin) {
        // FIONREAD does not fail on a pipe; should it, what went in counts as read, so
        // that what is kept stays bounded.
        self.unread.read_up_to(bytes_in_pipe(pipe).unwrap_or(0));
    }
}

/// One `writev` of the lines, the first from `offset`; lines of one run that follow each
/// other go as one slice.
async fn write_some(
    pipe: &mut ChildStdin,
    lines: &VecDeque<Line>,
    offset: usize,
) -> io::Result<usize> {
    let mut chunks: Vec<(&Encoded, usize, usize)> = Vec::new();
    let mut total = 0;
    for (i, line) in lines.iter().enumerate() {
        let start = if i == 0 {
            line.start + offset
        } else {
            line.start
        };
        total += line.end - start;
        let full = chunks.len() == MAX_IOVECS;
        match chunks.last_mut() {
            Some((run, _, end)) if *end == start && same(run, &line.run) => *end = line.end,
            _ if full => break,
            _ => chunks.push((&line.run, start, line.end)),
        }
        if total >= MAX_WRITE {
            break;
        }
    }
    let slices: Vec<IoSlice<'_>> = chunks
        .iter()
        .map(|(run, start, end)| IoSlice::new(&run.bytes()[*start..*end]))
        .collect();
    match pipe.write_vectored(&slices).await? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

fn same(a: &Encoded, b: &Encoded) -> bool {
    a.bytes().as_ptr() == b.bytes().as_ptr() && a.len() == b.len()
}
