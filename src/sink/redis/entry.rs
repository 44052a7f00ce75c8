//! A record as a stream entry: its fields (`upstream`, `seq` for data records, `ts`, `type`,
//! `data`), written by `XADD` and compared with what the stream holds at an ID, and the
//! stream's last ID from `XINFO STREAM`.

use std::borrow::Cow;

use redis::Value;
use serde_json::value::RawValue;

use crate::sink::encoded::Record;

/// A stream entry ID: milliseconds and a sequence number.
pub type EntryId = (u64, u64);

/// The fields of the entry of `record` (one with an upstream), in the order they are added.
pub fn entry_fields<'a>(
    record: &Record<'a>,
    upstream: &'a str,
) -> Vec<(&'static str, Cow<'a, [u8]>)> {
    let line = record.line.strip_suffix(b"\n").unwrap_or(record.line);
    let (kind, data) = fields(line);
    let mut out = Vec::with_capacity(5);
    out.push(("upstream", Cow::Borrowed(upstream.as_bytes())));
    if let Some(seq) = record.seq {
        out.push(("seq", Cow::Owned(seq.to_string().into_bytes())));
    }
    out.push(("ts", Cow::Owned(record.ts.to_string().into_bytes())));
    out.push((
        "type",
        match kind {
            Cow::Borrowed(k) => Cow::Borrowed(k.as_bytes()),
            Cow::Owned(k) => Cow::Owned(k.into_bytes()),
        },
    ));
    out.push(("data", data));
    out
}

/// Whether the entry `found` (fields as `XRANGE` gives them) is the one `expected` describes.
pub fn is_entry(found: &[(String, Vec<u8>)], expected: &[(&'static str, Cow<'_, [u8]>)]) -> bool {
    found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|((k, v), (ek, ev))| k == ek && v.as_slice() == ev.as_ref())
}

/// `ms-n`, as Redis writes an entry ID.
pub fn id_text((ms, n): EntryId) -> String {
    format!("{ms}-{n}")
}

/// The `type` and `data` of an NDJSON record: the payload for data records (text
/// unescaped), the whole record for events.
pub fn fields(line: &[u8]) -> (Cow<'_, str>, Cow<'_, [u8]>) {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(line) else {
        return (Cow::Borrowed("text"), Cow::Borrowed(line));
    };
    let data = match (envelope.kind.as_ref(), envelope.data) {
        ("text" | "binary", Some(raw)) => match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
            Ok(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
            Ok(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
            Err(_) => Cow::Borrowed(raw.get().as_bytes()),
        },
        (_, Some(raw)) => Cow::Borrowed(raw.get().as_bytes()),
        (_, None) => Cow::Borrowed(line),
    };
    (envelope.kind, data)
}

/// `last-generated-id` from an `XINFO STREAM` reply (a map, or a flat list in RESP2).
pub fn last_generated(info: &Value) -> Option<EntryId> {
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        if text(k)? != "last-generated-id" {
            return None;
        }
        let id = text(v)?;
        let (ms, n) = id.split_once('-')?;
        Some((ms.parse().ok()?, n.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_records() {
        let (kind, data) =
            fields(br#"{"upstream":"f","seq":1,"ts":2,"type":"text","data":"a\"b"}"#);
        assert_eq!((kind.as_ref(), data.as_ref()), ("text", &b"a\"b"[..]));
        let (kind, data) =
            fields(br#"{"upstream":"f","seq":1,"ts":2,"type":"json","data":{"x":1}}"#);
        assert_eq!((kind.as_ref(), data.as_ref()), ("json", &br#"{"x":1}"#[..]));
        let open = br#"{"upstream":"f","ts":2,"type":"open","url":"ws://x/"}"#;
        let (kind, data) = fields(open);
        assert_eq!((kind.as_ref(), data.as_ref()), ("open", &open[..]));
    }

    #[test]
    fn an_entry_is_ours_only_when_every_field_is() {
        let expected = vec![
            ("upstream", Cow::Borrowed(&b"f"[..])),
            ("seq", Cow::Borrowed(&b"7"[..])),
        ];
        let found = |seq: &str| {
            vec![
                ("upstream".to_string(), b"f".to_vec()),
                ("seq".to_string(), seq.as_bytes().to_vec()),
            ]
        };
        assert!(is_entry(&found("7"), &expected));
        assert!(!is_entry(&found("8"), &expected));
        assert!(!is_entry(
            &[("other".to_string(), b"1".to_vec())],
            &expected
        ));
    }

    #[test]
    fn last_generated_id_from_either_protocol() {
        let key = Value::BulkString(b"last-generated-id".to_vec());
        let id = Value::BulkString(b"1700-5".to_vec());
        let flat = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            key.clone(),
            id.clone(),
        ]);
        assert_eq!(last_generated(&flat), Some((1700, 5)));
        assert_eq!(
            last_generated(&Value::Map(vec![(key, id)])),
            Some((1700, 5))
        );
    }
}
