//! The record a failed write cut in two: its unwritten rest is kept as the output's `tail`
//! and written first once writing works again; if the file has to be left (rotation,
//! reload, shutdown) and the rest still does not fit, the file is cut back to its last
//! whole record and that record is counted as dropped. So no file ever ends in half a record.

use std::io::{self, Write as _};
use std::sync::atomic::Ordering;

use tracing::warn;

use super::Output;
use crate::sink::DropReason;

impl Output {
    /// A write failed at byte `at` of the staging buffer: keep the rest of the record it
    /// cut, if any; returns the error and how many records are written or kept.
    pub(super) fn cut(&mut self, at: usize, first: usize, e: io::Error) -> (io::Error, usize) {
        let whole = first + self.ends[first..].partition_point(|&end| end <= at);
        let record_start = if whole == 0 { 0 } else { self.ends[whole - 1] };
        if at > record_start {
            self.tail = self.staged[at..self.ends[whole]].to_vec();
            self.whole = self.size - (at - record_start) as u64;
            return (e, whole + 1);
        }
        (e, whole)
    }

    /// Writes the rest of the cut record, if any, before anything else; counts it written
    /// once it is whole.
    pub(super) fn write_tail(&mut self) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Err(io::ErrorKind::NotFound.into());
        };
        while !self.tail.is_empty() {
            match file.write(&self.tail) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tail.drain(..n);
                    self.size += n as u64;
                    if self.tail.is_empty() {
                        self.stats.records_written.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Before leaving the file: finish the cut record, or cut the file back to its last
    /// whole record (that record is then dropped).
    pub(super) fn settle_tail(&mut self) {
        if self.tail.is_empty() || self.write_tail().is_ok() {
            return;
        }
        if let Some(file) = &self.file {
            match file.set_len(self.whole) {
                Ok(()) => self.size = self.whole,
                Err(e) => {
                    warn!(file = %self.path.display(), error = %e, "cannot cut a half-written record off the end of the file")
                }
            }
        }
        self.drop_tail();
    }

    /// Forgets the cut record (it is counted as dropped).
    pub(super) fn drop_tail(&mut self) {
        if !self.tail.is_empty() {
            self.tail.clear();
            self.stats.drop_records(
                DropReason::Io,
                1,
                &"a record cut in two by a write error could not be finished",
            );
        }
    }
}
