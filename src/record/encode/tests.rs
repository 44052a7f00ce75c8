use crate::record::Text;
use bytes::Bytes;

use super::*;
use crate::record::{Event, EventKind};

fn event(kind: EventKind) -> Event {
    Event {
        ts: 1_764_000_000_123,
        kind,
        lag_ms: None,
    }
}

fn ndjson(kind: EventKind, parse_json: bool) -> String {
    let mut out = Vec::new();
    let encoding = Encoding {
        format: Format::Ndjson,
        events: true,
        parse_json,
        binary_bytes: false,
    };
    assert!(encoding.encode("trades", &event(kind), &mut out));
    String::from_utf8(out).unwrap()
}

fn text(seq: u64, data: &str) -> EventKind {
    EventKind::Text {
        seq,
        data: Text::from(data),
    }
}

#[test]
fn text_record_matches_the_spec_example() {
    assert_eq!(
        ndjson(text(42, r#"{"p":1.5}"#), false),
        "{\"upstream\":\"trades\",\"seq\":42,\"ts\":1764000000123,\"type\":\"text\",\"data\":\"{\\\"p\\\":1.5}\"}\n"
    );
}

#[test]
fn binary_is_standard_base64() {
    let line = ndjson(
        EventKind::Binary {
            seq: 43,
            data: Bytes::from_static(&[0, 1, 2, 255]),
        },
        false,
    );
    assert!(
        line.ends_with(",\"type\":\"binary\",\"data\":\"AAEC/w==\"}\n"),
        "{line}"
    );
}

#[test]
fn every_record_is_one_valid_json_line() {
    let kinds = vec![
        text(1, "multi\nline\r\n\"quoted\" \u{2028} é"),
        EventKind::Open {
            url: "wss://h/ws".into(),
            protocol: Some("chat".into()),
        },
        EventKind::Open {
            url: "ws://h/".into(),
            protocol: None,
        },
        EventKind::Close {
            code: 1001,
            reason: "going\naway".into(),
            retry_in_ms: Some(5),
        },
        EventKind::Error {
            error: "reset".into(),
            retry_in_ms: None,
            status: None,
        },
        EventKind::Error {
            error: "refused".into(),
            retry_in_ms: Some(60_000),
            status: Some(401),
        },
    ];
    for kind in kinds {
        let line = ndjson(kind, true);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["upstream"], "trades");
        assert_eq!(value["ts"], 1_764_000_000_123u64);
    }
}

#[test]
fn parse_json_embeds_valid_json_and_keeps_other_text() {
    let line = ndjson(text(1, "{\"p\":\n 1.5}"), true);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["type"], "json");
    assert_eq!(value["data"]["p"], 1.5);
    let line = ndjson(text(2, "not json"), true);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (value["type"].as_str(), value["data"].as_str()),
        (Some("text"), Some("not json"))
    );
}

#[test]
fn events_can_be_left_out() {
    let encoding = Encoding {
        format: Format::Ndjson,
        events: false,
        parse_json: false,
        binary_bytes: false,
    };
    let mut out = Vec::new();
    assert!(!encoding.encode(
        "trades",
        &event(EventKind::Error {
            error: "x".into(),
            retry_in_ms: None,
            status: None,
        }),
        &mut out
    ));
    assert!(out.is_empty());
    assert!(encoding.encode("trades", &event(text(1, "x")), &mut out));
}

#[test]
fn raw_format_writes_payload_lines() {
    let encoding = Encoding {
        format: Format::Raw,
        events: true,
        parse_json: false,
        binary_bytes: false,
    };
    let mut out = Vec::new();
    encoding.encode("trades", &event(text(1, "plain")), &mut out);
    encoding.encode("trades", &event(text(2, "two\nlines")), &mut out);
    encoding.encode(
        "trades",
        &event(EventKind::Binary {
            seq: 3,
            data: Bytes::from_static(b"\x00\xff"),
        }),
        &mut out,
    );
    assert!(!encoding.encode(
        "trades",
        &event(EventKind::Open {
            url: "ws://h/".into(),
            protocol: None
        }),
        &mut out
    ));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "plain\n\"two\\nlines\"\nAP8=\n"
    );
}

