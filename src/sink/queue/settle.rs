//! Settling a queue's runs one at a time, for consumers that keep what they took until a
//! server or a program says what became of each run (acknowledged, refused, or in a pipe):
//! each run gives its room back on its own, and its records are counted written or dropped
//! then, rather than a whole round at once by [`QueueReader::written`].

use std::sync::atomic::Ordering;

use super::QueueReader;
use crate::sink::{DropReason, Encoded};

impl QueueReader {
    /// One run taken earlier is done with: gives its room back. For a consumer that keeps
    /// runs until a server acknowledges them, so that `buffer` bounds what is queued plus
    /// what is awaiting acknowledgement; other consumers call [`QueueReader::written`].
    pub fn written_run(&mut self, run: &Encoded) {
        self.settled_run(run, 0, DropReason::Rejected, &"");
    }

    /// One run taken earlier is done with, `dropped` of its records not written (refused
    /// by the server, for `reason`): counts both and gives its room back.
    pub fn settled_run(
        &mut self,
        run: &Encoded,
        dropped: u64,
        reason: DropReason,
        why: &dyn std::fmt::Display,
    ) {
        self.settled_run_by(run, &[(reason, dropped, why)]);
    }

    /// Like [`QueueReader::settled_run`], with records dropped for several reasons.
    pub fn settled_run_by(
        &mut self,
        run: &Encoded,
        drops: &[(DropReason, u64, &dyn std::fmt::Display)],
    ) {
        if !self.released_run(run) {
            return;
        }
        let count = super::records(run).min(self.taken_records);
        self.taken_records -= count;
        let mut left = count;
        for (reason, dropped, why) in drops {
            let dropped = (*dropped).min(left);
            left -= dropped;
            self.stats.drop_records(*reason, dropped, *why);
        }
        self.stats
            .records_written
            .fetch_add(left, Ordering::Relaxed);
    }

    /// One run taken earlier has left the queue's bounds (all of it is in a program's pipe):
    /// gives its room back without counting its records (see [`QueueReader::counted_elsewhere`]).
    /// False if it was not taken (a run given twice must not inflate the room).
    pub fn released_run(&mut self, run: &Encoded) -> bool {
        let (records, permits) = self.room.cost(run);
        let (records, permits) = (records as usize, permits as usize);
        let bytes = run.len() as u64;
        if self.taken.0 < records || self.taken.1 < permits || self.taken.2 < bytes {
            return false;
        }
        self.taken.0 -= records;
        self.taken.1 -= permits;
        self.taken.2 -= bytes;
        self.return_room(records, permits, bytes);
        true
    }

    /// `records` taken earlier are now counted by the consumer itself (written or dropped
    /// once it knows which): they are no longer counted when this reader goes.
    pub fn counted_elsewhere(&mut self, records: u64) {
        self.taken_records -= records.min(self.taken_records);
    }
}
