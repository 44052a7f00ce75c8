//! `wsbridge replay FILE…`: a recording written here (as a file sink or `connect --ndjson`
//! writes it) is served at `/<upstream>`; clients get exactly its text and binary payloads in
//! order, spaced by `ts` / `--speed`, then Close 1000; `.gz` files and `--loop`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// What a recorded data record carries.
enum Payload {
    Text(&'static str),
    Binary(&'static [u8]),
}

/// Writes records of `upstream` as NDJSON lines, `gap_ms` apart, with an open event first and
/// a line that is not a record in the middle (skipped).
fn recording(upstreams: &[(&str, &[Payload])], gap_ms: u64) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut ts = 1_764_000_000_000u64;
    for (upstream, payloads) in upstreams {
        let open = json!({"upstream": upstream, "ts": ts, "type": "open", "url": "wss://x/"});
        writeln!(out, "{open}").unwrap();
        for (i, payload) in payloads.iter().enumerate() {
            let record = match payload {
                Payload::Text(t) => {
                    json!({"upstream": upstream, "seq": i + 1, "ts": ts, "type": "text", "data": t})
                }
                Payload::Binary(b) => json!({"upstream": upstream, "seq": i + 1, "ts": ts,
                    "type": "binary", "data": base64::engine::general_purpose::STANDARD.encode(b)}),
            };
            writeln!(out, "{record}").unwrap();
            ts += gap_ms;
            if i == 0 {
                writeln!(out, "not a record").unwrap();
            }
        }
    }
    out
}

/// `wsbridge replay ARGS --listen 127.0.0.1:0`, with the address it printed.
async fn replay(args: &[&str], files: &[&Path]) -> (Child, SocketAddr) {
    let mut child = Command::new(bin())
        .arg("replay")
        .args(files)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start wsbridge replay");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = timeout(SOON, lines.next_line())
        .await
        .expect("LISTENING in time")
        .unwrap()
        .expect("a first line");
    let addr = first
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("not LISTENING: {first}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// Every data message of `url` until the server's Close, with that Close's code.
async fn receive_all(url: &str) -> (Vec<Message>, Option<CloseCode>) {
    let (mut ws, _) = timeout(SOON, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut messages = Vec::new();
    loop {
        match timeout(SOON, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Close(frame))) => return (messages, frame.map(|f| f.code)),
            Some(Ok(m)) if m.is_text() || m.is_binary() => messages.push(m),
            Some(Ok(_)) => {}
            other => panic!("connection ended without Close: {other:?}"),
        }
    }
}

const A: &[Payload] = &[
    Payload::Text("{\"p\":1}"),
    Payload::Binary(&[0, 1, 2, 255]),
    Payload::Text("three"),
    Payload::Text("line\nbreak"),
];
const B: &[Payload] = &[Payload::Text("b1"), Payload::Text("b2")];

fn expected(payloads: &[Payload]) -> Vec<Message> {
    payloads
        .iter()
        .map(|p| match p {
            Payload::Text(t) => Message::text(*t),
            Payload::Binary(b) => Message::binary(b.to_vec()),
        })
        .collect()
}

#[tokio::test]
async fn each_upstream_is_served_at_its_path_exactly_then_close_1000() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.ndjson");
    // An hour between messages: only --speed 0 ends in time.
    std::fs::write(&file, recording(&[("a", A), ("b", B)], 3_600_000)).unwrap();
    let (_child, addr) = replay(&["--speed", "0"], &[&file]).await;

    let (messages, close) = receive_all(&format!("ws://{addr}/a")).await;
    assert_eq!(messages, expected(A));
    assert_eq!(close, Some(CloseCode::Normal));
    let (messages, _) = receive_all(&format!("ws://{addr}/b")).await;
    assert_eq!(messages, expected(B));

    match tokio_tungstenite::connect_async(format!("ws://{addr}/nope")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("/a, /b"), "{body}");
        }
        other => panic!("expected 404, got {other:?}"),
    }

    // `wsbridge connect` prints the same payloads, one a line, and exits 0 on Close 1000.
    let out = timeout(
        SOON,
        Command::new(bin())
            .args(["connect", &format!("ws://{addr}/b"), "-U"])
            .output(),
    )
    .await
    .expect("connect ends in time")
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b1\nb2\n");
}

#[tokio::test]
async fn gzip_input_and_loop_repeat_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&recording(&[("b", B)], 5)).unwrap();
    std::fs::write(&file, gz.finish().unwrap()).unwrap();
    let (_child, addr) = replay(&["--speed", "0", "--loop"], &[&file]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/b"))
        .await
        .expect("handshake");
    let mut texts = Vec::new();
    while texts.len() < 7 {
        match timeout(SOON, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(texts, ["b1", "b2", "b1", "b2", "b1", "b2", "b1"]);
}

#[tokio::test]
async fn the_recorded_spacing_is_divided_by_speed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.ndjson");
    // Five messages 500 ms apart: a span of 2 s, 1 s at --speed 2.
    let five = [
        Payload::Text("1"),
        Payload::Text("2"),
        Payload::Text("3"),
        Payload::Text("4"),
        Payload::Text("5"),
    ];
    std::fs::write(&file, recording(&[("s", &five)], 500)).unwrap();
    let (_child, addr) = replay(&["--speed", "2"], &[&file]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/s"))
        .await
        .expect("handshake");
    let mut at = Vec::new();
    while at.len() < 5 {
        match timeout(SOON, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(_))) => at.push(Instant::now()),
            other => panic!("unexpected: {other:?}"),
        }
    }
    let span = at[4] - at[0];
    // Never earlier than the recording says; the upper bound only tells 2 from 1.
    assert!(
        span >= std::time::Duration::from_millis(950) && span < std::time::Duration::from_secs(2),
        "5 messages 500 ms apart at --speed 2 took {span:?}"
    );
}

#[tokio::test]
async fn a_file_without_records_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("raw.txt");
    std::fs::write(&file, "just\nlines\n").unwrap();
    let out = timeout(SOON, Command::new(bin()).arg("replay").arg(&file).output())
        .await
        .expect("exits in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no text or binary record in"), "{stderr}");
}

#[tokio::test]
async fn a_recording_written_by_another_tool_is_played_by_its_json_not_its_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("python.ndjson");
    // As Python's json.dumps writes records: a space after each colon and comma, keys in
    // another order, an escaped upstream name, and a line of another upstream between them.
    let lines = [
        r#"{"upstream": "trades", "seq": 1, "ts": 1764000000000, "type": "text", "data": "m1"}"#,
        r#"{"upstream": "other", "seq": 1, "ts": 1764000000000, "type": "text", "data": "x"}"#,
        r#"{"seq": 2, "type": "text", "data": "m2", "ts": 1764000000001, "upstream": "trades"}"#,
        r#"{"upstream":"tr\u0061des","seq":3,"ts":1764000000002,"type":"text","data":"m3"}"#,
        r#"  {"upstream" :"trades","seq":4,"ts":1764000000003,"type":"text","data":"m4"}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (_child, addr) = replay(&["--speed", "0"], &[&file]).await;
    let (messages, close) = receive_all(&format!("ws://{addr}/trades")).await;
    assert_eq!(
        messages,
        ["m1", "m2", "m3", "m4"].map(Message::text).to_vec(),
        "every trades record, whatever its spacing and key order"
    );
    assert_eq!(close, Some(CloseCode::Normal));
}
