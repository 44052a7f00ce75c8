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

    /// When the line for `event` is its payload verbatim followed by `suffix` (raw format,
    /// text without line breaks or `connect --binary` bytes): the payload and the suffix, so a
    /// large payload can be written without copying it into a buffer first.
    pub fn verbatim<'a>(&self, event: &'a Event) -> Option<(&'a [u8], &'static [u8])> {
        if self.format != Format::Raw {
            return None;
        }
        match &event.kind {
            EventKind::Binary { data, .. } if self.binary_bytes => Some((data, b"")),
            EventKind::Text { data, .. } if !has_line_break(data.as_bytes()) => {
                Some((data.as_bytes(), b"\n"))
            }
            _ => None,
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
            out.extend_from_slice(b",\"seq\":");
            write_u64(out, *seq);
            out.extend_from_slice(b",\"ts\":");
            write_u64(out, event.ts);
            match parse_json.then(|| embeddable_json(data.as_str())).flatten() {
                Some(json) => {
                    out.extend_from_slice(b",\"type\":\"json\",\"data\":");
                    out.extend_from_slice(json.as_bytes());
                }
                None => {
                    out.extend_from_slice(b",\"type\":\"text\",\"data\":");
                    write_json_str(out, data.as_str());
                }
            }
        }
        EventKind::Binary { seq, data } => {
            out.extend_from_slice(b",\"seq\":");
            write_u64(out, *seq);
            out.extend_from_slice(b",\"ts\":");
            write_u64(out, event.ts);
            out.extend_from_slice(b",\"type\":\"binary\",\"data\":\"");
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

/// The text itself if it is one valid JSON value that can be embedded in a line. Line breaks
/// in valid JSON can only be whitespace between tokens, so they become spaces.
fn embeddable_json(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    let trimmed = raw.get();
    if trimmed.contains(['\n', '\r']) {
        Some(trimmed.replace(['\n', '\r'], " ").into())
    } else {
        Some(trimmed.into())
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Most payloads need no escaping: one branch-free scan, then one copy.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20 && b != b'"' && b != b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
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
