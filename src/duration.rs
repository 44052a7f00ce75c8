//! Durations as people read them in logs and messages: `571ms`, `1s 250ms`, never
//! `571ms 672us 990ns` (a jittered backoff delay, printed as it is).

use std::fmt;
use std::time::Duration;

/// `duration` rounded to the millisecond (below one, to the microsecond), in humantime's
/// format: `%wsbridge::duration::human(delay)` in a log field, `{}` in a message.
pub fn human(duration: Duration) -> impl fmt::Display {
    let nanos = duration.as_nanos();
    let rounded = if duration < Duration::from_millis(1) {
        u64::try_from((nanos + 500) / 1_000).map(Duration::from_micros)
    } else {
        u64::try_from((nanos + 500_000) / 1_000_000).map(Duration::from_millis)
    };
    humantime::format_duration(rounded.unwrap_or(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(nanos: u64) -> String {
        human(Duration::from_nanos(nanos)).to_string()
    }

    #[test]
    fn rounds_to_the_millisecond() {
        assert_eq!(shown(571_672_990), "572ms");
        assert_eq!(shown(571_499_999), "571ms");
        assert_eq!(shown(1_250_400_000), "1s 250ms");
        assert_eq!(shown(5_000_000_000), "5s");
        assert_eq!(shown(0), "0s");
    }

    #[test]
    fn below_a_millisecond_keeps_microseconds() {
        assert_eq!(shown(250_400), "250us");
        assert_eq!(shown(999_600), "1ms");
    }

    #[test]
    fn very_long_durations_are_shown_whole() {
        let long = Duration::MAX;
        assert_eq!(
            human(long).to_string(),
            humantime::format_duration(long).to_string()
        );
    }
}
