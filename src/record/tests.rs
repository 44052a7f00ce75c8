use super::*;

fn event(kind: EventKind) -> Event {
    Event {
        ts: 1_764_000_000_123,
        kind,
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
        data: Utf8Bytes::from(data.to_string()),
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
            retry_in_ms: None
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
fn inbound_lines_of_each_type() {
    let t = parse_inbound(r#"{"upstream":"a","type":"text","data":"hi","seq":3,"ts":1}"#).unwrap();
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
