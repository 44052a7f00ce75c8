//! `fsync = DURATION`: when the file sink's thread syncs what it wrote to the disk, so that
//! a power loss takes at most that much.

use std::time::{Duration, Instant};

/// How long written bytes may wait for a sync.
pub struct Fsync {
    every: Option<Duration>,
    /// Bytes were written since the last sync, the first of them at this time.
    dirty_since: Option<Instant>,
}

impl Fsync {
    /// Syncing at most `every` after a write; `None`: never by itself (rotation, reload
    /// and shutdown sync anyway).
    pub fn new(every: Option<Duration>) -> Fsync {
        Fsync {
            every,
            dirty_since: None,
        }
    }

    /// Bytes were written.
    pub fn wrote(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Whether to sync now (then it counts as done): once bytes have waited half of
    /// `every`. Asked after each write and at least every half `every` (the ticks), so none
    /// waits longer than `every`.
    pub fn due(&mut self) -> bool {
        let due = match (self.every, self.dirty_since) {
            (Some(every), Some(since)) => since.elapsed() >= every / 2,
            _ => false,
        };
        if due {
            self.dirty_since = None;
        }
        due
    }
}
