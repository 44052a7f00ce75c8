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
        let keep = self.settle_fenced(&round);
        round
            .into_iter()
            .zip(keep)
            .filter_map(|(run, kept)| kept.then_some(run))
            .collect()
    }

    /// Settles the runs that may no longer be written, as [`QueueReader::drop_fenced`]
    /// does, and says of each run whether it is kept: for a consumer that keeps more than
    /// the runs themselves (a redis round, the entry IDs of their records).
    pub fn settle_fenced(&mut self, runs: &[Encoded]) -> Vec<bool> {
        runs.iter()
            .map(|run| {
                // Checked once per run: a lease can lapse between two checks.
                let kept = run.may_write();
                if !kept {
                    self.settled_run(run, records(run), DropReason::Fenced, &why(run));
                }
                kept
            })
            .collect()
    }
}
