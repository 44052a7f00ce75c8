//! The one encoder of the wire format: an [`Event`] as an NDJSON record or a raw payload
//! line, and the error record a rejected inbound line gets back.

use std::io::Write as _;

use base64::Engine as _;

use super::event::{unix_millis, Event, EventKind};
use crate::config::Format;

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
}

/// How a line made of a payload as it is ends ([`Encoding::verbatim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// A newline follows the payload.
    Newline,
    /// Nothing follows (`connect --binary` writes binary payloads as their bytes).
    Nothing,
}

impl Encoding {
    /// The payload of `event` when this encoding's line for it is that payload as it is,
    /// followed by `LineEnd`: what [`Encoding::encode`] would append, for a writer that can
    /// write a large payload from where it is rather than copy it (raw text without a line
    /// break, raw binary bytes).
    pub fn verbatim<'e>(&self, event: &'e Event) -> Option<(&'e [u8], LineEnd)> {
        match (self.format, &event.kind) {
            (Format::Raw, EventKind::Binary { data, .. }) if self.binary_bytes => {
                Some((data, LineEnd::Nothing))
            }
            (Format::Raw, EventKind::Text { data, .. }) if !has_line_break(data.as_bytes()) => {
                Some((data.as_bytes(), LineEnd::Newline))
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
                write_json_utf8(out, data.as_bytes());
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
            match parse_json.then(|| json_value(data.as_bytes())).flatten() {
                Some(json) => {
                    write_data_fields(out, *seq, event.ts, "json");
                    write_json_value(out, json.as_bytes());
                }
                None => {
                    write_data_fields(out, *seq, event.ts, "text");
                    write_json_utf8(out, data.as_bytes());
                }
            }
        }
        EventKind::Binary { seq, data } => {
            write_data_fields(out, *seq, event.ts, "binary");
            out.push(b'"');
            write_base64(out, data);
            out.push(b'"');
        }
        EventKind::Gap { expected, got } => {
            let _ = write!(
                out,
                ",\"ts\":{},\"type\":\"gap\",\"expected\":{expected},\"got\":{got}",
                event.ts
            );
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
        EventKind::Error {
            error,
            status,
            retry_in_ms,
        } => {
            let _ = write!(out, ",\"ts\":{},\"type\":\"error\",\"error\":", event.ts);
            write_json_str(out, error);
            if let Some(status) = status {
                let _ = write!(out, ",\"status\":{status}");
            }
            if let Some(ms) = retry_in_ms {
                let _ = write!(out, ",\"retry_in_ms\":{ms}");
            }
        }
    }
    if let Some(lag) = event.lag_ms {
        out.extend_from_slice(b",\"lag_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(lag).as_bytes());
    }
    out.extend_from_slice(b"}\n");
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
fn json_value(text: &[u8]) -> Option<&str> {
    let raw: &serde_json::value::RawValue = serde_json::from_slice(text).ok()?;
    Some(raw.get())
}

/// Appends `s` as a JSON string literal.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_utf8(out, s.as_bytes());
}

/// Appends `utf8` (UTF-8: a `str`'s or a [`super::Text`]'s bytes) as a JSON string literal.
fn write_json_utf8(out: &mut Vec<u8>, utf8: &[u8]) {
    if needs_no_escape(utf8) {
        out.reserve(utf8.len() + 2);
        out.push(b'"');
        out.extend_from_slice(utf8);
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail; the text is UTF-8, so the `str` is borrowed.
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(utf8));
    }
}

/// Most payloads need no escaping: one branch-free scan, then one copy.
fn needs_no_escape(utf8: &[u8]) -> bool {
    utf8.iter().fold(true, |plain, &b| {
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

#[cfg(test)]
mod tests;
