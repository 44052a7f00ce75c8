//! The NDJSON record: what every sink client reads, one JSON object per line.
//!
//! ```json
//! {"upstream":"trades","seq":42,"ts":1764000000123,"type":"text","data":"{\"p\":1.5}"}
//! {"upstream":"trades","seq":43,"ts":1764000000124,"type":"binary","data":"AAEC/w=="}
//! {"upstream":"trades","seq":44,"ts":1764000000125,"type":"json","data":{"p":1.5}}
//! {"upstream":"trades","ts":1764000000000,"type":"open","url":"wss://stream.example.com/ws","protocol":"chat"}
//! {"upstream":"trades","ts":1764000009000,"type":"close","code":1001,"reason":"going away","retry_in_ms":500}
//! {"upstream":"trades","ts":1764000009001,"type":"error","error":"connection reset","retry_in_ms":1000}
//! ```
//!
//! - `seq` counts data messages per upstream from 1 since the daemon started; it does not
//!   restart on reconnect, so a gap means a lost record.
//! - `ts` is the receive time in Unix milliseconds.
//! - `binary` data is standard base64. `json` (sinks with `parse_json = true`) embeds a text
//!   message that holds valid JSON as the value itself.
//! - `close` and `error` carry `retry_in_ms` when the upstream will reconnect after that delay.
//!
//! With `format = "raw"` only the payload is written: text as it is (as a JSON string if it
//! holds a line break, so one message is one line), binary as base64; events are not written.
//!
//! The inbound line, written by sink clients (and `connect --ndjson` on stdin), is parsed by
//! [`parse_inbound`]: `{"upstream":"trades","type":"text"|"binary"|"json","data":…}`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::config::Format;

