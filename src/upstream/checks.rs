//! The feed checks of one connection (`sequence`, `on_gap`, `event_time`): the message's
//! own sequence number against the previous one, and its lag behind the source's clock.
//!
//! Both jq programs run on the upstream task, once per text message: a plain path (`.u`) is
//! read straight from the text ([`Program::path_value`]), any other program runs on one parse
//! of its JSON. Numbering is per connection: the first message of a connection may start anywhere.
//! A number more than one above the previous is a gap (a `gap` record goes ahead of the
//! message); one equal to or below it is a repeat (counted, still delivered). The previous
//! number only grows, so a message arriving late is a repeat, not the start of a new run.
//!
//! A program with no output skips the message (`select(...)` picks the numbered ones); one
//! that fails, gives something that is not a number (or a time), or a message that is not
//! JSON, counts as an error and is logged at a bounded rate, never as a gap.

use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use tracing::warn;

use super::lag::LagCounts;
use super::stats::UpstreamStats;
use crate::config::{FeedChecks, OnGap};
use crate::jq::{self, Program, Value};
use crate::throttle::Throttled;

/// Event times above this are Unix milliseconds, below it seconds (1e11 s is the year 5138;
/// 1e11 ms is 1973).
const MILLIS_ABOVE: f64 = 1e11;

/// A gap: the number that should have come, and the one that did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The previous number + 1.
    pub expected: i64,
    /// The message's number.
    pub got: i64,
}

/// What the checks found in one message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// A gap before this message.
    pub gap: Option<Gap>,
    /// Receive time minus event time, when `event_time` gave one.
    pub lag_ms: Option<i64>,
}

/// The checks' state on one connection, and what they counted since the last publish.
#[derive(Debug)]
pub struct FeedChecker {
    sequence: Option<Program>,
    on_gap: OnGap,
    event_time: Option<Program>,
    /// The highest number seen on this connection.
    last: Option<i64>,
    /// A gap seen with `on_gap = "reconnect"`: the session closes once it is delivered.
    pub(super) reconnect: Option<Gap>,
    /// Counted since the last publish.
    pub(super) gaps: u64,
    pub(super) repeats: u64,
    pub(super) sequence_errors: u64,
    pub(super) event_time_errors: u64,
    pub(super) lag: LagCounts,
    sequence_failures: Throttled,
    time_failures: Throttled,
    /// Gaps not yet in a warning: the log says so too, where no record does (`connect`
    /// writing payloads only).
    gap_warnings: Throttled,
}

impl FeedChecker {
    /// The state for a new connection; `None` when nothing is checked.
    pub fn new(checks: &FeedChecks) -> Option<FeedChecker> {
        checks.any().then(|| FeedChecker {
            sequence: checks.sequence.clone(),
            on_gap: checks.on_gap,
            event_time: checks.event_time.clone(),
            last: None,
            reconnect: None,
            gaps: 0,
            repeats: 0,
            sequence_errors: 0,
            event_time_errors: 0,
            lag: LagCounts::default(),
            sequence_failures: Throttled::default(),
            time_failures: Throttled::default(),
            gap_warnings: Throttled::default(),
        })
    }

    /// Runs the checks on a text message received at `received_ms` (Unix ms).
    pub fn see(&mut self, text: &[u8], received_ms: u64) -> Seen {
        // Read as jq values only if a program needs it, and then once.
        let mut parsed = None;
        let mut seen = Seen::default();
        if let Some(program) = &self.sequence {
            match output(program, text, &mut parsed).map(|v| v.map(|v| sequence_number(&v))) {
                Output::Ran(Ok(None)) => {}
                Output::Ran(Ok(Some(Some(n)))) => seen.gap = self.number(n),
                Output::Ran(Ok(Some(None))) => {
                    self.sequence_failed("the program's output is not an integer")
                }
                Output::Ran(Err(e)) => self.sequence_failed(&e.0),
                Output::NotJson => self.sequence_failed(NOT_JSON),
            }
        }
        if let Some(program) = &self.event_time {
            match output(program, text, &mut parsed).map(|v| v.map(|v| event_millis(&v))) {
                Output::Ran(Ok(None)) => {}
                Output::Ran(Ok(Some(Some(event_ms)))) => {
                    let lag = (received_ms as f64 - event_ms).round();
                    let lag = lag.clamp(i64::MIN as f64, i64::MAX as f64) as i64;
                    self.lag.observe(lag);
                    seen.lag_ms = Some(lag);
                }
                Output::Ran(Ok(Some(None))) => self.time_failed(
                    "the program's output is not a time (Unix ms or s, or an RFC 3339 string)",
                ),
                Output::Ran(Err(e)) => self.time_failed(&e.0),
                Output::NotJson => self.time_failed(NOT_JSON),
            }
        }
        seen
    }

