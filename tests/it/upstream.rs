//! The upstream side of `wsbridge run` against a real tokio-tungstenite server: handshake
//! contents, on_connect, reconnect after a server restart, backoff timing and autoping.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use tokio::time::Instant;

fn upstream_config(url: &str, extra: &str) -> String {
    let reconnect = r#"reconnect = { initial = "100ms", max = "500ms", jitter = 0.0 }"#;
    TestConfig::feed_to_stdout(url, &format!("{reconnect}\n{extra}"))
        .shutdown_timeout("2s")
        .to_string()
}

#[tokio::test]
async fn handshake_carries_headers_cookies_subprotocol_and_origin() {
    let mut server = TestServer::start(ServerOptions {
        protocol: Some("superchat".into()),
        ..Default::default()
    })
    .await;
    let extra = r#"
headers = { X-Api-Key = "${WSB_TEST_KEY}", X-Client = "wsbridge-test" }
cookies = { session = "abc123", theme = "dark" }
subprotocols = ["chat", "superchat"]
origin = "https://example.test"
"#;
    let dir = tempfile::tempdir().unwrap();
    let config = upstream_config(&server.url("/stream?x=1"), extra);
    let mut daemon = Daemon::start_with_env(dir, &config, &[("WSB_TEST_KEY", "k-s3cret-42")]).await;
    let conn = server.accept().await;
    assert_eq!(conn.path, "/stream?x=1");
    assert_eq!(conn.header("x-api-key"), Some("k-s3cret-42"));
    assert_eq!(conn.header("x-client"), Some("wsbridge-test"));
    assert_eq!(conn.header("cookie"), Some("session=abc123; theme=dark"));
    assert_eq!(
        conn.header("sec-websocket-protocol"),
        Some("chat, superchat")
    );
    assert_eq!(conn.header("origin"), Some("https://example.test"));

    let open = daemon.next_record().await;
    assert_eq!(open["type"], "open");
    assert_eq!(open["upstream"], "feed");
    assert_eq!(open["protocol"], "superchat");
    assert_eq!(
        open["url"],
        server.url("/stream?x=***"),
        "query values are hidden"
    );

    daemon.signal(15);
    assert!(daemon.wait().await.success());
    assert!(
        !daemon.stderr().contains("k-s3cret-42"),
        "a header value reached the log"
    );
}

#[tokio::test]
async fn on_connect_messages_are_sent_in_order_after_every_reconnect() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let extra = r#"on_connect = ['{"op":"subscribe","args":["a"]}', "second"]"#;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), extra)).await;
    for round in 0..3 {
        let mut conn = server.accept().await;
        assert_eq!(
            conn.recv_text().await,
            r#"{"op":"subscribe","args":["a"]}"#,
            "round {round}"
        );
        assert_eq!(conn.recv_text().await, "second", "round {round}");
        drop(conn); // the server hangs up: the bridge must reconnect and subscribe again
    }
    daemon.record_where("open", |r| r["type"] == "open").await;
}

#[tokio::test]
async fn server_restart_gives_error_then_open_and_seq_keeps_counting() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), "")).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    for i in 1..=3 {
        conn.send_text(&format!("before-{i}")).await;
    }
    for i in 1..=3 {
        let r = daemon.next_record().await;
        assert_eq!(
            (r["seq"].as_u64(), r["data"].as_str()),
            (Some(i), Some(format!("before-{i}").as_str()))
        );
    }

    // Kill: stop listening and drop the connection without a Close frame.
    let addr = server.stop();
    drop(conn);
    let error = daemon.next_record().await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(error["retry_in_ms"].as_u64().is_some(), "{error}");

    let mut server = TestServer::start_on(addr, ServerOptions::default()).await;
    let mut conn = server.accept().await;
    let open = daemon
        .record_where("open after restart", |r| r["type"] == "open")
        .await;
    assert_eq!(open["upstream"], "feed");
    conn.send_text("after").await;
    let r = daemon.record_where("data after restart", is_data).await;
    assert_eq!(
        (r["seq"].as_u64(), r["data"].as_str()),
        (Some(4), Some("after"))
    );
}

