//! `reply` against a real server that sends its own application pings (`{"ping":N}`)
//! between data messages: every ping is answered with `{"pong":N}`, in order, and only the
//! data reaches the sinks; a message the program fails on is counted and forwarded; `check`
//! places a syntax error at its line; `connect --reply` answers too.

use std::process::Stdio;

use crate::common::*;

const PONG: &str = r#"select(type == "object" and has("ping")) | {pong: .ping}"#;

fn config(url: &str, metrics: u16, reply: &str) -> String {
    TestConfig::feed_to_stdout(url, &format!("reply = '{reply}'"))
        .shutdown_timeout("2s")
        .metrics(metrics)
        .to_string()
}

#[tokio::test]
async fn pings_are_answered_in_order_and_only_the_data_reaches_the_sinks() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let mut daemon = Daemon::start(&config(&server.url("/"), port, PONG)).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    // One at a time: each answer comes without any further message to push it out.
    for n in 0..5u64 {
        let ping = 1_700_000_000_000 + n;
        conn.send_text(&format!(r#"{{"ping":{ping}}}"#)).await;
        assert_eq!(conn.recv_text().await, format!(r#"{{"pong":{ping}}}"#));
        conn.send_text(&format!(r#"{{"price":{n}}}"#)).await;
    }
    // A burst: pings interleaved with data, all sent before any answer is read.
    for n in 5..105u64 {
        conn.send_text(&format!(r#"{{"ping":{n}}}"#)).await;
        conn.send_text(&format!(r#"{{"price":{n}}}"#)).await;
    }
    for n in 5..105u64 {
        assert_eq!(conn.recv_text().await, format!(r#"{{"pong":{n}}}"#));
    }
    for n in 0..105u64 {
        let record = daemon.next_record().await;
        assert_eq!(record["type"], "text", "{record}");
        assert_eq!(record["data"], format!(r#"{{"price":{n}}}"#), "{record}");
        assert_eq!(record["seq"], n + 1, "pings take no seq: {record}");
    }
    let row = upstream_status(port).await;
    assert_eq!(row["replies_sent"], 105, "{row}");
    assert_eq!(row["reply_errors"], 0, "{row}");
    assert_eq!(
        row["messages_sent"], 0,
        "replies are not messages_sent: {row}"
    );
    assert_eq!(row["messages_received"], 105, "{row}");
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("wsbridge_upstream_replies_sent_total{upstream=\"feed\"} 105"),
        "{metrics}"
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn a_message_the_program_fails_on_is_counted_and_forwarded() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    // A number plus a string fails; a string ping is answered.
    let reply = r#"select(has("ping")) | {pong: (.ping + "x")}"#;
    let mut daemon = Daemon::start(&config(&server.url("/"), port, reply)).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    conn.send_text(r#"{"ping":1}"#).await;
    conn.send_text(r#"{"ping":"a"}"#).await;
    // Nothing went out for the failed one: the first answer is the second ping's.
    assert_eq!(conn.recv_text().await, r#"{"pong":"ax"}"#);
    let record = daemon.next_record().await;
    assert_eq!(record["data"], r#"{"ping":1}"#, "{record}");
    assert_eq!(record["seq"], 1);
    let row = upstream_status(port).await;
    assert_eq!(
        (&row["reply_errors"], &row["replies_sent"]),
        (&1.into(), &1.into()),
        "{row}"
    );
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("wsbridge_upstream_reply_errors_total{upstream=\"feed\"} 1"),
        "{metrics}"
    );
    daemon
        .wait_for_log("reply failed on a message; the message is forwarded unanswered")
        .await;
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[test]
fn check_reports_a_syntax_error_in_reply_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsbridge.toml");
    let text = "[[upstream]]\nname = \"feed\"\nurl = \"ws://127.0.0.1:1/\"\nreply = '''\nselect(has(\"ping\"))\n  | {pong: .ping'''\n\n[[sink]]\ntype = \"stdout\"\n";
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "{}:6:17: upstream[0].reply: the jq program does not compile: expected closing brace at line 2, column 17 of the program",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test]
async fn connect_answers_pings_and_prints_only_the_data() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let child = tokio::process::Command::new(bin())
        .args(["connect", &server.url("/"), "-U", "--reply", PONG])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    conn.send_text(r#"{"ping":7}"#).await;
    assert_eq!(conn.recv_text().await, r#"{"pong":7}"#);
    conn.send_text("data").await;
    conn.send_text(r#"{"ping":8}"#).await;
    assert_eq!(conn.recv_text().await, r#"{"pong":8}"#);
    conn.send_text(r#"{"price":1}"#).await;
    conn.send_close(1000, "").await;
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "data\n{\"price\":1}\n"
    );
}

/// A server that wants the bare text `pong` (not the JSON string `"pong"`): a string result is
/// sent as its text, any other value as compact JSON.
#[tokio::test]
async fn a_string_result_is_sent_as_its_text() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let reply = r#"if .op? == "ping" then "pong" elif .op? == "hb" then {op: "hb"} else empty end"#;
    let mut daemon = Daemon::start(&config(&server.url("/"), port, reply)).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    conn.send_text(r#"{"op":"ping"}"#).await;
    assert_eq!(conn.recv_text().await, "pong");
    conn.send_text(r#"{"op":"hb"}"#).await;
    assert_eq!(conn.recv_text().await, r#"{"op":"hb"}"#);
    conn.send_text(r#"{"price":1}"#).await;
    let record = daemon.next_record().await;
    assert_eq!(record["data"], r#"{"price":1}"#, "{record}");
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}
