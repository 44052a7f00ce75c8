//! The line of a data record in pieces ([`Encoding::parts`]), for the stdout writer that
//! writes large payloads from where they lie.
//!
//! A second encoder of the wire format, kept equal to [`Encoding::encode`] by the property test
//! below; it goes once its one caller (the stdout `Direct` writer) is gone.

use super::{
    has_line_break, json_value, needs_no_escape, write_base64, write_data_fields, write_json_str,
    write_json_value,
};
use super::{Encoding, Event, EventKind};
use crate::config::Format;

impl Encoding {
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

/// A data record up to its `data` value: `{"upstream":…,"seq":…,"ts":…,"type":…,"data":`.
fn write_data_head(out: &mut Vec<u8>, upstream: &str, seq: u64, ts: u64, kind: &str) {
    out.extend_from_slice(b"{\"upstream\":");
    write_json_str(out, upstream);
    write_data_fields(out, seq, ts, kind);
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            ts: 1_764_000_000_123,
            kind,
        }
    }

    fn text(seq: u64, data: &str) -> EventKind {
        EventKind::Text {
            seq,
            data: Utf8Bytes::from(data.to_string()),
        }
    }

    /// The line `parts` describes, assembled with pieces of at most `piece` payload bytes.
    fn assembled(parts: &LineParts<'_>, piece: usize) -> Vec<u8> {
        let mut out = parts.head.clone();
        let mut at = 0;
        while at < parts.body.len() {
            let next = parts.body.encode_piece(at, piece, &mut out);
            assert!(next > at, "a piece must move on");
            at = next;
        }
        out.extend_from_slice(parts.tail);
        out
    }

    fn encodings() -> Vec<Encoding> {
        let mut all = Vec::new();
        for format in [Format::Raw, Format::Ndjson] {
            for (parse_json, binary_bytes) in [(false, false), (true, false), (false, true)] {
                all.push(Encoding {
                    format,
                    events: true,
                    parse_json,
                    binary_bytes,
                });
            }
        }
        all
    }

    #[test]
    fn parts_say_how_each_payload_is_written() {
        let raw = encodings()[0];
        let plain = event(text(1, "plain"));
        let parts = raw.parts("trades", &plain).unwrap();
        assert_eq!(parts.body, Body::Verbatim(b"plain"));
        assert_eq!((parts.head.as_slice(), parts.tail), (&b""[..], &b"\n"[..]));
        let broken = event(text(2, "two\nlines"));
        assert_eq!(
            raw.parts("trades", &broken).unwrap().body,
            Body::JsonString("two\nlines")
        );
        let binary = event(EventKind::Binary {
            seq: 3,
            data: Bytes::from_static(b"\x00\xff"),
        });
        assert_eq!(
            raw.parts("trades", &binary).unwrap().body,
            Body::Base64(b"\x00\xff")
        );
        let bytes = Encoding {
            binary_bytes: true,
            ..raw
        };
        assert_eq!(
            bytes.parts("t", &binary).unwrap().body,
            Body::Verbatim(b"\x00\xff")
        );
        let ndjson = Encoding {
            format: Format::Ndjson,
            parse_json: true,
            ..raw
        };
        let json = event(text(4, " {\"p\":\n1} "));
        assert_eq!(
            ndjson.parts("t", &json).unwrap().body,
            Body::JsonValue("{\"p\":\n1}")
        );
        let open = event(EventKind::Open {
            url: "ws://x/".into(),
            protocol: None,
        });
        assert_eq!(ndjson.parts("t", &open), None, "only data has a payload");
    }

    proptest::proptest! {
        /// Whatever the payload, encoding, and size of the pieces: the parts make the line
        /// `encode` writes.
        #[test]
        fn parts_make_the_same_line_as_encode(
            payload in proptest::prop_oneof![
                proptest::arbitrary::any::<String>(),
                "[ -~\n\r\t\"\\\\é€😀\u{1}]{0,300}",
                "\\{\"[a-z]{1,4}\":\\s{0,2}\\[[0-9]{1,3}(,\\s{0,2}[0-9]{1,3}){0,20}\\]\\}",
            ],
            binary in proptest::arbitrary::any::<bool>(),
            piece in 1usize..64,
        ) {
            let kind = if binary {
                EventKind::Binary { seq: 9, data: Bytes::from(payload.into_bytes()) }
            } else {
                text(9, &payload)
            };
            let event = event(kind);
            for encoding in encodings() {
                let mut line = Vec::new();
                encoding.encode("feed \"x\"", &event, &mut line);
                let parts = encoding.parts("feed \"x\"", &event).unwrap();
                let pieces = assembled(&parts, piece);
                proptest::prop_assert!(pieces == line, "{:?}: {:?} vs {:?}", encoding,
                    String::from_utf8_lossy(&pieces), String::from_utf8_lossy(&line));
            }
        }
    }
}