/// Something that happened on an upstream connection, as handed from the upstream task to the
/// sinks. The upstream's name travels once per batch ([`crate::hub::Batch`]), not per event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Receive time, Unix milliseconds.
    pub ts: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A text message.
    Text {
        /// Per-upstream data message counter.
        seq: u64,
        /// The payload.
        data: Utf8Bytes,
    },
    /// A binary message.
    Binary {
        /// Per-upstream data message counter.
        seq: u64,
        /// The payload.
        data: Bytes,
    },
    /// The handshake completed.
    Open {
        /// The URL, without credentials.
        url: String,
        /// The subprotocol the server chose.
        protocol: Option<String>,
    },
    /// The connection ended with a Close frame from the peer (or ours, on shutdown).
    Close {
        /// Close code (1005 when the frame had none).
        code: u16,
        /// Close reason.
        reason: String,
        /// Delay before the next attempt, when one follows.
        retry_in_ms: Option<u64>,
    },
    /// A connection attempt failed or a connection broke.
    Error {
        /// What went wrong.
        error: String,
        /// Delay before the next attempt, when one follows.
        retry_in_ms: Option<u64>,
    },
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(kind: EventKind) -> Event {
        Event {
            ts: unix_millis(),
            kind,
        }
    }

    /// The size of a data message's payload (0 for other events).
    pub fn payload_len(&self) -> usize {
        match &self.kind {
            EventKind::Text { data, .. } => data.len(),
            EventKind::Binary { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Payload bytes plus the event itself: what holding it costs in memory, roughly.
    pub fn cost(&self) -> usize {
        self.payload_len() + std::mem::size_of::<Event>()
    }

    /// Whether this is a data message (not open/close/error).
    pub fn is_data(&self) -> bool {
        matches!(self.kind, EventKind::Text { .. } | EventKind::Binary { .. })
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a sink turns events into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Envelope or payload only.
    pub format: Format,
    /// Whether open/close/error are written (ndjson only).
    pub events: bool,
    /// Whether text holding valid JSON becomes a `json` record.
    pub parse_json: bool,
    /// `connect --binary`: raw format writes binary payloads as their bytes, no newline.
    pub binary_bytes: bool,
}

impl Encoding {
    /// Appends the line for `event` of `upstream` to `out`; returns false (appending nothing)
    /// if this encoding does not write such events.
    pub fn encode(&self, upstream: &str, event: &Event, out: &mut Vec<u8>) -> bool {
        match self.format {
            Format::Raw => match &event.kind {
                EventKind::Binary { data, .. } if self.binary_bytes => {
                    out.extend_from_slice(data);
                    true
                }
                _ => encode_raw(event, out),
            },
            Format::Ndjson => {
                if !self.events && !event.is_data() {
                    return false;
                }
                encode_ndjson(upstream, event, self.parse_json, out);
                true
            }
        }
    }

    /// The line for a data event as head, body and tail (see [`LineParts`]), so a large payload
    /// can be written from where it lies or encoded piece by piece, never whole into a buffer.
    /// `None` for events that are not data. The parts make exactly the line [`Encoding::encode`]
    /// writes; `encode` stays the fast path for small events.
    pub fn parts<'a>(&self, upstream: &str, event: &'a Event) -> Option<LineParts<'a>> {
        let mut head = Vec::new();
        let (body, tail): (Body<'a>, &'static [u8]) = match (self.format, &event.kind) {
            (Format::Raw, EventKind::Binary { data, .. }) if self.binary_bytes => {
                (Body::Verbatim(data), b"")
            }
            (Format::Raw, EventKind::Binary { data, .. }) => (Body::Base64(data), b"\n"),
            (Format::Raw, EventKind::Text { data, .. }) if has_line_break(data.as_bytes()) => {
                head.push(b'"');
                (Body::JsonString(data.as_str()), b"\"\n")
            }
            (Format::Raw, EventKind::Text { data, .. }) => (Body::Verbatim(data.as_bytes()), b"\n"),
            (Format::Ndjson, EventKind::Text { seq, data }) => {
                let json = self.parse_json.then(|| json_value(data.as_str())).flatten();
                match json {
                    Some(json) => {
                        write_data_head(&mut head, upstream, *seq, event.ts, "json");
                        (Body::JsonValue(json), b"}\n")
                    }
                    None => {
                        write_data_head(&mut head, upstream, *seq, event.ts, "text");
                        head.push(b'"');
                        (Body::JsonString(data.as_str()), b"\"}\n")
                    }
                }
            }
            (Format::Ndjson, EventKind::Binary { seq, data }) => {
                write_data_head(&mut head, upstream, *seq, event.ts, "binary");
                head.push(b'"');
                (Body::Base64(data), b"\"}\n")
            }
            _ => return None,
        };
        Some(LineParts { head, body, tail })
    }
}

/// A record's line in three parts: `head`, the payload encoded as `body` says, `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineParts<'a> {
    /// What comes before the payload (the envelope, an opening quote).
    pub head: Vec<u8>,
    /// The payload and how it is written.
    pub body: Body<'a>,
    /// What follows the payload (a closing quote or brace, the line break).
    pub tail: &'static [u8],
}