#[test]
fn client_error_line_is_one_json_record() {
    let line = client_error_line(Some("a"), "bad \"line\"");
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(
        (value["type"].as_str(), value["upstream"].as_str()),
        (Some("error"), Some("a"))
    );
    assert_eq!(value["error"], "bad \"line\"");
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn binary_bytes_are_written_as_they_came() {
    let encoding = Encoding {
        format: Format::Raw,
        events: false,
        parse_json: false,
        binary_bytes: true,
    };
    let mut out = Vec::new();
    encoding.encode(
        "trades",
        &event(EventKind::Binary {
            seq: 1,
            data: Bytes::from_static(b"\x00\n\xff"),
        }),
        &mut out,
    );
    encoding.encode("trades", &event(text(2, "t")), &mut out);
    assert_eq!(out, b"\x00\n\xfft\n");
}

#[test]
fn json_strings_match_serde_json_with_and_without_escapes() {
    let samples = [
        "",
        "plain ascii",
        "quote \" inside",
        "back\\slash",
        "tab\tand\nnewline\r",
        "\u{1}\u{1f} control",
        "ünïcödé ✓ and \u{7f}",
        "{\"p\":1.5,\"q\":[1,2]}",
    ];
    for sample in samples {
        let mut ours = Vec::new();
        write_json_str(&mut ours, sample);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(sample).unwrap(),
            "{sample:?}"
        );
    }
}

#[test]
fn gap_records_and_lag() {
    assert_eq!(
        ndjson(EventKind::Gap { expected: 300, got: 305 }, false),
        "{\"upstream\":\"trades\",\"ts\":1764000000123,\"type\":\"gap\",\"expected\":300,\"got\":305}\n"
    );
    let mut lagging = event(EventKind::Text {
        seq: 7,
        data: Text::from("{\"E\":1}"),
    });
    lagging.lag_ms = Some(-12);
    let mut out = Vec::new();
    Encoding {
        format: Format::Ndjson,
        events: true,
        parse_json: true,
        binary_bytes: false,
    }
    .encode("u", &lagging, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"upstream\":\"u\",\"seq\":7,\"ts\":1764000000123,\"type\":\"json\",\"data\":{\"E\":1},\"lag_ms\":-12}\n"
    );
}

/// A payload written as it is makes the same line the encoder would.
#[test]
fn verbatim_payloads_make_the_encoders_line() {
    let raw = |binary_bytes| Encoding {
        format: Format::Raw,
        events: false,
        parse_json: false,
        binary_bytes,
    };
    let binary = |b: &'static [u8]| EventKind::Binary {
        seq: 1,
        data: Bytes::from_static(b),
    };
    let cases = [
        (raw(false), text(1, "plain")),
        (raw(false), text(1, "two\nlines")),
        (raw(false), text(1, "cr\r")),
        (raw(false), binary(b"\x00\x01")),
        (raw(true), binary(b"\x00\n\x01")),
        (raw(true), text(1, "plain")),
    ];
    for (encoding, kind) in cases {
        let event = event(kind);
        let mut line = Vec::new();
        assert!(encoding.encode("u", &event, &mut line));
        if let Some((payload, end)) = encoding.verbatim(&event) {
            let mut made = payload.to_vec();
            if end == LineEnd::Newline {
                made.push(b'\n');
            }
            assert_eq!(made, line, "{event:?}");
        }
    }
    let ndjson = Encoding {
        format: Format::Ndjson,
        ..raw(false)
    };
    assert_eq!(ndjson.verbatim(&event(text(1, "plain"))), None);
    assert_eq!(raw(false).verbatim(&event(text(1, "a\nb"))), None);
}
