//! How setting values are written and the ranges they are held to: durations shared by the
//! file and the command line, and the limits that keep an absurd value from reaching `run`.

use std::time::Duration;

/// The largest `buffer`, `send_queue` and `max_clients`: queues are sized from them, and
/// tokio's semaphores panic above their own limit, which is far higher.
pub const MAX_QUEUE: usize = 1 << 20;

/// The largest `buffer_bytes`: per client, so 64 clients at the cap hold 64 GiB.
pub const MAX_BUFFER_BYTES: usize = 1 << 30;

/// A sink's `buffer` when the file does not set it.
pub const DEFAULT_BUFFER: usize = 4096;

/// A sink's `buffer_bytes` when the file does not set it.
pub const DEFAULT_BUFFER_BYTES: usize = 16 << 20;

/// A nats or redis sink's `buffer` (bytes) when the file does not set it.
pub const DEFAULT_BROKER_BUFFER: usize = 64 << 20;

/// A unix or tcp sink's `max_clients` when the file does not set it.
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// The longest duration a setting takes: far beyond any sensible timeout or interval, and
/// short enough that no deadline computed from it (`now + 2 × timeout`) can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parses a duration setting ("500ms", "20s", "5m"), at most [`MAX_DURATION`]; the config
/// file and the command line share it, so both say the same about a bad one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it like \"500ms\", \"20s\" or \"5m\"")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than wsbridge takes (at most 365 days); use a shorter duration"
        ));
    }
    Ok(duration)
}
