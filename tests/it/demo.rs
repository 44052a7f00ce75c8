//! `wsbridge demo`: where it listens, how it ends, and what it refuses.

use std::process::Stdio;

use crate::common::*;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn demo(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn records(args: &[&str]) -> (Vec<Value>, std::process::Output) {
    let out = tokio::time::timeout(SOON, demo(args).output())
        .await
        .expect("the demo ends in time")
        .unwrap();
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (records, out)
}

#[tokio::test]
async fn the_last_record_is_the_bridges_close_without_a_retry() {
    let (records, out) = records(&["--count", "3", "--interval", "10ms"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ticks = records
        .iter()
        .filter(|r| r["type"] == "text" && r["data"].as_str().unwrap().contains("price"))
        .count();
    assert_eq!(ticks, 3, "{records:?}");
    let last = records.last().unwrap();
    assert_eq!(last["type"], "close", "{records:?}");
    assert!(
        last.get("retry_in_ms").is_none(),
        "the demo ends, it does not reconnect: {last}"
    );
}

#[tokio::test]
async fn a_zero_interval_is_a_usage_error_not_a_panic() {
    let out = tokio::time::timeout(SOON, demo(&["--interval", "0s"]).output())
        .await
        .expect("exits at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 1ms"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn listen_puts_the_server_where_other_clients_find_it() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = demo(&["--listen", &listen, "--interval", "10ms"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(SOON, lines.next_line())
        .await
        .expect("a record in time")
        .unwrap()
        .expect("the open record");
    let open: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(open["type"], "open");
    assert!(
        open["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{listen}/")),
        "{open}"
    );
    // Another client (as `wsbridge run -c config/demo.toml` would be) gets ticks too.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{listen}/"))
        .await
        .unwrap();
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::text("{}"))
        .await
        .unwrap();
    let reply = tokio::time::timeout(SOON, ws.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap();
    assert!(reply.is_text(), "{reply:?}");
    drop(ws);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn a_taken_listen_address_names_it_and_the_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = tokio::time::timeout(SOON, demo(&["--listen", &listen]).output())
        .await
        .expect("exits at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {listen} for the demo server")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    drop(taken);
}
