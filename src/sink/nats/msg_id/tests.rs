use std::path::Path;

use super::*;
use crate::config::Config;
use crate::sink::registry::SINKS;

fn sink(extra: &str) -> (NatsConfig, SinkConfig) {
    let text = format!(
        "[[upstream]]\nname = \"f\"\nurl = \"ws://127.0.0.1:1/\"\n\n[[sink]]\ntype = \"nats\"\njetstream = true\n{extra}\n"
    );
    let config = Config::parse(&text, Path::new("t.toml"), &SINKS).unwrap();
    let sink = config.sinks.into_iter().next().unwrap();
    let nats = sink.settings.get::<NatsConfig>().unwrap().clone();
    (nats, sink)
}

fn record(seq: Option<u64>, line: &[u8]) -> Record<'_> {
    Record {
        upstream: Some("f"),
        seq,
        ts: 10,
        line,
    }
}

#[test]
fn content_ignores_seq_and_ts() {
    let a = br#"{"upstream":"f","seq":1,"ts":10,"type":"text","data":"x"}"#;
    let b = br#"{"upstream":"f","seq":7,"ts":99,"type":"text","data":"x"}"#;
    assert_eq!(hash(content(a, true)), hash(content(b, true)));
    assert_ne!(hash(content(a, false)), hash(content(b, false)));
    assert_eq!(hash(b"x").len(), 32);
}

#[test]
fn two_sinks_never_share_an_id_and_replicas_do() {
    let line = br#"{"upstream":"f","seq":1,"ts":10,"type":"text","data":"x"}"#;
    let ids = |extra: &str| {
        let (nats, s) = sink(extra);
        MsgIds::new(&nats, &s).id("f", &record(Some(1), line), line)
    };
    let raw = ids("subject = \"raw.{upstream}\"");
    let copy = ids("subject = \"copy.{upstream}\"");
    assert_ne!(raw, copy);
    assert_eq!(raw, ids("subject = \"raw.{upstream}\""));
    assert!(
        raw.starts_with("f:") && raw.ends_with(&format!(":{}:1", run_id())),
        "{raw}"
    );
    let content = |extra: &str| ids(&format!("msg_id = \"content\"\n{extra}"));
    assert_ne!(
        content("subject = \"a.{upstream}\""),
        content("subject = \"b.{upstream}\"")
    );
    assert_ne!(content(""), content("format = \"raw\""));
}

#[test]
fn jq_takes_the_id_from_the_message_and_falls_back_to_seq() {
    let (nats, s) = sink("msg_id = { jq = \".t\" }");
    let mut ids = MsgIds::new(&nats, &s);
    let sink_id = identity(&nats, &s);
    let trade =
        br#"{"upstream":"f","seq":3,"ts":10,"type":"text","data":"{\"t\":12345,\"p\":1.5}"}"#;
    assert_eq!(
        ids.id("f", &record(Some(3), trade), trade),
        format!("f:{sink_id}:12345")
    );
    // The same message in another daemon (other seq and ts): the same id.
    let again =
        br#"{"upstream":"f","seq":9,"ts":77,"type":"text","data":"{\"t\":12345,\"p\":1.5}"}"#;
    assert_eq!(
        ids.id("f", &record(Some(9), again), again),
        format!("f:{sink_id}:12345")
    );
    let other = br#"{"upstream":"f","seq":4,"ts":10,"type":"text","data":"{\"p\":1.5}"}"#;
    assert_eq!(
        ids.id("f", &record(Some(4), other), other),
        format!("f:{sink_id}:{}:4", run_id())
    );
    let text = br#"{"upstream":"f","seq":5,"ts":10,"type":"text","data":"not json"}"#;
    assert!(ids.id("f", &record(Some(5), text), text).ends_with(":5"));
    let (nats, s) = sink("msg_id = { jq = \".s\" }");
    let mut ids = MsgIds::new(&nats, &s);
    let long = format!(
        r#"{{"upstream":"f","seq":6,"ts":10,"type":"json","data":{{"s":"a b\n{}"}}}}"#,
        "x".repeat(100)
    );
    let id = ids.id("f", &record(Some(6), long.as_bytes()), long.as_bytes());
    assert!(
        id.bytes().all(|b| b.is_ascii_graphic()) && id.len() < 60,
        "{id}"
    );
}

#[test]
fn raw_lines_are_read_as_json() {
    let (nats, s) = sink("format = \"raw\"\nmsg_id = { jq = \".u\" }");
    let mut ids = MsgIds::new(&nats, &s);
    let line = br#"{"u":"77"}"#;
    assert!(ids.id("f", &record(Some(1), line), line).ends_with(":77"));
}
