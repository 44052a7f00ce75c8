//! Delays between reconnect attempts: capped exponential growth with jitter.

use std::time::Duration;

use rand::Rng;

use crate::config::ReconnectPolicy;

/// The backoff state of one upstream.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    /// Attempts that failed in a row since the last stable connection.
    failures: u32,
}

impl Backoff {
    /// A fresh backoff: the next delay is `initial`.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// Forget past failures after a connection that stayed up.
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
}
