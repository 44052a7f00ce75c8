//! A lease's proof, as the data path reads it: a [`Fence`] says until when this instance
//! can prove it holds one upstream's lease, on a clock that keeps running while the process
//! is stopped (SIGSTOP) or the machine sleeps. The lease task ([`crate::cluster`]) makes one
//! per lease taken, moves it forward on each renewal the server acknowledged, and revokes it
//! when the lease is lost or handed back; a fence once lapsed never holds again (a lease
//! taken anew gets a new fence), so records received under an old lease are never published
//! under a later one.
//!
//! The upstream task hands its batches to the hub with its fence; the hub, the sinks' driver,
//! their writers and the broker publishers check it right before handing records on, and
//! count what it refuses (`fenced`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A point on the fence clock, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    /// Now. `CLOCK_BOOTTIME` on Linux: monotonic, and counting time the machine spent
    /// suspended (a process stopped by SIGSTOP sees every clock move on anyway).
    pub fn now() -> Stamp {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = rustix::time::ClockId::Boottime;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = rustix::time::ClockId::Monotonic;
        let t = rustix::time::clock_gettime(id);
        let nanos = (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64);
        // 0 means "revoked" in a fence.
        Stamp(nanos.max(1))
    }

    /// `d` later.
    pub fn after(self, d: Duration) -> Stamp {
        Stamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// Until when one lease is proven.
#[derive(Debug)]
pub struct Fence {
    /// The end of the proof on the [`Stamp`] clock; 0 once revoked.
    until: AtomicU64,
    revoked: Notify,
}

/// Fences compare by identity: each lease taken has its own.
impl PartialEq for Fence {
    fn eq(&self, other: &Fence) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Fence {}

impl Fence {
    /// A fence proven until `until`.
    pub fn new(until: Stamp) -> Arc<Fence> {
        Arc::new(Fence {
            until: AtomicU64::new(until.0),
            revoked: Notify::new(),
        })
    }

    /// Whether the lease is proven now.
    pub fn holds(&self) -> bool {
        Stamp::now().0 < self.until.load(Ordering::Acquire)
    }

    /// How long it still holds; `None` once lapsed.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        let now = Stamp::now().0;
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Moves the proof forward to `until` (a renewal acknowledged); false, changing
    /// nothing, if it has lapsed already: this process may have been paused meanwhile, and
    /// what it received since cannot be proven.
    pub fn extend(&self, until: Stamp) -> bool {
        let mut current = self.until.load(Ordering::Acquire);
        loop {
            if Stamp::now().0 >= current {
                return false;
            }
            if until.0 <= current {
                return true;
            }
            match self
                .until
                .compare_exchange(current, until.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// The lease is lost or handed back: it never holds again.
    pub fn revoke(&self) {
        self.until.store(0, Ordering::Release);
        self.revoked.notify_waiters();
    }

    /// Resolves once the fence no longer holds (lapsed or revoked).
    pub async fn lapsed(&self) {
        loop {
            let revoked = self.revoked.notified();
            tokio::pin!(revoked);
            revoked.as_mut().enable();
            let Some(left) = self.remaining() else {
                return;
            };
            tokio::select! {
                _ = revoked => {}
                // Read again on waking: a renewal may have moved it.
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// Whether records under `fence` may be handed on: always without one (no `[cluster]`).
pub fn holds(fence: Option<&Arc<Fence>>) -> bool {
    fence.is_none_or(|f| f.holds())
}

/// Resolves once `fence` lapses; never without one.
pub async fn lapsed(fence: Option<&Arc<Fence>>) {
    match fence {
        Some(f) => f.lapsed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_fence_never_holds_again() {
        let fence = Fence::new(Stamp::now().after(Duration::from_secs(60)));
        assert!(fence.holds());
        assert!(fence.extend(Stamp::now().after(Duration::from_secs(120))));
        fence.revoke();
        assert!(!fence.holds());
        assert!(!fence.extend(Stamp::now().after(Duration::from_secs(120))));
        assert!(!fence.holds());
        let past = Fence::new(Stamp::now());
        assert!(!past.holds());
        assert!(!past.extend(Stamp::now().after(Duration::from_secs(60))));
    }

    #[tokio::test]
    async fn lapsed_resolves_at_the_deadline_and_on_revoke() {
        let fence = Fence::new(Stamp::now().after(Duration::from_millis(50)));
        tokio::time::timeout(Duration::from_secs(5), fence.lapsed())
            .await
            .expect("lapsed at its deadline");
        let fence = Fence::new(Stamp::now().after(Duration::from_secs(60)));
        let waiting = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.lapsed().await })
        };
        tokio::task::yield_now().await;
        fence.revoke();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("lapsed on revoke")
            .unwrap();
        assert!(holds(None));
    }
}
