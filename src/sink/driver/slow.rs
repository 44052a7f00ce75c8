//! What the driver does when a destination has no room: `on_slow`'s `drop` (count, and
//! tell the client once it catches up) and `block` (wait while it makes progress, at most
//! `max_block` without), and a lapsed lease's runs, which are dropped rather than waited for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::{Destination, Gone};
use crate::record::client_error_line;
use crate::sink::queue::{records, Offer};
use crate::sink::{fenced, DropReason, Encoded, SinkStats};

/// `on_slow = "drop"`: a full queue drops the run and counts its records; once the
/// destination has room again it first gets an error record saying how many it missed.
pub(super) fn offer_or_drop(
    destination: &mut Destination,
    run: &Encoded,
    sink: &str,
    stats: &SinkStats,
) -> Result<(), Gone> {
    let drop_run = |destination: &mut Destination| {
        destination.dropped += records(run);
        count_dropped(
            stats,
            run,
            DropReason::Slow,
            &"a client read too slowly (on_slow = \"drop\")",
        );
        Ok(())
    };
    if destination.dropped > 0 {
        if destination.queue.is_closed() {
            return Err(Gone);
        }
        if !destination.queue.has_room_to_resume(run) {
            return drop_run(destination);
        }
        let notice = Encoded::notice(client_error_line(
            None,
            &format!(
                "{} records were dropped because this client read too slowly (on_slow = \"drop\")",
                destination.dropped
            ),
        ));
        match destination.queue.offer(&notice) {
            Offer::Queued => {
                info!(
                    sink,
                    id = destination.id,
                    dropped = destination.dropped,
                    "slow client caught up"
                );
                destination.dropped = 0;
            }
            Offer::Full => return drop_run(destination),
            Offer::Gone => return Err(Gone),
        }
    }
    match destination.queue.offer(run) {
        Offer::Queued => Ok(()),
        Offer::Full => {
            warn!(
                sink,
                id = destination.id,
                "client too slow: dropping records for it (on_slow = \"drop\")"
            );
            drop_run(destination)
        }
        Offer::Gone => Err(Gone),
    }
}

/// `on_slow = "block"`: waits for room while the destination makes progress; one that took
/// nothing for `max_block` is not waited for (its runs dropped, counted `slow`) until it has
/// room again, so it cannot hold the upstreams, and with them the other sinks, for longer.
pub(super) async fn offer_blocking(
    destination: &mut Destination,
    run: &Encoded,
    max_block: Option<Duration>,
    sink: &str,
    stats: &SinkStats,
) -> Result<(), Gone> {
    if destination.stalled {
        return match destination.queue.offer(run) {
            Offer::Queued => {
                info!(
                    sink,
                    id = destination.id,
                    "the sink takes records again: blocking resumes"
                );
                destination.stalled = false;
                Ok(())
            }
            Offer::Full => {
                count_dropped(
                    stats,
                    run,
                    DropReason::Slow,
                    &"the sink takes nothing (max_block)",
                );
                Ok(())
            }
            Offer::Gone => Err(Gone),
        };
    }
    let Some(max_block) = max_block else {
        return match offer_fenced(destination, run, stats).await {
            Offer::Queued => Ok(()),
            _ => Err(Gone),
        };
    };
    loop {
        let progress = destination.queue.progress();
        match tokio::time::timeout(max_block, offer_fenced(destination, run, stats)).await {
            Ok(Offer::Queued) => return Ok(()),
            Ok(_) => return Err(Gone),
            // Still writing, only slowly: keep waiting.
            Err(_) if destination.queue.progress() != progress => continue,
            Err(_) => {
                warn!(
                    sink,
                    id = destination.id,
                    max_block = %crate::duration::human(max_block),
                    "the sink took nothing for max_block: dropping its records (counted) until it takes records again, so the upstream and its other sinks go on"
                );
                destination.stalled = true;
                count_dropped(
                    stats,
                    run,
                    DropReason::Slow,
                    &"the sink takes nothing (max_block)",
                );
                return Ok(());
            }
        }
    }
}

/// Waits for room for `run`, unless its lease lapses first: then it is dropped (counted,
/// `fenced`) and reported queued, as nothing more is to be done with it.
pub(super) async fn offer_fenced(
    destination: &Destination,
    run: &Encoded,
    stats: &SinkStats,
) -> Offer {
    tokio::select! {
        offer = destination.queue.offer_waiting(run) => offer,
        _ = run.fence_lapsed() => {
            count_dropped(stats, run, DropReason::Fenced, &fenced::why(run));
            Offer::Queued
        }
    }
}

/// A run routed to a destination and dropped (for being slow, or fenced).
pub(super) fn count_dropped(
    stats: &SinkStats,
    run: &Encoded,
    reason: DropReason,
    why: &dyn std::fmt::Display,
) {
    let n = records(run);
    stats.records_routed.fetch_add(n, Ordering::Relaxed);
    stats.drop_records(reason, n, why);
}
