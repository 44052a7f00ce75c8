//! A sink's `filter`: its jq program run on each record inside the sink's encoder, so every
//! sink type has it and the lines it makes keep their record's boundary, `seq` and `ts`.
//!
//! The program's input is the record as `parse_json = true` writes it (text holding JSON is
//! `"type":"json"` with the value in `data`), built by the one encoder of the wire format
//! and read back as a value. Each output is one line: with `format = "raw"` a string is
//! written as it is (as its JSON string when it holds a line break, so it stays one line),
//! any other value as compact JSON; with `ndjson` every output is compact JSON. No output
//! drops the record. A runtime error drops that record only, counts into
//! [`SinkStats::filter_errors`] and is logged at a bounded rate.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::warn;

use super::SinkStats;
use crate::config::Format;
use crate::jq::{self, Program};
use crate::record::{Encoding, Event};
use crate::throttle::Throttled;

/// Runs a sink's program on its records.
#[derive(Debug)]
pub struct RecordFilter {
    program: Program,
    /// How the program's input is made: the ndjson record with JSON text embedded.
    input: Encoding,
    /// Whether string outputs are written as they are.
    raw: bool,
    stats: Arc<SinkStats>,
    /// The record's line, reused.
    scratch: Vec<u8>,
    /// Failures not yet in a warning.
    failures: Throttled,
}

impl RecordFilter {
    /// A filter running `program` for a sink writing `format`, counting into `stats`.
    pub fn new(program: Program, format: Format, stats: Arc<SinkStats>) -> RecordFilter {
        RecordFilter {
            program,
            input: Encoding {
                format: Format::Ndjson,
                events: true,
                parse_json: true,
                binary_bytes: false,
            },
            raw: format == Format::Raw,
            stats,
            scratch: Vec::new(),
            failures: Throttled::default(),
        }
    }

    /// Appends the lines the program makes of `event` to `out`; returns whether it made any.
    /// On a runtime error nothing is appended.
    pub fn apply(&mut self, upstream: &str, event: &Event, out: &mut Vec<u8>) -> bool {
        self.scratch.clear();
        self.input.encode(upstream, event, &mut self.scratch);
        let Some(record) = jq::parse_json(&self.scratch) else {
            // Our own encoder's output is JSON; this would be a bug, so say so.
            self.failed("the record is not valid JSON (a bug: please report it)");
            return false;
        };
        let start = out.len();
        let raw = self.raw;
        let result = self.program.run(record, |value| {
            match jq::as_text(&value) {
                Some(text) if raw && !has_line_break(text) => out.extend_from_slice(text),
                _ => jq::write_compact(&value, out),
            }
            out.push(b'\n');
        });
        match result {
            Ok(()) => out.len() > start,
            Err(e) => {
                out.truncate(start);
                self.failed(&e.0);
                false
            }
        }
    }

    fn failed(&mut self, error: &str) {
        self.stats.filter_errors.fetch_add(1, Ordering::Relaxed);
        let Some(failed) = self.failures.due() else {
            return;
        };
        warn!(
            error,
            failed, "the sink's filter failed on a record; the record is dropped"
        );
    }
}

fn has_line_break(bytes: &[u8]) -> bool {
    memchr::memchr2(b'\n', b'\r', bytes).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventKind;

    fn text(seq: u64, data: &str) -> Event {
        Event {
            ts: 1000 + seq,
            kind: EventKind::Text {
                seq,
                data: data.into(),
            },
            lag_ms: None,
        }
    }

    fn lines(program: &str, format: Format, events: &[Event]) -> (String, u64) {
        let stats = Arc::new(SinkStats::default());
        let program = Program::compile(program).unwrap();
        let mut filter = RecordFilter::new(program, format, stats.clone());
        let mut out = Vec::new();
        for event in events {
            filter.apply("feed", event, &mut out);
        }
        (
            String::from_utf8(out).unwrap(),
            stats.filter_errors.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn csv_in_raw_format() {
        let events = [text(1, r#"{"price":1.5}"#), text(2, r#"{"price":2}"#)];
        let (out, errors) = lines(r#""\(.ts),\(.data.price)""#, Format::Raw, &events);
        assert_eq!(out, "1001,1.5\n1002,2\n");
        assert_eq!(errors, 0);
    }

    #[test]
    fn selects_projects_and_counts_errors() {
        let events = [
            text(1, r#"{"s":"BTC","p":1}"#),
            text(2, r#"{"s":"ETH","p":2}"#),
            text(3, "plain text"),
            text(4, r#"{"s":"BTC","p":"x"}"#),
        ];
        let (out, errors) = lines(
            r#"select(.data.s? == "BTC") | {seq, p: (.data.p + 1)}"#,
            Format::Ndjson,
            &events,
        );
        assert_eq!(out, "{\"seq\":1,\"p\":2}\n");
        assert_eq!(
            errors, 1,
            "the string + 1 fails; the plain text is not selected"
        );
    }

    #[test]
    fn strings_with_line_breaks_stay_one_line() {
        let (out, _) = lines(r#""a\nb", 5"#, Format::Raw, &[text(1, "x")]);
        assert_eq!(out, "\"a\\nb\"\n5\n");
        let (out, _) = lines(".data", Format::Ndjson, &[text(1, "x")]);
        assert_eq!(out, "\"x\"\n");
    }
}
