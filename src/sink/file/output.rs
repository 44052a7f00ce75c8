//! The file sink's file as its thread sees it: appending rounds of records, rotating at
//! record boundaries, reopening, and carrying on through a full disk or a removed directory.
//!
//! A record is never split across files and never left half-written: a file rotates only
//! between records, and when a write fails in the middle of a record the rest of it is kept
//! and written first when writing works again (or, if the file has to be left, the file is
//! cut back to its last whole record). The records behind a failure are dropped and counted.
//! With `fsync`, what was written is synced to the disk at most that long after ([`Fsync`]);
//! otherwise on rotation, reload and shutdown.
//! The cut record's rest is kept and settled in `tail`.

mod tail;

use std::fs::File;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::fsync::Fsync;
use super::rotated::{sync_dir, Compressor, Rotated};
use super::RotatePolicy;
use super::{open_append, Encoded, SinkStats};
use crate::sink::DropReason;
use crate::throttle::Throttled;

/// The staging buffer keeps at most this much room between rounds.
const KEEP_CAPACITY: usize = 1 << 20;

/// The live file and what the thread knows about it.
pub struct Output {
    path: PathBuf,
    /// `None` while it cannot be opened (a removed directory).
    file: Option<File>,
    /// Bytes in the file.
    size: u64,
    /// The unwritten rest of a record a failed write cut.
    tail: Vec<u8>,
    /// The file's size before that record: where to cut it back to if the rest never fits.
    whole: u64,
    rotate: Option<RotatePolicy>,
    /// When the file rotates by time (`rotate.every`, on the clock's multiples of it).
    next_rotation: Option<SystemTime>,
    rotated: Option<Rotated>,
    compressor: Option<Compressor>,
    stats: Arc<SinkStats>,
    /// A round's records back to back, and where each ends.
    staged: Vec<u8>,
    ends: Vec<usize>,
    trouble: Trouble,
    fsync: Fsync,
}

/// Failing writes, reported at a bounded rate.
#[derive(Default)]
struct Trouble {
    /// Records dropped since writing last worked.
    dropped: u64,
    failing: bool,
    warnings: Throttled,
}

impl Output {
    /// The thread's view of `file`, open at `path`; prunes and compresses what earlier runs
    /// left rotated.
    pub fn new(
        path: PathBuf,
        file: File,
        rotate: Option<RotatePolicy>,
        fsync: Fsync,
        stats: Arc<SinkStats>,
    ) -> io::Result<Output> {
        let size = file.metadata()?.len();
        let rotated = rotate
            .as_ref()
            .map(|r| Rotated::new(&path, r.keep, r.compress));
        let compressor = match &rotated {
            Some(rotated) => {
                rotated.prune();
                rotated.start()?
            }
            None => None,
        };
        let next_rotation = next_boundary(rotate.as_ref());
        Ok(Output {
            path,
            file: Some(file),
            size,
            tail: Vec::new(),
            whole: size,
            rotate,
            next_rotation,
            rotated,
            compressor,
            stats,
            staged: Vec::new(),
            ends: Vec::new(),
            trouble: Trouble::default(),
            fsync,
        })
    }

    /// Appends the records of `runs`, rotating between them as `rotate.size` says.
    pub fn write(&mut self, runs: &[Encoded]) {
        self.staged.clear();
        self.ends.clear();
        for run in runs {
            for record in run.records() {
                self.staged.extend_from_slice(record.line);
                self.ends.push(self.staged.len());
            }
        }
        self.write_staged();
        if self.staged.capacity() > KEEP_CAPACITY {
            self.staged = Vec::new();
        }
        self.fsync.wrote();
        self.sync_if_due();
    }

