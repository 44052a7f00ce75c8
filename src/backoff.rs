//! Delays between reconnect attempts: capped exponential growth with jitter, counted from
//! the last connection that stayed open `reset_after`.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::ReconnectPolicy;

/// The backoff state of one upstream.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    /// Attempts that failed in a row since the last stable connection. A connection that
    /// ended before `reset_after` counts as a failure, however much data it delivered: a
    /// server that sends an error and closes must not be reconnected to at `initial` forever.
    failures: u32,
    /// When the current connection opened.
    opened: Option<Instant>,
}

impl Backoff {
    /// A fresh backoff: the next delay is `initial`.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
            opened: None,
        }
    }

    /// A connection opened now.
    pub fn opened(&mut self) {
        self.opened = Some(Instant::now());
    }

    /// The connection ended now: if it stayed open `reset_after`, past failures are forgotten
    /// and the next delay is `initial` again.
    pub fn closed(&mut self) {
        if let Some(opened) = self.opened.take() {
            if opened.elapsed() >= self.policy.reset_after {
                self.reset();
            }
        }
    }

    /// Forget past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Attempts that failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns the delay before the next attempt, or `None` when
    /// `max_attempts` failures in a row mean we should give up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.policy.max_attempts > 0 && self.failures >= self.policy.max_attempts {
            return None;
        }
        let nominal = self.nominal(self.failures);
        let spread = if self.policy.jitter > 0.0 {
            rand::rng().random_range(-self.policy.jitter..=self.policy.jitter)
        } else {
            0.0
        };
        // Jitter may lower a capped delay but never raise it past the cap.
        Some(nominal.mul_f64(1.0 + spread).min(self.policy.max))
    }

    /// The delay before jitter after `failures` failures in a row (1 = the first).
    pub fn nominal(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let factor = self.policy.multiplier.powi(exponent);
        let secs = (self.policy.initial.as_secs_f64() * factor).min(self.policy.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64, max_attempts: u32) -> ReconnectPolicy {
        ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter,
            max_attempts,
            ..ReconnectPolicy::default()
        }
    }

    #[test]
    fn grows_exponentially_then_caps() {
        let mut b = Backoff::new(policy(0.0, 0));
        let delays: Vec<_> = (0..6)
            .map(|_| b.next_delay().unwrap().as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(policy(0.0, 0));
        b.next_delay();
        b.next_delay();
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(policy(0.2, 0));
            let d = b.next_delay().unwrap().as_millis();
            assert!((80..=120).contains(&d), "{d} ms is outside ±20 % of 100 ms");
            seen.insert(d);
        }
        assert!(seen.len() > 5, "jitter produced only {seen:?}");
        let mut b = Backoff::new(policy(0.2, 0));
        for _ in 0..10 {
            assert!(b.next_delay().unwrap() <= Duration::from_secs(1));
        }
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let mut b = Backoff::new(policy(0.0, 3));
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let b = Backoff::new(policy(0.0, 0));
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_that_stayed_open_reset_after_resets_the_count() {
        let step = |b: &mut Backoff| b.next_delay().unwrap().as_millis();
        let mut b = Backoff::new(policy(0.0, 0));
        assert_eq!(step(&mut b), 100);
        // Connections that close within reset_after (30 s) keep the count growing.
        for want in [200, 400, 800] {
            b.opened();
            tokio::time::advance(Duration::from_secs(29)).await;
            b.closed();
            assert_eq!(step(&mut b), want);
        }
        // One that stayed open 30 s starts over.
        b.opened();
        tokio::time::advance(Duration::from_secs(30)).await;
        b.closed();
        assert_eq!(step(&mut b), 100);
        // A failed attempt (no open) after it counts on from there.
        assert_eq!(step(&mut b), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_after_zero_resets_after_any_connection() {
        let mut b = Backoff::new(ReconnectPolicy {
            reset_after: Duration::ZERO,
            ..policy(0.0, 0)
        });
        b.next_delay();
        b.next_delay();
        b.opened();
        b.closed();
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
    }
}