/// A payload and how it appears in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// As it is.
    Verbatim(&'a [u8]),
    /// The inside of a JSON string (escaped, without the quotes).
    JsonString(&'a str),
    /// A JSON value embedded as it is, its line breaks (whitespace between tokens) as spaces.
    JsonValue(&'a str),
    /// Standard base64 (padded).
    Base64(&'a [u8]),
}

impl Body<'_> {
    /// The payload's size in bytes (before encoding).
    pub fn len(&self) -> usize {
        match self {
            Body::Verbatim(b) | Body::Base64(b) => b.len(),
            Body::JsonString(s) | Body::JsonValue(s) => s.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the encoding of about `want` payload bytes from `from` on (at least one unit:
    /// a character of a string, three bytes of base64, unless fewer are left); returns where
    /// the next piece starts. Pieces appended in turn make the whole body.
    pub fn encode_piece(&self, from: usize, want: usize, out: &mut Vec<u8>) -> usize {
        let want = want.max(4);
        match *self {
            Body::Verbatim(b) => {
                let to = b.len().min(from.saturating_add(want));
                out.extend_from_slice(&b[from..to]);
                to
            }
            Body::JsonValue(s) => {
                let to = s.len().min(from.saturating_add(want));
                write_json_value(out, &s.as_bytes()[from..to]);
                to
            }
            Body::JsonString(s) => {
                let mut to = s.len().min(from.saturating_add(want));
                while !s.is_char_boundary(to) {
                    to += 1; // at most 3 more: a character is at most 4 bytes
                }
                write_json_str_contents(out, &s[from..to]);
                to
            }
            Body::Base64(b) => {
                // Whole groups of three bytes encode without padding, so pieces join up.
                let to = b.len().min(from.saturating_add(want / 3 * 3));
                write_base64(out, &b[from..to]);
                to
            }
        }
    }
}

fn has_line_break(bytes: &[u8]) -> bool {
    memchr::memchr2(b'\n', b'\r', bytes).is_some()
}

fn encode_raw(event: &Event, out: &mut Vec<u8>) -> bool {
    match &event.kind {
        EventKind::Text { data, .. } => {
            if has_line_break(data.as_bytes()) {
                write_json_str(out, data.as_str());
            } else {
                out.extend_from_slice(data.as_bytes());
            }
        }
        EventKind::Binary { data, .. } => write_base64(out, data),
        _ => return false,
    }
    out.push(b'\n');
    true
}

/// Appends the standard base64 of `data` without an intermediate `String`.
fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    let len = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

fn encode_ndjson(upstream: &str, event: &Event, parse_json: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"upstream\":");
    write_json_str(out, upstream);
    match &event.kind {
        EventKind::Text { seq, data } => {
            match parse_json.then(|| json_value(data.as_str())).flatten() {
                Some(json) => {
                    write_data_fields(out, *seq, event.ts, "json");
                    write_json_value(out, json.as_bytes());
                }
                None => {
                    write_data_fields(out, *seq, event.ts, "text");
                    write_json_str(out, data.as_str());
                }
            }
        }
        EventKind::Binary { seq, data } => {
            write_data_fields(out, *seq, event.ts, "binary");
            out.push(b'"');
            write_base64(out, data);
            out.push(b'"');
        }
        EventKind::Open { url, protocol } => {
            let _ = write!(out, ",\"ts\":{},\"type\":\"open\",\"url\":", event.ts);
            write_json_str(out, url);
            if let Some(p) = protocol {
                out.extend_from_slice(b",\"protocol\":");
                write_json_str(out, p);
            }
        }
        EventKind::Close {
            code,
            reason,
            retry_in_ms,
        } => {
            let _ = write!(
                out,
                ",\"ts\":{},\"type\":\"close\",\"code\":{code},\"reason\":",
                event.ts
            );
            write_json_str(out, reason);
            if let Some(ms) = retry_in_ms {
                let _ = write!(out, ",\"retry_in_ms\":{ms}");
            }
        }
        EventKind::Error { error, retry_in_ms } => {
            let _ = write!(out, ",\"ts\":{},\"type\":\"error\",\"error\":", event.ts);
            write_json_str(out, error);
            if let Some(ms) = retry_in_ms {
                let _ = write!(out, ",\"retry_in_ms\":{ms}");
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

/// A data record up to its `data` value: `{"upstream":…,"seq":…,"ts":…,"type":…,"data":`.
fn write_data_head(out: &mut Vec<u8>, upstream: &str, seq: u64, ts: u64, kind: &str) {
    out.extend_from_slice(b"{\"upstream\":");
    write_json_str(out, upstream);
    write_data_fields(out, seq, ts, kind);
}

/// `,"seq":…,"ts":…,"type":"<kind>","data":` (`kind` needs no escaping).
fn write_data_fields(out: &mut Vec<u8>, seq: u64, ts: u64, kind: &str) {
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, seq);
    out.extend_from_slice(b",\"ts\":");
    write_u64(out, ts);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
}

/// Appends (a piece of) valid JSON with its line breaks as spaces: in valid JSON they can
/// only be whitespace between tokens, and the record must stay one line.
fn write_json_value(out: &mut Vec<u8>, json: &[u8]) {
    let start = out.len();
    out.extend_from_slice(json);
    for byte in &mut out[start..] {
        if matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
}

/// The text as one JSON value (surrounding whitespace trimmed), if it is valid JSON.
fn json_value(text: &str) -> Option<&str> {
    let raw: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    Some(raw.get())
}

/// Appends `s` as a JSON string literal.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if needs_no_escape(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `s` escaped as in a JSON string, without the quotes (a piece of a longer string).
fn write_json_str_contents(out: &mut Vec<u8>, s: &str) {
    if needs_no_escape(s) {
        out.extend_from_slice(s.as_bytes());
    } else {
        let start = out.len();
        let _ = serde_json::to_writer(&mut *out, s);
        // serde_json has no public escaper without quotes: drop them (one move of the piece).
        out.pop();
        out.remove(start);
    }
}

/// Most payloads need no escaping: one branch-free scan, then one copy.
fn needs_no_escape(s: &str) -> bool {
    s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20 && b != b'"' && b != b'\\')
    })
}

/// Appends the decimal digits of `n`.
fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The error record sent to one sink client whose line was rejected.
pub fn client_error_line(upstream: Option<&str>, error: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + error.len());
    out.push(b'{');
    if let Some(name) = upstream {
        out.extend_from_slice(b"\"upstream\":");
        write_json_str(&mut out, name);
        out.push(b',');
    }
    let _ = write!(
        out,
        "\"ts\":{},\"type\":\"error\",\"error\":",
        unix_millis()
    );
    write_json_str(&mut out, error);
    out.extend_from_slice(b"}\n");
    out
}

/// A parsed inbound line: the message and, if named, the upstream it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The `upstream` field, if present.
    pub upstream: Option<String>,
    /// The message to send.
    pub message: Message,
}

/// Why an inbound line was rejected; the text goes back to the client in an error record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Not a JSON object of the expected shape.
    #[error("not an inbound record ({0}); write {{\"type\":\"text\",\"data\":\"...\"}} with an optional \"upstream\"")]
    Shape(String),
    /// A `type` we cannot send.
    #[error("type {0:?} cannot be sent; use \"text\", \"binary\" (base64 data) or \"json\"")]
    Type(String),
    /// `data` missing or of the wrong JSON type.
    #[error("\"data\" must be {0}")]
    Data(&'static str),
    /// Invalid base64 in binary data.
    #[error("\"data\" is not valid standard base64: {0}")]
    Base64(String),
}

#[derive(Deserialize)]
struct WireInbound<'a> {
    upstream: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    /// Kept as written: `null` is a value here (not a missing field), and JSON numbers go
    /// upstream exactly as the client wrote them.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a serde_json::value::RawValue>,
}

/// `Some` for any value of a field that is there, `null` included.
fn present<'de, D>(d: D) -> Result<Option<&'de serde_json::value::RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&serde_json::value::RawValue>::deserialize(d).map(Some)
}

/// Parses one inbound line (a trailing `\r` is ignored). Fields other than `upstream`,
/// `type` and `data` are ignored, so a record can be written back as it came.
pub fn parse_inbound(line: &str) -> Result<Inbound, InboundError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let wire: WireInbound =
        serde_json::from_str(line).map_err(|e| InboundError::Shape(e.to_string()))?;
    let string = |data: Option<&serde_json::value::RawValue>| {
        data.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    };
    let message = match wire.kind.as_str() {
        "text" => match string(wire.data) {
            Some(s) => Message::text(s),
            None => return Err(InboundError::Data("a string for type \"text\"")),
        },
        "binary" => match string(wire.data) {
            Some(s) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| InboundError::Base64(e.to_string()))?;
                Message::binary(bytes)
            }
            None => return Err(InboundError::Data("a base64 string for type \"binary\"")),
        },
        "json" => match wire.data {
            Some(raw) => Message::text(compact_json(raw.get())),
            None => return Err(InboundError::Data("present for type \"json\"")),
        },
        other => return Err(InboundError::Type(other.to_string())),
    };
    Ok(Inbound {
        upstream: wire.upstream,
        message,
    })
}

/// Valid JSON without the whitespace between tokens (aiohttp's `send_json` sends compact
/// text), leaving every token, numbers included, exactly as written.
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
