//! Warnings that may repeat many times a second (a failing filter, a full disk, refused
//! clients): logged at most once per [`WARN_EVERY`], with how many times it happened since,
//! so a fault is visible without flooding the journal.

use std::time::{Duration, Instant};

/// At most one warning of a kind per this long.
pub const WARN_EVERY: Duration = Duration::from_secs(5);

/// One kind of warning and what happened since it was last logged.
#[derive(Debug, Default)]
pub struct Throttled {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl Throttled {
    /// Counts one occurrence; returns the count to log when a warning is due.
    pub fn due(&mut self) -> Option<u64> {
        self.due_n(1)
    }

    /// Counts `n` occurrences; returns the count to log when a warning is due.
    pub fn due_n(&mut self, n: u64) -> Option<u64> {
        self.unreported += n;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return None;
        }
        self.last_warning = Some(Instant::now());
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_and_the_rest_are_counted_until_the_next() {
        let mut t = Throttled::default();
        assert_eq!(t.due(), Some(1));
        assert_eq!(t.due(), None);
        assert_eq!(t.due_n(3), None);
        t.last_warning = Some(Instant::now() - WARN_EVERY);
        assert_eq!(t.due(), Some(5));
    }
}
