//! The lines in a program's stdin pipe that it may not have read yet, and the counting of
//! them: written once the program has read them, dropped (`program_exited`) if it went
//! without reading them.
//!
//! A pipe is first in, first out and the exec sink is its only writer, so when it holds
//! `n` bytes (Linux tells, `FIONREAD`) they are the last `n` bytes written: every line
//! before them was read. The lines kept here are those bytes and no more, so they are
//! bounded by the pipe's capacity.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::sink::{DropReason, SinkStats};

/// One line the pipe took.
#[derive(Debug, Clone, Copy)]
pub struct InPipe {
    /// Its bytes in the pipe.
    pub len: usize,
    /// A record, not a notice of our own: counted.
    pub counts: bool,
    /// All of it went in; a line cut by a failed write is lost even if read.
    pub whole: bool,
}

/// The lines the pipe took that are not known read, oldest first.
#[derive(Debug)]
pub struct Unread {
    lines: VecDeque<InPipe>,
    bytes: u64,
    stats: Arc<SinkStats>,
}

/// How many bytes the pipe behind `fd` still holds.
pub fn bytes_in_pipe(fd: impl AsFd) -> Option<u64> {
    rustix::io::ioctl_fionread(fd).ok()
}

impl Unread {
    /// Nothing unread, counting into `stats`.
    pub fn new(stats: Arc<SinkStats>) -> Unread {
        Unread {
            lines: VecDeque::new(),
            bytes: 0,
            stats,
        }
    }

    /// Whether every line the pipe took is known read.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The pipe took `line`.
    pub fn push(&mut self, line: InPipe) {
        self.bytes += line.len as u64;
        self.lines.push_back(line);
    }

    /// The pipe holds `left` bytes: the lines before them were read, and are counted.
    pub fn read_up_to(&mut self, left: u64) {
        let (mut written, mut cut) = (0, 0);
        while let Some(line) = self.lines.front().copied() {
            if self.bytes - line.len as u64 >= left {
                self.bytes -= line.len as u64;
                self.lines.pop_front();
                match (line.counts, line.whole) {
                    (false, _) => {}
                    (true, true) => written += 1,
                    (true, false) => cut += 1,
                }
            } else {
                break;
            }
        }
        self.stats
            .records_written
            .fetch_add(written, Ordering::Relaxed);
        self.stats.drop_records(
            DropReason::ProgramExited,
            cut,
            &"the program exited while a record was being written to it",
        );
    }

    /// Nothing will read the pipe any more, and it holds `left` bytes (`None`: unknown, so
    /// all of it): what was read is counted written, the rest dropped for `reason`.
    pub fn settle(&mut self, left: Option<u64>, reason: DropReason) {
        self.read_up_to(left.unwrap_or(self.bytes));
        let lost = self.lines.drain(..).filter(|l| l.counts).count() as u64;
        self.bytes = 0;
        let why = match reason {
            DropReason::ProgramExited => "the program exited without reading them from its stdin",
            _ => "the program had not read them from its stdin at shutdown",
        };
        self.stats.drop_records(reason, lost, &why);
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        // The sink was stopped (aborted at the end of shutdown_timeout) with lines in the pipe.
        self.settle(None, DropReason::Shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(len: usize) -> InPipe {
        InPipe {
            len,
            counts: true,
            whole: true,
        }
    }

    #[test]
    fn a_line_partly_unread_is_lost_and_those_before_it_written() {
        let stats = Arc::new(SinkStats::default());
        let mut unread = Unread::new(stats.clone());
        for len in [10, 10, 10] {
            unread.push(line(len));
        }
        unread.read_up_to(25);
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 0);
        unread.read_up_to(15);
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 1);
        unread.push(InPipe {
            len: 4,
            counts: true,
            whole: false,
        });
        // 9 bytes left: the third line (partly unread) and the cut one are lost.
        unread.settle(Some(9), DropReason::ProgramExited);
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 2);
        assert_eq!(stats.records_dropped(), 2);
        assert!(unread.is_empty());
    }
}
