//! A plain path read from the text gives what jq gives, or leaves the answer to jq.

use super::*;
use crate::jq::{parse_json, write_compact, Program};

fn compact(value: &crate::jq::Value) -> String {
    let mut out = Vec::new();
    write_compact(value, &mut out);
    String::from_utf8(out).expect("UTF-8")
}

/// jq's first output of `program` on `json`, as compact JSON ("error" if it fails, "none" if
/// it has none, "not JSON" when the text is not a document).
fn by_jq(program: &Program, json: &str) -> String {
    let Some(input) = parse_json(json.as_bytes()) else {
        return "not JSON".into();
    };
    let mut first = None;
    match program.run(input, |v| {
        first.get_or_insert(v);
    }) {
        Ok(()) => first.map_or("none".into(), |v| compact(&v)),
        Err(_) => "error".into(),
    }
}

#[test]
fn plain_paths_are_recognised_and_nothing_else() {
    for (source, keys) in [
        (".u", Some(vec!["u"])),
        (" .data.E ", Some(vec!["data", "E"])),
        ("._a1.b_2", Some(vec!["_a1", "b_2"])),
        (".", None),
        ("..", None),
        (".a.", None),
        (".a | .b", None),
        (".[\"a\"]", None),
        (".1a", None),
        (".a[0]", None),
        ("u", None),
        (".é", None),
    ] {
        let got = keys_of(source).map(|k| k.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        let want = keys.map(|k| k.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, want, "{source:?}");
    }
}

#[test]
fn a_value_read_from_the_text_is_the_one_jq_gives() {
    let documents = [
        r#"{"u": 7, "E": 1700000000123}"#,
        r#"{"E":"2024-05-01T12:00:00Z","u":"42"}"#,
        r#"{"data": {"u": 3, "E": 1.5}, "u": [1]}"#,
        r#"{"u": 1, "u": 2}"#,
        r#"{"data": {"u": 1}, "data": {"x": 1}}"#,
        r#"{"d\u0061ta": {"\u0075": 9}}"#,
        r#"{"u": null}"#,
        r#"{"x": {"u": 1}}"#,
        r#"[{"u": 1}]"#,
        r#"{"data": [1, 2]}"#,
        r#"{"data": "u"}"#,
        r#"5"#,
        r#""text""#,
        r#"{"u": 1} trailing"#,
        r#"{"u": 1"#,
        r#"not json"#,
        "  {\"u\" : { \"deep\" : [ {\"a\":1} ] } }  ",
    ];
    for source in [".u", ".E", ".data.u", ".data.E", ".data"] {
        let program = Program::compile(source).expect("compiles");
        for json in documents {
            if let Some(value) = program.path_value(json.as_bytes()) {
                assert_eq!(compact(&value), by_jq(&program, json), "{source} on {json}");
            }
        }
    }
}

#[test]
fn the_text_answers_where_the_path_is_plain_objects_and_jq_answers_the_rest() {
    let u = Program::compile(".u").expect("compiles");
    assert!(u.path_value(br#"{"a": [1, {"u": 0}], "u": 5}"#).is_some());
    for other in [&br#"{"x": 1}"#[..], b"[1]", b"5", b"{\"u\": 1", b"{} {}"] {
        assert!(
            u.path_value(other).is_none(),
            "{}",
            String::from_utf8_lossy(other)
        );
    }
    // Any other program is always jq's.
    let piped = Program::compile(".u | . + 1").expect("compiles");
    assert!(piped.path_value(br#"{"u": 5}"#).is_none());
}
