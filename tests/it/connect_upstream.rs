//! What `wsbridge connect` gets from the upstream task it runs on: the message limit counted
//! at the source, lingering for replies after stdin EOF, and the reconnect backoff.

use std::process::Stdio;

use crate::common::*;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Starts `wsbridge connect ARGS` with stdin, stdout and stderr piped.
fn spawn_connect(args: &[&str]) -> tokio::process::Child {
    Command::new(bin())
        .arg("connect")
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
