//! Why a record routed to a sink was not written: the `reason` label of
//! `wsbridge_sink_records_dropped_total`, its counters, and the rate-limited warning that
//! goes with every drop. Every path where a record can end without being written counts it
//! here, so `routed == written + dropped` once a sink's queues are empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::throttle::Throttled;

/// Why records were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The destination did not keep up (`on_slow = "drop"`, `"disconnect"`, or a sink that
    /// took nothing for `max_block`).
    Slow,
    /// The destination has no room left (a full disk, a full stream).
    Full,
    /// The program of an exec sink exited before reading them.
    ProgramExited,
    /// The instance could no longer prove it holds the upstream's lease.
    Fenced,
    /// Someone else wrote to the destination (a Redis stream moved past the entry's ID).
    OtherWriter,
    /// The destination refused the record (an HTTP 4xx, a Redis error on that entry).
    Rejected,
    /// The record is larger than the destination takes.
    TooLarge,
    /// Writing failed (a client that went away, an I/O error).
    Io,
    /// The sink was stopped (shutdown, reload) before it could write them within
    /// `shutdown_timeout`.
    Shutdown,
}

impl DropReason {
    /// Every reason, in the order of the counters.
    pub const ALL: [DropReason; 9] = [
        DropReason::Slow,
        DropReason::Full,
        DropReason::ProgramExited,
        DropReason::Fenced,
        DropReason::OtherWriter,
        DropReason::Rejected,
        DropReason::TooLarge,
        DropReason::Io,
        DropReason::Shutdown,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Slow => "slow",
            DropReason::Full => "full",
            DropReason::ProgramExited => "program_exited",
            DropReason::Fenced => "fenced",
            DropReason::OtherWriter => "other_writer",
            DropReason::Rejected => "rejected",
            DropReason::TooLarge => "too_large",
            DropReason::Io => "io",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// Dropped records by reason, with one throttled warning per reason.
#[derive(Debug, Default)]
pub struct Drops {
    counts: [AtomicU64; 9],
    warnings: Mutex<[Throttled; 9]>,
}

impl Drops {
    /// Counts `records` dropped for `reason` and logs a warning naming the sink, at most
    /// once per [`crate::throttle::WARN_EVERY`] per reason (with the count since the last).
    pub fn add(&self, sink: &str, reason: DropReason, records: u64, why: &dyn std::fmt::Display) {
        if records == 0 {
            return;
        }
        let i = reason.index();
        self.counts[i].fetch_add(records, Ordering::Relaxed);
        let due = match self.warnings.lock() {
            Ok(mut warnings) => warnings[i].due_n(records),
            Err(_) => Some(records),
        };
        if let Some(dropped) = due {
            tracing::warn!(
                sink,
                reason = reason.label(),
                dropped,
                "records dropped: {why}"
            );
        }
    }

    /// Records dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Records dropped for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The non-zero counts, by label.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.label(), self.get(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let drops = Drops::default();
        drops.add("s", DropReason::Slow, 3, &"slow");
        drops.add("s", DropReason::Io, 2, &"io");
        drops.add("s", DropReason::Slow, 1, &"slow");
        drops.add("s", DropReason::Fenced, 0, &"none");
        assert_eq!(drops.get(DropReason::Slow), 4);
        assert_eq!(drops.total(), 6);
        assert_eq!(drops.by_reason(), vec![("slow", 4), ("io", 2)]);
    }
}
