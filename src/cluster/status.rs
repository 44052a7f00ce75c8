//! What an operator sees of the cluster: which instance holds each upstream's slots, for how
//! long, and how often they changed hands (as this instance observed it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The cluster part of `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This instance's name.
    pub instance: String,
    /// Whether the NATS client is connected (its own view: it may not know yet that the
    /// server is gone).
    pub connected: bool,
    /// Seconds since the last lease round whose every request was answered: whether a
    /// round trip works now. Absent: none yet.
    #[serde(default)]
    pub last_round_trip_age_seconds: Option<f64>,
    /// The live instances, this one included.
    pub members: Vec<String>,
    /// One entry per lease slot, in config order.
    pub leases: Vec<LeaseStatus>,
    /// Leases this instance took.
    pub acquired: u64,
    /// Leases this instance handed back (rebalancing).
    pub released: u64,
    /// Leases this instance lost (not renewed in time, or taken by another).
    pub lost: u64,
}

/// One lease slot in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The upstream.
    pub upstream: String,
    /// Which of its `replicas`.
    pub slot: usize,
    /// The instance holding it, if any.
    pub holder: Option<String>,
    /// Seconds since its holder acquired it (by the holder's clock).
    pub age_seconds: Option<f64>,
    /// Times it passed from one instance to another, as seen by this one.
    pub handovers: u64,
}

/// The latest [`ClusterStatus`], written by the lease task each round.
#[derive(Debug, Default)]
pub struct ClusterView {
    current: Mutex<ClusterStatus>,
    /// When a round last completed, Unix ms (0: never); its age is taken when read.
    last_ok_ms: AtomicU64,
}

impl ClusterView {
    /// An empty view for `instance`.
    pub fn new(instance: &str) -> ClusterView {
        ClusterView {
            current: Mutex::new(ClusterStatus {
                instance: instance.to_string(),
                ..ClusterStatus::default()
            }),
            last_ok_ms: AtomicU64::new(0),
        }
    }

    /// The status now.
    pub fn get(&self) -> ClusterStatus {
        let mut status = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        status.last_round_trip_age_seconds =
            (last > 0).then(|| crate::record::unix_millis().saturating_sub(last) as f64 / 1000.0);
        status
    }

    /// A round's requests were all answered.
    pub(super) fn round_trip_ok(&self) {
        let now = crate::record::unix_millis();
        self.last_ok_ms.store(now, Ordering::Relaxed);
    }

    /// Changes the status.
    pub(super) fn update(&self, f: impl FnOnce(&mut ClusterStatus)) {
        f(&mut self.current.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
