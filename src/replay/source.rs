//! Reading a recording: NDJSON files written by a file sink or `connect --ndjson`, plain or
//! gzipped (`.gz`), one line at a time, so a file of any size is served in bounded memory.
//!
//! [`scan`] reads the files once at start to learn which upstreams they hold (the paths the
//! server answers). [`play`] reads them again for each client, on a thread of its own, and
//! sends that upstream's text and binary messages with their time offsets into a bounded
//! channel: the client's pace is the reader's pace.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::ReplayError;

/// One record line, as much of it as replaying needs.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    upstream: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// What the files hold: the data messages of each upstream, and lines that are not records.
#[derive(Debug, Default)]
pub struct Index {
    /// Data messages per upstream name.
    pub upstreams: BTreeMap<String, u64>,
    /// Lines that are not NDJSON records (skipped when played).
    pub skipped: u64,
}

/// What a client's reader hands its sender.
#[derive(Debug)]
pub enum Item {
    /// A message and when it was received, in ms after the first message of this lap.
    Message {
        /// Offset from the lap's first message, never decreasing.
        offset_ms: u64,
        /// The message.
        message: Message,
    },
    /// `--loop`: the files start over; spacing restarts from here.
    Lap,
    /// Reading failed; the client is closed with this reason.
    Failed(String),
}

/// Opens a recording file, gunzipping `.gz` as it reads.
fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let gzipped = path.extension().is_some_and(|e| e == "gz");
    Ok(if gzipped {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::with_capacity(64 * 1024, file))
    })
}

/// Calls `each` with every line of `path` (without its newline).
fn for_each_line(path: &Path, mut each: impl FnMut(&[u8]) -> bool) -> Result<(), ReplayError> {
    let mut reader = open(path)?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReplayError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            return Ok(());
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if !each(line) {
            return Ok(());
        }
    }
}

fn is_data(kind: &str) -> bool {
    matches!(kind, "text" | "binary" | "json")
}

/// Reads every file once: which upstreams have data messages, and how many.
pub fn scan(files: &[PathBuf]) -> Result<Index, ReplayError> {
    let mut index = Index::default();
    for path in files {
        for_each_line(path, |line| {
            match serde_json::from_slice::<Line<'_>>(line) {
                Ok(record) if is_data(&record.kind) => {
                    *index
                        .upstreams
                        .entry(record.upstream.into_owned())
                        .or_default() += 1;
                }
                Ok(_) => {} // open/close/error events
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                Err(_) => index.skipped += 1,
            }
            true
        })?;
    }
    Ok(index)
}

/// The message a data record stands for; `None` if its data does not fit its type.
fn message(kind: &str, data: &RawValue) -> Option<Message> {
    match kind {
        "text" => serde_json::from_str::<String>(data.get())
            .ok()
            .map(Message::text),
        "binary" => {
            let text: std::borrow::Cow<'_, str> = serde_json::from_str(data.get()).ok()?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .ok()
                .map(Message::binary)
        }
        // Embedded as it came: its text is what the upstream sent.
        "json" => Some(Message::text(data.get().to_string())),
        _ => None,
    }
}

/// True when `line` is certainly not a record of `upstream`, seen without parsing it: it
/// opens as wsbridge's encoder writes records, `{"upstream":"NAME"`, with a NAME that has no
/// escapes and is not `upstream`. Anything else (other spacing, key order, escapes) answers
/// false and is left to the parse, so this shortcut never skips a line the parse would play.
fn surely_other_upstream(line: &[u8], upstream: &str) -> bool {
    const OPENING: &[u8] = b"{\"upstream\":\"";
    let Some(rest) = line.strip_prefix(OPENING) else {
        return false;
    };
    match memchr::memchr2(b'"', b'\\', rest) {
        Some(end) if rest[end] == b'"' => &rest[..end] != upstream.as_bytes(),
        _ => false,
    }
}

