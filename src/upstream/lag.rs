//! `wsbridge_upstream_lag_seconds`: how long after its source made it (`event_time`) each
//! message arrived, as a histogram with fixed bounds: counted per session without atomics
//! ([`LagCounts`]), added to the upstream's shared [`LagHistogram`] with each delivered batch,
//! and read as Prometheus buckets and as p50/p99 ([`quantile`]) for `/status`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds of the buckets, in seconds; one more bucket (+Inf) follows. From a
/// millisecond to five minutes: feeds on the same continent lag a few ms, a stalled
/// producer minutes.
pub const LAG_BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Buckets including +Inf.
pub const BUCKETS: usize = LAG_BOUNDS.len() + 1;

/// One session's lag observations since its last batch was delivered.
#[derive(Debug, Clone, Default)]
pub struct LagCounts {
    buckets: [u64; BUCKETS],
    sum_ms: i64,
    count: u64,
}

impl LagCounts {
    /// Counts one lag. A negative one (the source's clock ahead of ours) counts in the
    /// first bucket and lowers the sum, as Prometheus histograms do.
    pub fn observe(&mut self, lag_ms: i64) {
        let seconds = lag_ms as f64 / 1000.0;
        let bucket = LAG_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LAG_BOUNDS.len());
        self.buckets[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(lag_ms);
        self.count += 1;
    }
}

/// An upstream's lag histogram since it started, shared with the metrics.
#[derive(Debug, Default)]
pub struct LagHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ms: AtomicI64,
}

/// A reading of a [`LagHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct LagSnapshot {
    /// Observations per bucket (not cumulative), the last one +Inf.
    pub buckets: Vec<u64>,
    /// The sum of all lags, in seconds.
    pub sum_seconds: f64,
}

impl LagHistogram {
    /// Adds a session's counts and clears them.
    pub fn add(&self, counts: &mut LagCounts) {
        if counts.count == 0 {
            return;
        }
        for (shared, n) in self.buckets.iter().zip(counts.buckets) {
            if n > 0 {
                shared.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_ms.fetch_add(counts.sum_ms, Ordering::Relaxed);
        *counts = LagCounts::default();
    }

    /// The histogram now.
    pub fn snapshot(&self) -> LagSnapshot {
        LagSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// The `q` quantile (0..=1) of observations counted per bucket (`buckets`, not cumulative,
/// bounds [`LAG_BOUNDS`] then +Inf), interpolated inside its bucket as Prometheus'
/// `histogram_quantile` does; in +Inf it is the highest finite bound. `None` when empty.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        let upto = below + n;
        if *n > 0 && upto as f64 >= rank {
            let Some(upper) = LAG_BOUNDS.get(i) else {
                return LAG_BOUNDS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LAG_BOUNDS[i - 1] };
            let within = (rank - below as f64) / *n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below = upto;
    }
    LAG_BOUNDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_are_published_once() {
        let mut counts = LagCounts::default();
        for lag in [-5, 0, 1, 2, 40, 5_000, 1_000_000] {
            counts.observe(lag);
        }
        let shared = LagHistogram::default();
        shared.add(&mut counts);
        shared.add(&mut counts);
        let snap = shared.snapshot();
        assert_eq!(snap.buckets[0], 3, "negative, zero and 1 ms");
        assert_eq!(snap.buckets[1], 1, "2 ms");
        assert_eq!(snap.buckets[5], 1, "40 ms");
        assert_eq!(snap.buckets[11], 1, "5 s");
        assert_eq!(snap.buckets[16], 1, "beyond the last bound");
        assert_eq!(snap.buckets.iter().sum::<u64>(), 7);
        assert!((snap.sum_seconds - 1_005.038).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut buckets = vec![0u64; BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), None);
        buckets[5] = 100; // (0.025, 0.05]
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.0375).abs() < 1e-9, "{p50}");
        buckets[11] = 2; // (2.5, 5]
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!(p99 > 2.5 && p99 <= 5.0, "{p99}");
        buckets[16] = 1000;
        assert_eq!(quantile(&buckets, 0.99), Some(300.0));
    }
}
