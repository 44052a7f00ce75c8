//! Inbound lines: what sink clients (and `connect --ndjson` on stdin) write to be sent
//! upstream, `{"upstream":"trades","type":"text"|"binary"|"json","data":…}`.

use base64::Engine as _;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

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
mod tests {
    use super::*;

    #[test]
    fn inbound_lines_of_each_type() {
        let t =
            parse_inbound(r#"{"upstream":"a","type":"text","data":"hi","seq":3,"ts":1}"#).unwrap();
        assert_eq!(
            t,
            Inbound {
                upstream: Some("a".into()),
                message: Message::text("hi")
            }
        );
        let b = parse_inbound("{\"type\":\"binary\",\"data\":\"AAEC/w==\"}\r").unwrap();
        assert_eq!(b.message, Message::binary(vec![0u8, 1, 2, 255]));
        let j = parse_inbound(r#"{"type":"json","data":{"op":"sub", "args":[1, 2]}}"#).unwrap();
        assert_eq!(j.message, Message::text(r#"{"op":"sub","args":[1,2]}"#));
    }

    #[test]
    fn bad_inbound_lines_get_clear_errors() {
        let cases = [
            ("not json", "not an inbound record"),
            (r#"{"data":"x"}"#, "not an inbound record"),
            (r#"{"type":"ping","data":"x"}"#, "cannot be sent"),
            (r#"{"type":"text","data":5}"#, "must be a string"),
            (r#"{"type":"binary","data":"!!"}"#, "base64"),
            (r#"{"type":"json"}"#, "present"),
            ("[1,2]", "not an inbound record"),
        ];
        for (line, needle) in cases {
            let err = parse_inbound(line).expect_err(line).to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