/// Sends `upstream`'s messages from `files` to `items` until the end (or for ever with
/// `looping`), or until the receiver is gone. Blocking: run it on a thread of its own.
pub fn play(files: &[PathBuf], upstream: &str, looping: bool, items: mpsc::Sender<Item>) {
    loop {
        let mut sent = 0u64;
        let mut first_ts: Option<u64> = None;
        let mut last_offset = 0;
        let mut gone = false;
        for path in files {
            let result = for_each_line(path, |line| {
                if surely_other_upstream(line, upstream) {
                    return true;
                }
                let Ok(record) = serde_json::from_slice::<Line<'_>>(line) else {
                    return true;
                };
                if record.upstream != upstream || !is_data(&record.kind) {
                    return true;
                }
                let Some(message) = record.data.and_then(|d| message(&record.kind, d)) else {
                    return true;
                };
                // A missing or earlier ts (clock step, files out of order) adds no delay.
                let ts = record.ts.unwrap_or(0);
                let first = *first_ts.get_or_insert(ts);
                last_offset = ts.saturating_sub(first).max(last_offset);
                sent += 1;
                let item = Item::Message {
                    offset_ms: last_offset,
                    message,
                };
                gone = items.blocking_send(item).is_err();
                !gone
            });
            if gone {
                return;
            }
            if let Err(e) = result {
                let _ = items.blocking_send(Item::Failed(e.to_string()));
                return;
            }
        }
        // Nothing to play would loop without end.
        if !looping || sent == 0 || items.blocking_send(Item::Lap).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the parse decides: the line is a record of `upstream`.
    fn parsed_as(line: &[u8], upstream: &str) -> bool {
        serde_json::from_slice::<Line<'_>>(line).is_ok_and(|r| r.upstream == upstream)
    }

    #[test]
    fn the_shortcut_skips_only_lines_of_other_upstreams() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"upstream":"other","seq":1,"type":"text","data":"x"}"#,
                true,
            ),
            (
                r#"{"upstream":"trades","seq":1,"type":"text","data":"x"}"#,
                false,
            ),
            (
                r#"{"upstream": "other", "type": "text", "data": "x"}"#,
                false,
            ),
            (
                r#"{"upstream":"tr\u0061des","type":"text","data":"x"}"#,
                false,
            ),
            (r#"{"type":"text","upstream":"other","data":"x"}"#, false),
            (r#"{"upstream":"trades"#, false),
        ];
        for (line, skipped) in cases {
            assert_eq!(
                surely_other_upstream(line.as_bytes(), "trades"),
                *skipped,
                "{line}"
            );
        }
        // A duplicate key is no record for the parse either.
        let twice = r#"{"upstream":"other","upstream":"trades","type":"text","data":"x"}"#;
        assert!(!parsed_as(twice.as_bytes(), "trades"));
    }

    /// A record of `upstream` written the way another tool might: keys in any order, any
    /// spacing, the name escaped or not.
    fn foreign_line(upstream: &str, order: &[usize], space: &str, escape: bool) -> String {
        let name = if escape {
            upstream
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32 & 0xffff))
                .collect::<String>()
        } else {
            serde_json::Value::from(upstream)
                .to_string()
                .trim_matches('"')
                .to_string()
        };
        let fields = [
            format!("\"upstream\":{space}\"{name}\""),
            format!("\"seq\":{space}1"),
            format!("\"ts\":{space}1764000000000"),
            format!("\"type\":{space}\"text\""),
            format!("\"data\":{space}\"m\""),
        ];
        let ordered: Vec<&str> = order.iter().map(|&i| fields[i].as_str()).collect();
        format!("{{{}}}", ordered.join(&format!(",{space}")))
    }

    proptest! {
        #[test]
        fn the_shortcut_agrees_with_the_parse_on_any_line(
            line in proptest::collection::vec(any::<u8>(), 0..80),
            upstream in "[a-z]{1,4}",
        ) {
            let mut framed = b"{\"upstream\":\"".to_vec();
            framed.extend_from_slice(&line);
            for candidate in [&line, &framed] {
                if surely_other_upstream(candidate, &upstream) {
                    prop_assert!(!parsed_as(candidate, &upstream));
                }
            }
        }

        #[test]
        fn the_shortcut_never_skips_a_record_of_the_upstream(
            upstream in "[a-zA-Z0-9_.\\-]{1,8}",
            order in Just(vec![0usize, 1, 2, 3, 4]).prop_shuffle(),
            space in "[ \t]{0,2}",
            escape in any::<bool>(),
        ) {
            let line = foreign_line(&upstream, &order, &space, escape);
            prop_assert!(parsed_as(line.as_bytes(), &upstream), "{}", line);
            prop_assert!(!surely_other_upstream(line.as_bytes(), &upstream), "{}", line);
        }
    }
}
