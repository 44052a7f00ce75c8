//! Records whose upstream's lease is no longer proven (`[cluster]`, see [`crate::fence`])
//! are not written: every consumer of a queue checks right before writing or publishing,
//! and counts what it refuses as dropped, `fenced`.

use super::queue::{records, QueueReader};
use super::{DropReason, Encoded};

/// Why a run was refused, for the rate-limited warning.
pub fn why(run: &Encoded) -> String {
    format!(
        "the lease of upstream {} is no longer proven; its records are not written",
        run.upstream().unwrap_or("?")
    )
}

impl QueueReader {
    /// Settles the runs of `round` that may no longer be written (counted dropped,
    /// `fenced`, their room given back) and returns the others, in order.
    pub fn drop_fenced(&mut self, round: Vec<Encoded>) -> Vec<Encoded> {
        if round.iter().all(Encoded::may_write) {
            return round;
        }
        let mut kept = Vec::with_capacity(round.len());
        for run in round {
            if run.may_write() {
                kept.push(run);
            } else {
                self.settled_run(&run, records(&run), DropReason::Fenced, &why(&run));
            }
        }
        kept
    }
}
