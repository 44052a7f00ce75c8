//! What `wsbridge connect` gets from the upstream task it runs on: the message limit counted
//! at the source, lingering for replies after stdin EOF, and the reconnect backoff.

use std::process::Stdio;

use crate::common::*;
use futures_util::StreamExt as _;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// `--max-messages` is counted by the connection, not by whatever writes stdout: with
/// `--send-only` nothing is written, and the connection still closes with 1000 after three.
#[tokio::test]
async fn max_messages_closes_with_1000_at_the_source_even_with_send_only() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    // Stdin stays open: only the limit can end the connection.
    let mut child = spawn_connect(&[&url, "--send-only", "--max-messages", "3"]);
    let stdin = child.stdin.take();
    let mut conn = server.accept().await;
    for i in 1..=10 {
        conn.send_text(&format!("m{i}")).await;
    }
    // Before, the limit was counted by the stdout writer, which `--send-only` does not have:
    // the Close never came.
    match conn.recv().await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected Close, got {other:?}"),
    }
    drop((conn, stdin, child));
}

/// With `--ndjson`, the records are the first three messages, then our Close.
#[tokio::test]
async fn max_messages_in_ndjson_ends_with_our_close_record() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut child = spawn_connect(&[&url, "-U", "--ndjson", "--max-messages", "3"]);
    drop(child.stdin.take());
    let mut conn = server.accept().await;
    for i in 1..=10 {
        conn.send_text(&format!("m{i}")).await;
    }
    match conn.recv().await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected Close, got {other:?}"),
    }
    drop(conn);
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("connect exits after the limit")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = records
        .iter()
        .map(|r| r["data"].as_str().unwrap_or(r["type"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, ["open", "m1", "m2", "m3", "close"], "{records:?}");
    assert_eq!(records[4]["code"], 1000);
}

/// `connect --reconnect` follows the same backoff: a server that sends one message and closes
/// is not reconnected to every `initial`.
#[tokio::test]
async fn connect_reconnect_backs_off_from_a_server_that_sends_one_message_and_closes() {
    let server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut accepts = crate::upstream::send_one_and_close(server);
    let mut child = spawn_connect(&[&url, "-U", "--reconnect"]);
    drop(child.stdin.take());
    // The default initial delay is 500 ms: connections at 0, 0.5, 1.5, 3.5 s, then 7.5 s.
    // Before, one every 500 ms: ~10.
    let connects =
        crate::upstream::connects_within(&mut accepts, std::time::Duration::from_secs(5)).await;
    assert!(
        (2..=5).contains(&connects),
        "{connects} connections in 5 s, expected about 4"
    );
    drop(child);
}

// ---------------------------------------------------------------------------------------
// Lingering after stdin EOF: until the peer is done, not for a fixed second.

/// A server that answers nothing (its library still answers Pings) is done at once: the
/// Close comes long before `--linger` (30 s) could run out, and connect exits 0.
#[tokio::test]
async fn a_silent_server_gets_our_close_long_before_the_linger_maximum() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut child = spawn_connect(&["--linger", "30s", &server.url("/")]);
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"x\n")
        .await
        .unwrap();
    drop(stdin);
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "x");
    // Reading answers the client's Pings; the first thing that is not one must be its Close,
    // well before the linger maximum.
    let close = tokio::time::timeout(SOON, async {
        loop {
            match conn.ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the Close before the 30 s linger maximum");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the client's Close, got {other:?}"),
    }
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("connect exits after its Close")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

// Against Python `websockets`, which answers our Close at once and drops the echoes it had not
// sent: closing right at EOF got 0 of 3 replies, 87,877 of 100,000, and none of a 100 KB
// binary round trip.

/// `tests/peers/websockets_echo.py` in its own process; it exits when this is dropped.
struct WebsocketsEcho {
    _child: tokio::process::Child,
    port: u16,
}

impl WebsocketsEcho {
    async fn start() -> WebsocketsEcho {
        use tokio::io::AsyncBufReadExt;
        let python = python();
        let how = "set WSBRIDGE_TEST_PYTHON to a Python with `websockets` (tests/peers/requirements.txt), or run tests/run.sh";
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/websockets_echo.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped()) // held by `child`: EOF (our end) ends the server
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {how}", python.display()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("websockets_echo.py listening within 30 s")
            .unwrap()
            .unwrap_or_else(|| panic!("websockets_echo.py exited; {how}"));
        let port = first
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected `LISTENING <port>`, got {first:?}"));
        WebsocketsEcho {
            _child: child,
            port,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

/// The README's recipe: `wsbridge connect URL < file > replies` (default `--linger`).
async fn send_file(url: &str, extra: &[&str], input: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests");
    std::fs::write(&path, input).unwrap();
    let child = connect_cmd(&[url])
        .args(extra)
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(SOON * 3, child.wait_with_output())
        .await
        .expect("connect exits in time")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    out.stdout
}

#[tokio::test]
#[ignore = "needs Python websockets; tests/run.sh runs it"]
async fn sending_three_lines_to_a_websockets_echo_server_keeps_every_reply() {
    let server = WebsocketsEcho::start().await;
    let input = b"{\"op\":\"add\",\"n\":1}\n{\"op\":\"add\",\"n\":2}\n{\"op\":\"add\",\"n\":3}\n";
    let replies = send_file(&server.url(), &[], input).await;
    assert_eq!(text(&replies), text(input));
    // With a linger maximum far beyond the test's bound: the end comes from the peer.
    let replies = send_file(&server.url(), &["--linger", "60s"], input).await;
    assert_eq!(text(&replies), text(input));
}

#[tokio::test]
#[ignore = "needs Python websockets; tests/run.sh runs it"]
async fn sending_100000_lines_to_a_websockets_echo_server_keeps_every_reply() {
    let server = WebsocketsEcho::start().await;
    let input: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
    let replies = send_file(&server.url(), &[], input.as_bytes()).await;
    let replies = text(&replies);
    assert_eq!(replies.lines().count(), 100_000);
    assert!(replies == input, "the replies differ from the lines sent");
}

#[tokio::test]
#[ignore = "needs Python websockets; tests/run.sh runs it"]
async fn a_100kb_binary_round_trip_through_websockets_comes_back_whole() {
    let server = WebsocketsEcho::start().await;
    let input: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let replies = send_file(&server.url(), &["--binary"], &input).await;
    assert_eq!(replies.len(), input.len());
    assert!(replies == input, "the bytes differ");
}
