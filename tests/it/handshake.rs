//! Refused handshakes against a plain HTTP server that refuses with a chosen status: how
//! long the daemon waits before the next attempt (measured where the server accepts), the
//! `status` in the error record and the `handshake_refused` count.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::*;

/// A server answering every request with `response`; sends the time of each accepted
/// connection.
async fn refusing_server(response: &'static str) -> (String, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = tx.send(Instant::now());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, rx)
}

fn config(url: &str, metrics: u16) -> String {
    let reconnect = r#"reconnect = { initial = "100ms", max = "2s", jitter = 0.0 }"#;
    TestConfig::feed_to_stdout(url, reconnect)
        .shutdown_timeout("2s")
        .metrics(metrics)
        .to_string()
}

async fn next_accept(rx: &mut mpsc::UnboundedReceiver<Instant>) -> Instant {
    tokio::time::timeout(SOON, rx.recv())
        .await
        .expect("an attempt in time")
        .expect("server running")
}

#[tokio::test]
async fn unauthorized_waits_reconnect_max_before_the_next_attempt() {
    let (url, mut accepts) = refusing_server(
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad api key\n",
    )
    .await;
    let port = free_port();
    let mut daemon = Daemon::start(&config(&url, port)).await;
    let first = next_accept(&mut accepts).await;
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    assert_eq!(error["status"], 401);
    assert_eq!(error["retry_in_ms"], 2000, "reconnect.max, not initial");
    let text = error["error"].as_str().unwrap();
    assert!(
        text.contains("HTTP 401 Unauthorized: bad api key"),
        "{text}"
    );
    let second = next_accept(&mut accepts).await;
    // A lower bound only: the daemon must not come back before reconnect.max.
    assert!(
        second - first >= Duration::from_secs(2),
        "tried again after {:?}",
        second - first
    );
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains(
            r#"wsbridge_upstream_disconnects_total{upstream="feed",cause="handshake_refused"} "#
        ),
        "{metrics}"
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (url, mut accepts) = refusing_server(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut daemon = Daemon::start(&config(&url, free_port())).await;
    let first = next_accept(&mut accepts).await;
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    assert_eq!(error["status"], 429);
    assert_eq!(error["retry_in_ms"], 2000, "what Retry-After said");
    let second = next_accept(&mut accepts).await;
    assert!(
        second - first >= Duration::from_secs(2),
        "tried again after {:?}",
        second - first
    );
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn other_statuses_use_the_normal_backoff() {
    let (url, mut accepts) = refusing_server(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut daemon = Daemon::start(&config(&url, free_port())).await;
    next_accept(&mut accepts).await;
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    assert_eq!(error["status"], 500);
    assert_eq!(error["retry_in_ms"], 100, "reconnect.initial");
    daemon.signal(15);
    assert!(daemon.wait().await.success());
}