    /// Adds what was counted since the last publish to the upstream's counters.
    pub(super) fn publish(&mut self, stats: &UpstreamStats) {
        for (shared, n) in [
            (&stats.gaps, &mut self.gaps),
            (&stats.repeats, &mut self.repeats),
            (&stats.sequence_errors, &mut self.sequence_errors),
            (&stats.event_time_errors, &mut self.event_time_errors),
        ] {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        stats.lag.add(&mut self.lag);
    }

    /// Why the session ends with `on_gap = "reconnect"`, once a gap asked for it.
    pub(super) fn resubscribe_reason(&self) -> Option<String> {
        self.reconnect.map(|gap| {
            format!(
                "sequence gap (expected {}, got {}); reconnecting to subscribe again (on_gap = \"reconnect\")",
                gap.expected, gap.got
            )
        })
    }

    /// Takes the message's number `n`: a gap, a repeat, or the next one.
    fn number(&mut self, n: i64) -> Option<Gap> {
        let Some(last) = self.last else {
            self.last = Some(n);
            return None;
        };
        if n <= last {
            self.repeats += 1;
            return None;
        }
        self.last = Some(n);
        let expected = last.saturating_add(1);
        if n == expected {
            return None;
        }
        self.gaps += 1;
        let gap = Gap { expected, got: n };
        if let Some(gaps) = self.gap_warnings.due() {
            warn!(expected, got = n, gaps, "the feed skipped sequence numbers");
        }
        if self.on_gap == OnGap::Reconnect && self.reconnect.is_none() {
            self.reconnect = Some(gap);
        }
        Some(gap)
    }

    fn sequence_failed(&mut self, error: &str) {
        self.sequence_errors += 1;
        if let Some(failed) = self.sequence_failures.due() {
            warn!(
                error,
                failed, "sequence could not read a number from a message; it is not checked"
            );
        }
    }

    fn time_failed(&mut self, error: &str) {
        self.event_time_errors += 1;
        if let Some(failed) = self.time_failures.due() {
            warn!(
                error,
                failed, "event_time could not read a time from a message; it has no lag_ms"
            );
        }
    }
}

const NOT_JSON: &str = "the message is not JSON";

/// What a program made of one message.
enum Output<T> {
    /// Its first output, if any, or its error.
    Ran(Result<Option<T>, jq::RunError>),
    /// The message is not JSON: nothing to run on.
    NotJson,
}

impl<T> Output<T> {
    fn map<U>(self, f: impl FnOnce(Option<T>) -> Option<U>) -> Output<U> {
        match self {
            Output::Ran(result) => Output::Ran(result.map(f)),
            Output::NotJson => Output::NotJson,
        }
    }
}

/// The first output of `program` on the message `text`: read straight from the text for a
/// plain path that is there, else run on the message read as jq values (`parsed`, read on
/// first use and kept for the next program).
fn output(program: &Program, text: &[u8], parsed: &mut Option<Option<Value>>) -> Output<Value> {
    if let Some(value) = program.path_value(text) {
        return Output::Ran(Ok(Some(value)));
    }
    match parsed.get_or_insert_with(|| jq::parse_json(text)) {
        Some(input) => Output::Ran(first_output(program, input.clone())),
        None => Output::NotJson,
    }
}

/// The program's first output, if any.
fn first_output(program: &Program, input: Value) -> Result<Option<Value>, jq::RunError> {
    let mut first = None;
    program.run(input, |v| {
        if first.is_none() {
            first = Some(v);
        }
    })?;
    Ok(first)
}

/// An integer, or a string holding one (some feeds send their numbers as strings).
fn sequence_number(value: &Value) -> Option<i64> {
    match value {
        Value::Num(n) => match n.as_isize() {
            Some(i) => Some(i as i64),
            None => number(value)
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64),
        },
        Value::TStr(text) => std::str::from_utf8(text).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON number as a float.
fn number(value: &Value) -> Option<f64> {
    use jaq_json::Num;
    match value {
        Value::Num(Num::Int(i)) => Some(*i as f64),
        Value::Num(Num::Float(f)) => Some(*f),
        Value::Num(Num::Dec(text)) => text.parse().ok(),
        Value::Num(Num::BigInt(_)) => None,
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// An event time as Unix milliseconds: a number (above [`MILLIS_ABOVE`] milliseconds, else
/// seconds; fractions allowed), a string holding one, or an RFC 3339 string.
fn event_millis(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Num(_) => number(value)?,
        Value::TStr(text) => {
            let text = std::str::from_utf8(text).ok()?.trim();
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => n,
                _ => return rfc3339_millis(text),
            }
        }
        _ => return None,
    };
    Some(if n.abs() > MILLIS_ABOVE {
        n
    } else {
        n * 1000.0
    })
}

/// An RFC 3339 time (`2024-05-01T12:00:00.123Z`, or with an offset such as `+02:00`) as Unix
/// milliseconds.
fn rfc3339_millis(text: &str) -> Option<f64> {
    // humantime reads UTC only: an offset is taken off by hand.
    let (utc, offset) = match text
        .len()
        .checked_sub(6)
        .and_then(|at| Some((at, text.get(at..)?)))
    {
        Some((at, tail)) if matches!(tail.as_bytes(), [b'+' | b'-', _, _, b':', _, _]) => {
            let hours: i64 = tail.get(1..3)?.parse().ok()?;
            let minutes: i64 = tail.get(4..6)?.parse().ok()?;
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (
                format!("{}Z", text.get(..at)?),
                sign * (hours * 60 + minutes),
            )
        }
        _ => (text.to_string(), 0),
    };
    let time = humantime::parse_rfc3339(&utc).ok()?;
    let millis = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64() * 1000.0,
        Err(before) => -(before.duration().as_secs_f64() * 1000.0),
    };
    // 12:00+02:00 is 10:00Z.
    Some(millis - (offset * 60_000) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(sequence: Option<&str>, on_gap: OnGap, event_time: Option<&str>) -> FeedChecker {
        let compile = |p: &str| Program::compile(p).expect("compiles");
        FeedChecker::new(&FeedChecks {
            sequence: sequence.map(compile),
            on_gap,
            event_time: event_time.map(compile),
        })
        .expect("something is checked")
    }

    #[test]
    fn gaps_and_repeats_per_connection() {
        let mut c = checker(Some(".u"), OnGap::Record, None);
        let mut gaps = Vec::new();
        for u in (5..10).chain(12..14).chain([13, 11, 14, 15]) {
            if let Some(gap) = c.see(format!(r#"{{"u":{u}}}"#).as_bytes(), 0).gap {
                gaps.push((gap.expected, gap.got));
            }
        }
        assert_eq!(gaps, [(10, 12)], "the first number starts anywhere");
        assert_eq!((c.gaps, c.repeats, c.sequence_errors), (1, 2, 0));
        assert_eq!(c.reconnect, None);
    }

    #[test]
    fn what_is_not_a_number_is_an_error_and_no_output_is_skipped() {
        let mut c = checker(Some(r#"select(.e == "d") | .u"#), OnGap::Reconnect, None);
        assert_eq!(c.see(br#"{"e":"d","u":"7"}"#, 0), Seen::default());
        assert_eq!(c.see(br#"{"e":"heartbeat"}"#, 0), Seen::default());
        c.see(br#"{"e":"d","u":null}"#, 0);
        c.see(br#"{"e":"d","u":1.5}"#, 0);
        c.see(b"not json", 0);
        assert_eq!(c.sequence_errors, 3);
        let seen = c.see(br#"{"e":"d","u":9}"#, 0);
        assert_eq!(
            seen.gap,
            Some(Gap {
                expected: 8,
                got: 9
            })
        );
        assert_eq!(c.reconnect, seen.gap);
    }

    #[test]
    fn event_times_in_ms_seconds_and_rfc3339() {
        let mut c = checker(None, OnGap::Record, Some(".E"));
        let now = 1_700_000_000_000u64;
        for (e, lag) in [
            ("1699999995000", 5_000),
            ("1699999995.5", 4_500),
            (r#""1699999999000""#, 1_000),
            (r#""2023-11-14T22:13:19.750Z""#, 250),
            (r#""2023-11-15T00:13:19+02:00""#, 1_000),
            (r#""2023-11-14T20:13:19.000-02:00""#, 1_000),
            ("1700000002000", -2_000),
        ] {
            let seen = c.see(format!(r#"{{"E":{e}}}"#).as_bytes(), now);
            assert_eq!(seen.lag_ms, Some(lag), "{e}");
        }
        assert_eq!(c.see(br#"{"E":"yesterday"}"#, now).lag_ms, None);
        assert_eq!(c.see(br#"{"E":true}"#, now).lag_ms, None);
        assert_eq!(c.event_time_errors, 2);
    }
}