#[tokio::test]
async fn backoff_delays_grow_and_are_capped() {
    // A server that accepts TCP and hangs up at once: every attempt fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = format!(
        r#"
[[upstream]]
name = "flaky"
url = "{url}"
reconnect = {{ initial = "100ms", max = "400ms", multiplier = 2.0, jitter = 0.0 }}

[[sink]]
type = "stdout"
"#
    );
    let _daemon = Daemon::start(&config).await;
    let mut accepts = Vec::new();
    while accepts.len() < 7 {
        let (stream, _) = tokio::time::timeout(SOON, listener.accept())
            .await
            .expect("an attempt in time")
            .unwrap();
        accepts.push(Instant::now());
        drop(stream);
    }
    let gaps: Vec<u128> = accepts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Sleeps never end early, so the lower bounds are exact; the upper bounds allow a slow
    // machine ~500 ms of slack yet stay below the next uncapped step (800 ms, 1600 ms).
    let nominal = [100, 200, 400, 400, 400, 400];
    for (gap, want) in gaps.iter().zip(nominal) {
        assert!(
            *gap >= want - 5,
            "gaps {gaps:?}: {gap} ms is shorter than the nominal {want} ms"
        );
        assert!(
            *gap < want + 500,
            "gaps {gaps:?}: {gap} ms is far above the nominal {want} ms"
        );
    }
}

#[tokio::test]
async fn silent_server_is_detected_within_ping_interval_plus_timeout() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let extra = r#"ping_interval = "300ms"
ping_timeout = "300ms""#;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), extra)).await;
    // Hold the connection without ever reading it: our Ping is never answered.
    let _silent = server.accept().await;
    let opened = Instant::now();
    assert_eq!(daemon.next_record().await["type"], "open");
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    let detected = opened.elapsed();
    assert!(
        error["error"].as_str().unwrap().contains("ping_timeout"),
        "{error}"
    );
    assert!(
        detected >= Duration::from_millis(550),
        "detected after only {detected:?}"
    );
    assert!(
        detected < Duration::from_millis(600 + 2000),
        "detected after {detected:?}"
    );
    // And it reconnects.
    let _again = server.accept().await;
    daemon.record_where("open", |r| r["type"] == "open").await;
}

#[tokio::test]
async fn pings_from_the_server_are_answered_and_ours_get_answers() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let extra = r#"ping_interval = "200ms"
ping_timeout = "2s""#;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), extra)).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    conn.ws.send(Message::Ping("hello".into())).await.unwrap();
    let mut got_pong = false;
    let mut got_ping = false;
    let deadline = Instant::now() + SOON;
    while !(got_pong && got_ping) && Instant::now() < deadline {
        match tokio::time::timeout(SOON, conn.ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"hello");
                got_pong = true;
            }
            Some(Ok(Message::Ping(_))) => got_ping = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_pong, "our Ping was not answered");
    assert!(
        got_ping,
        "the bridge never sent its own Ping after 200 ms of silence"
    );
}

#[tokio::test]
async fn sigterm_sends_close_1001_and_exits_0() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), "")).await;
    let mut conn = server.accept().await;
    assert_eq!(daemon.next_record().await["type"], "open");
    daemon.signal(15);
    match conn.recv().await {
        tokio_tungstenite::tungstenite::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001)
        }
        other => panic!("expected Close 1001, got {other:?}"),
    }
    let status = daemon.wait().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    let rest = daemon.rest_of_stdout().await;
    assert!(
        rest.iter()
            .any(|r| r["type"] == "close" && r["code"] == 1001),
        "{rest:?}"
    );
}

