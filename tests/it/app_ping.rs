//! `app_ping` against real servers: one that answers `{"op":"ping"}` with `{"op":"pong"}`
//! (the feed stays up, answers are counted and not forwarded) and one that stops answering
//! at the application level while still answering WebSocket Pings (dead, reconnect).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn config(url: &str, metrics: u16) -> String {
    let keys = r#"
ping_interval = "100ms"
reconnect = { initial = "100ms", max = "300ms", jitter = 0.0 }
app_ping = { message = '{"op":"ping"}', interval = "300ms", expect = "pong", timeout = "1s" }
"#;
    TestConfig::feed_to_stdout(url, keys)
        .shutdown_timeout("2s")
        .metrics(metrics)
        .to_string()
}

async fn metric(port: u16, name: &str) -> u64 {
    let out = http_get(port, "/metrics").await;
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{upstream=\"feed\"}} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{out}"))
}

#[tokio::test]
async fn answered_app_pings_keep_the_feed_up_and_are_not_forwarded() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let mut daemon = Daemon::start(&config(&server.url("/"), port)).await;
    let mut conn = server.accept().await;
    // A silent feed that answers three app pings, then sends data.
    for _ in 0..3 {
        assert_eq!(conn.recv_text().await, r#"{"op":"ping"}"#);
        conn.send_text(r#"{"op":"pong"}"#).await;
    }
    conn.send_text("tick").await;
    let open = daemon.next_record().await;
    assert_eq!(open["type"], "open");
    let next = daemon.next_record().await;
    assert_eq!(next["data"], "tick", "the answers were forwarded: {next}");
    assert_eq!(next["seq"], 1);
    assert!(metric(port, "wsbridge_upstream_app_pings_answered_total").await >= 3);
    assert!(metric(port, "wsbridge_upstream_app_pings_sent_total").await >= 3);
    // Still the first connection.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.accept_any())
            .await
            .is_err()
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn a_server_silent_at_the_application_level_is_dead_and_reconnected() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&config(&server.url("/"), free_port())).await;
    let mut conn = server.accept().await;
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    // Reads (so tungstenite answers WebSocket Pings) but never answers the app ping.
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = conn.ws.next().await {
            if let Message::Text(t) = m {
                let _ = pings_tx.send(t.to_string());
            }
        }
        let _ = conn.ws.send(Message::Close(None)).await;
    });
    let ping = tokio::time::timeout(SOON, pings.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ping, r#"{"op":"ping"}"#);
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    let text = error["error"].as_str().unwrap();
    assert!(
        text.contains(r#"no answer containing "pong" to our app_ping within 1s"#),
        "{text}"
    );
    assert!(error["retry_in_ms"].is_u64());
    // Reconnected, and pinging again on the new connection.
    let mut again = server.accept().await;
    assert_eq!(again.recv_text().await, r#"{"op":"ping"}"#);
    reader.abort();
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn connect_answers_are_not_printed_with_app_ping() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let child = tokio::process::Command::new(bin())
        .args(["connect", &server.url("/"), "-U"])
        .args(["--app-ping", "PING", "--app-ping-expect", "PONG"])
        .args(["--app-ping-interval", "200ms", "--app-ping-timeout", "5s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, "PING");
    conn.send_text("PONG 1").await;
    assert_eq!(conn.recv_text().await, "PING");
    conn.send_text("PONG 2").await;
    conn.send_text("data").await;
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
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
}