    fn sync_if_due(&mut self) {
        if !self.fsync.due() {
            return;
        }
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_data() {
                self.report(&e, "cannot sync the file (fsync)");
            }
        }
    }

    fn write_staged(&mut self) {
        let total = self.ends.len();
        if let Err(e) = self.ready() {
            return self.failed(&e, total as u64);
        }
        let written = |output: &mut Self, n: usize| {
            output
                .stats
                .records_written
                .fetch_add(n as u64, Ordering::Relaxed);
        };
        let limit = self.rotate.as_ref().and_then(|r| r.size);
        let mut first = 0;
        while first < total {
            let start = if first == 0 { 0 } else { self.ends[first - 1] };
            // Whole records up to the size limit; a record larger than it goes alone.
            let mut end = total;
            if let Some(limit) = limit {
                end = first;
                while end < total
                    && (self.size + (self.ends[end] - start) as u64 <= limit
                        || (end == first && self.size == 0))
                {
                    end += 1;
                }
                if end == first {
                    if self.rotate_now() {
                        if self.file.is_none() {
                            let e = io::Error::from(io::ErrorKind::NotFound);
                            written(self, first);
                            return self.failed(&e, (total - first) as u64);
                        }
                        continue;
                    }
                    // Could not rotate: this file grows past the limit.
                    end = first + 1;
                }
            }
            if let Err((e, kept)) = self.append(first, end) {
                // A record cut in two is kept as the tail: written or dropped later.
                written(self, kept - usize::from(!self.tail.is_empty()));
                return self.failed(&e, (total - kept) as u64);
            }
            first = end;
        }
        written(self, total);
        self.recovered();
    }

    /// Writes records `first..end` of the staging buffer; on failure, the error and how
    /// many records are written or kept (as the tail of a cut one).
    fn append(&mut self, first: usize, end: usize) -> Result<(), (io::Error, usize)> {
        let start = if first == 0 { 0 } else { self.ends[first - 1] };
        let stop = self.ends[end - 1];
        let Some(file) = &mut self.file else {
            return Err((io::ErrorKind::NotFound.into(), first));
        };
        let mut at = start;
        while at < stop {
            match file.write(&self.staged[at..stop]) {
                Ok(0) => return Err(self.cut(at, first, io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    at += n;
                    self.size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.cut(at, first, e)),
            }
        }
        Ok(())
    }

    /// Makes the file ready for appending: a new one if it was deleted (`rm`, a removed
    /// directory), the tail of a cut record written, a rotation if it is time.
    fn ready(&mut self) -> io::Result<()> {
        if let Some(file) = &self.file {
            let deleted = rustix::fs::fstat(file).is_ok_and(|stat| stat.st_nlink == 0);
            if deleted {
                warn!(file = %self.path.display(), "the file was deleted; writing to a new one at its path");
                self.file = None;
                self.drop_tail();
            }
        }
        if self.file.is_none() {
            let file = open_append(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
            sync_dir(&self.path);
        }
        self.write_tail()?;
        if self.next_rotation.is_some_and(|at| SystemTime::now() >= at) {
            if self.size > 0 {
                self.rotate_now();
            }
            self.next_rotation = next_boundary(self.rotate.as_ref());
        }
        Ok(())
    }

    /// Renames the file to its rotated name and starts a new one; false if no new file
    /// was started.
    fn rotate_now(&mut self) -> bool {
        let Some(rotated) = self.rotated.clone() else {
            return false;
        };
        self.settle_tail();
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_all() {
                warn!(file = %self.path.display(), error = %e, "cannot sync the file before rotating it");
            }
        }
        let name = rotated.name_for(SystemTime::now());
        let renamed = match std::fs::rename(&self.path, &name) {
            Ok(()) => true,
            // Moved away by someone else: start the new file all the same.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                self.report(&e, "cannot rotate the file (rename)");
                return false;
            }
        };
        self.file = None;
        self.size = 0;
        match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map_or(0, |m| m.len());
                self.file = Some(file);
            }
            Err(e) => self.report(&e, "cannot create the new file after rotating"),
        }
        sync_dir(&self.path);
        if renamed {
            info!(file = %self.path.display(), rotated = %name.display(), "rotated");
            rotated.prune();
            if let Some(compressor) = &self.compressor {
                compressor.queue(name);
            }
        }
        true
    }

    /// A second passed: retry a cut record, reopen a deleted file, rotate if it is time.
    pub fn tick(&mut self) {
        self.sync_if_due();
        if self.file.is_none() && !self.trouble.failing {
            return;
        }
        match self.ready() {
            Ok(()) => self.recovered(),
            Err(e) => self.report(&e, "cannot write to the file"),
        }
    }

    /// Reload: the file at the path may be a new one (logrotate moved the old one away).
    pub fn reopen(&mut self) {
        self.settle_tail();
        if let Some(file) = self.file.take() {
            let _ = file.sync_all();
        }
        match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map_or(0, |m| m.len());
                self.file = Some(file);
                info!(file = %self.path.display(), "reopened the file (reload)");
            }
            Err(e) => self.report(&e, "cannot reopen the file"),
        }
    }

    /// The end: the cut record finished if it can be, the file synced, compression done.
    pub fn close(mut self) {
        self.settle_tail();
        if let Some(file) = self.file.take() {
            if let Err(e) = file.sync_all() {
                warn!(file = %self.path.display(), error = %e, "cannot sync the file at shutdown");
            }
        }
        if let Some(compressor) = self.compressor.take() {
            compressor.finish();
        }
    }

    /// `count` records could not be written: count them and report it.
    fn failed(&mut self, e: &io::Error, count: u64) {
        let reason = match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => DropReason::Full,
            _ => DropReason::Io,
        };
        self.stats.drop_records(reason, count, e);
        self.trouble.dropped += count;
        self.report(
            e,
            "cannot write to the file; records are dropped until it works again",
        );
    }

    fn report(&mut self, e: &io::Error, what: &str) {
        self.trouble.failing = true;
        if self.trouble.warnings.due().is_none() {
            return;
        }
        warn!(file = %self.path.display(), error = %e, dropped = self.trouble.dropped, "{what}; the other sinks go on; check the disk and the directory");
    }

    fn recovered(&mut self) {
        if self.trouble.failing {
            info!(file = %self.path.display(), dropped = self.trouble.dropped, "writing to the file again");
            self.trouble = Trouble::default();
        }
    }
}

/// The next multiple of `rotate.every` on the clock (so `every = "1h"` rotates on the hour).
fn next_boundary(rotate: Option<&RotatePolicy>) -> Option<SystemTime> {
    let every = rotate?.every?.as_secs().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(UNIX_EPOCH + Duration::from_secs((now / every + 1) * every))
}