#[tokio::test]
async fn rejected_handshake_names_the_status() {
    let mut server = TestServer::start(ServerOptions {
        reject: Some(403),
        ..Default::default()
    })
    .await;
    let mut daemon = Daemon::start(&upstream_config(&server.url("/"), "")).await;
    let _ = server.next_accept_time(SOON).await;
    let error = daemon.next_record().await;
    assert_eq!(error["type"], "error");
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("HTTP 403 Forbidden"), "{text}");
    assert!(
        text.contains(&server.addr.to_string()),
        "the error should name the URL: {text}"
    );
}

/// A server that greets every connection with one message and Close 4000 (as exchanges do to
/// refuse a subscription); each accepted connection's time goes to the returned channel.
pub(crate) fn send_one_and_close(
    mut server: TestServer,
) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut conn = server.accept_any().await;
            let _ = tx.send(Instant::now());
            tokio::spawn(async move {
                conn.send_text("{\"error\":\"invalid subscription\"}").await;
                conn.send_close(4000, "invalid subscription").await;
                // Read on until the client answers and hangs up.
                while let Some(Ok(_)) = conn.ws.next().await {}
            });
        }
    });
    rx
}

/// Connections accepted within `window` after the first.
pub(crate) async fn connects_within(
    accepts: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>,
    window: Duration,
) -> usize {
    let first = tokio::time::timeout(SOON, accepts.recv())
        .await
        .expect("a first connection in time")
        .unwrap();
    let mut count = 1;
    while let Ok(Some(_)) = tokio::time::timeout_at(first + window, accepts.recv()).await {
        count += 1;
    }
    count
}

/// A data message does not reset the backoff; only `reconnect.reset_after` open does. Against
/// a server that sends one message and closes, the delays keep growing.
#[tokio::test]
async fn a_server_that_sends_one_message_and_closes_gets_growing_delays() {
    let server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut accepts = send_one_and_close(server);
    let config = format!(
        r#"
[[upstream]]
name = "strict"
url = "{url}"
reconnect = {{ initial = "200ms", max = "60s", multiplier = 2.0, jitter = 0.0, reset_after = "30s" }}

[[sink]]
type = "stdout"
"#
    );
    let mut daemon = Daemon::start(&config).await;
    // Connections at 0, 0.2, 0.6, 1.4, 3.0 s, then 6.2 s: five in the first 5 s (sleeps never
    // end early, so a slow machine only makes fewer). Before, one every 200 ms: ~25.
    let connects = connects_within(&mut accepts, Duration::from_secs(5)).await;
    assert!(
        (3..=6).contains(&connects),
        "{connects} connections in 5 s, expected about 5"
    );
    let mut retries = Vec::new();
    while retries.len() < 4 {
        let r = daemon.record_where("close", |r| r["type"] == "close").await;
        assert_eq!(r["code"], 4000, "{r}");
        retries.push(r["retry_in_ms"].as_u64().expect("retry_in_ms"));
    }
    assert_eq!(retries, [200, 400, 800, 1600]);
}

/// `ws://user:pass@host/` sends `Authorization: Basic …` (user info percent-decoded), as
/// aiohttp and curl do; the user info itself goes nowhere else: not in the Host header, and
/// not in the `open` record or the log.
#[tokio::test]
async fn url_user_info_is_sent_as_basic_auth() {
    use base64::Engine as _;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = format!("ws://feed-user:s3cret%40pw@{}/ws", server.addr);
    let mut daemon = Daemon::start(&upstream_config(&url, "")).await;
    let conn = server.accept().await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("feed-user:s3cret@pw")
    );
    assert_eq!(conn.header("authorization"), Some(expected.as_str()));
    assert_eq!(conn.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(conn.path, "/ws");
    let open = daemon.record_where("open", |r| r["type"] == "open").await;
    assert!(!open.to_string().contains("s3cret"), "{open}");
    daemon.signal(15);
    assert!(daemon.wait().await.success());
    assert!(
        !daemon.stderr().contains("s3cret"),
        "the URL's password reached the log"
    );
}
