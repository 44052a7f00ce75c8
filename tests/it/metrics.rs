//! `[metrics]`: Prometheus text at /metrics, JSON at /status, /healthz, and `wsbridge status`,
//! scraped from a real daemon while a real server sends traffic.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Sends `request` on a new connection and reads the whole answer: (status code, the
/// answer's head, what followed the head).
async fn exchange(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = connect_tcp(([127, 0, 0, 1], port).into()).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), rest.to_string())
}

/// A plain HTTP GET: (status code, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    let (code, _, body) = exchange(port, &format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")).await;
    (code, body)
}

/// The value of one sample line of the Prometheus text, e.g.
/// `wsbridge_upstream_messages_received_total{upstream="feed"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Polls `/metrics` until `series` has `want` (counters are read while traffic flows).
async fn wait_for_sample(port: u16, series: &str, want: f64) -> String {
    let deadline = Instant::now() + SOON;
    loop {
        let (code, text) = get(port, "/metrics").await;
        assert_eq!(code, 200);
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(url: &str, metrics_port: u16, sink_port: u16) -> String {
    let upstream = r#"
required = true
reconnect = { initial = "200ms", max = "1s" }
"#;
    TestConfig::new()
        .metrics(metrics_port)
        .upstream("feed", url, upstream)
        .sink("tcp", &format!("listen = \"127.0.0.1:{sink_port}\""))
        .to_string()
}

/// A daemon of [`config`] with its upstream connected to a fresh server.
struct Fed {
    server: TestServer,
    daemon: Daemon,
    /// The server's side of the upstream's connection.
    conn: Conn,
    metrics_port: u16,
    sink_port: u16,
}

async fn fed() -> Fed {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let (metrics_port, sink_port) = (free_port(), free_port());
    let daemon = Daemon::start(&config(&server.url("/"), metrics_port, sink_port)).await;
    let conn = server.accept().await;
    Fed {
        server,
        daemon,
        conn,
        metrics_port,
        sink_port,
    }
}

/// Polls `/metrics` until the upstream's state is `state` (1 open, 2 backoff).
async fn wait_state(port: u16, state: f64) {
    wait_for_sample(port, "wsbridge_upstream_state{upstream=\"feed\"}", state).await;
}

#[tokio::test]
async fn counters_match_the_traffic_and_state_and_health_follow_the_upstream() {
    let Fed {
        server,
        daemon,
        mut conn,
        metrics_port,
        sink_port,
    } = fed().await;
    let mut reader = RecordReader::new(connect_tcp(([127, 0, 0, 1], sink_port).into()).await);
    daemon.wait_for_log("client connected").await;

    let (code, body) = get(metrics_port, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let mut bytes = 0;
    for i in 0..250 {
        let message = format!("message number {i}");
        bytes += message.len();
        conn.send_text(&message).await;
    }
    conn.send_text("from the client, please").await;
    bytes += "from the client, please".len();
    let text = wait_for_sample(
        metrics_port,
        "wsbridge_upstream_messages_received_total{upstream=\"feed\"}",
        251.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "wsbridge_upstream_bytes_received_total{upstream=\"feed\"}"
        ),
        Some(bytes as f64)
    );
    assert_eq!(
        sample(&text, "wsbridge_upstream_state{upstream=\"feed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "wsbridge_upstream_connects_total{upstream=\"feed\"}"),
        Some(1.0)
    );
    let clients = format!("wsbridge_sink_clients{{sink=\"tcp:127.0.0.1:{sink_port}\"}}");
    assert_eq!(sample(&text, &clients), Some(1.0), "{text}");
    assert!(
        sample(
            &text,
            "wsbridge_upstream_last_message_age_seconds{upstream=\"feed\"}"
        )
        .is_some(),
        "{text}"
    );

    // The sink counts exactly the records its client read (the 251 messages, plus the open
    // record if the client connected before the upstream did).
    let written =
        format!("wsbridge_sink_records_written_total{{sink=\"tcp:127.0.0.1:{sink_port}\"}}");
    let (mut data, mut records) = (0, 0);
    while data < 251 {
        let record = reader.next().await;
        records += 1;
        data += usize::from(is_data(&record));
    }
    wait_for_sample(metrics_port, &written, records as f64).await;

    // Inbound: sent messages are counted.
    let status = status_of(([127, 0, 0, 1], metrics_port).into()).await;
    assert_eq!(status.upstreams[0].messages_received, 251);
    assert!(status.healthy);

    // Kill the server: state goes to backoff (2), /healthz to 503, disconnects are counted.
    let addr = server.stop();
    drop(conn);
    wait_state(metrics_port, 2.0).await;
    let (code, body) = get(metrics_port, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("feed"), "{body}");
    let text = get(metrics_port, "/metrics").await.1;
    let lost = sample(
        &text,
        "wsbridge_upstream_disconnects_total{upstream=\"feed\",cause=\"connection_lost\"}",
    )
    .unwrap();
    assert!(lost >= 1.0, "{text}");

    // Back up: open again, healthy again.
    let mut server = TestServer::start_on(addr, ServerOptions::default()).await;
    let _conn = server.accept().await;
    wait_state(metrics_port, 1.0).await;
    let (code, _) = get(metrics_port, "/healthz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn wsbridge_status_prints_a_row_per_upstream_and_sink() {
    let Fed {
        daemon,
        mut conn,
        metrics_port,
        sink_port,
        ..
    } = fed().await;
    for i in 0..7 {
        conn.send_text(&format!("m{i}")).await;
    }
    wait_for_sample(
        metrics_port,
        "wsbridge_upstream_messages_received_total{upstream=\"feed\"}",
        7.0,
    )
    .await;
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["status", "-c"])
            .arg(&daemon.config_path),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let feed = table
        .lines()
        .find(|l| l.starts_with("feed*"))
        .unwrap_or_else(|| panic!("no feed row:\n{table}"));
    let cells: Vec<&str> = feed.split_whitespace().collect();
    assert_eq!(cells[1], "open", "{table}");
    assert_eq!(cells[4], "7", "received column: {table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("tcp:127.0.0.1:{sink_port}"))),
        "{table}"
    );
    assert!(table.contains("health: ok"), "{table}");

    // The operator running `status` need not have the daemon's secrets.
    let with_secret = daemon.dir.path().join("secret.toml");
    let text = std::fs::read_to_string(&daemon.config_path)
        .unwrap()
        .replace(
            "required = true",
            "required = true\nheaders = { Authorization = \"Bearer ${WSB_NOT_SET_HERE}\" }",
        );
    std::fs::write(&with_secret, text).unwrap();
    run_ok(
        std::process::Command::new(bin())
            .args(["status", "-c"])
            .arg(&with_secret)
            .env_remove("WSB_NOT_SET_HERE"),
    );

    // Without [metrics], status says what to add.
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[[sink]]\ntype = \"stdout\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["status", "-c"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[metrics]"));
}

#[tokio::test]
async fn sigusr1_logs_the_summary() {
    let fed = fed().await;
    wait_state(fed.metrics_port, 1.0).await;
    let daemon = &fed.daemon;
    daemon.signal(10);
    daemon.wait_for_log("1/1 upstreams open").await;
}

/// A HEAD request: (status code, the answer's head in lower case, what followed the head).
async fn head(port: u16, path: &str) -> (u16, String, String) {
    let request = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (code, head, rest) = exchange(port, &request).await;
    (code, head.to_ascii_lowercase(), rest)
}

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let fed = fed().await;
    let metrics_port = fed.metrics_port;
    wait_state(metrics_port, 1.0).await;
    for path in ["/healthz", "/status", "/metrics"] {
        let (code, head_text, rest) = head(metrics_port, path).await;
        assert_eq!(code, 200, "HEAD {path}: {head_text}");
        assert!(rest.is_empty(), "HEAD {path} has no body: {rest:?}");
        let (_, body) = get(metrics_port, path).await;
        if path == "/healthz" {
            // The other documents change between two requests; this one does not.
            assert!(
                head_text.contains(&format!("content-length: {}", body.len())),
                "HEAD {path} announces GET's length: {head_text}"
            );
        }
    }
    let post = "POST /healthz HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let (code, head_text, _) = exchange(metrics_port, post).await;
    assert_eq!(code, 405, "{head_text}");
    assert!(
        head_text.to_ascii_lowercase().contains("allow: get, head"),
        "{head_text}"
    );
}

#[tokio::test]
async fn a_taken_metrics_port_is_reported_once_with_what_to_do() {
    // Held by the test for the daemon's whole life.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = taken.local_addr().unwrap().port();
    let server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&config(&server.url("/"), metrics_port, free_port())).await;
    let status = tokio::time::timeout(SOON, daemon.child.wait())
        .await
        .expect("run exits when [metrics] cannot bind")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{metrics_port} for [metrics]"
        )) && stderr.contains("pick a free port"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "the OS error once: {stderr}"
    );
    drop(taken);
}
