//! Faults around the daemon itself: a stale feed that only answers Pings, SIGTERM with
//! records in flight, secrets under failure, and the unix socket's mode from its first moment.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_feed_that_only_answers_pings_is_reconnected_after_receive_timeout() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let config = format!(
        r#"
[[upstream]]
name = "stale"
url = "{}"
ping_interval = "150ms"
ping_timeout = "1s"
receive_timeout = "900ms"
reconnect = {{ initial = "100ms", jitter = 0.0 }}

[[sink]]
type = "stdout"
"#,
        server.url("/")
    );
    let mut daemon = Daemon::start(&config).await;
    let mut conn = server.accept().await;
    let opened = Instant::now();
    assert_eq!(daemon.next_record().await["type"], "open");
    // Keep reading, so tungstenite answers every Ping with a Pong: alive, but no data.
    let pings = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(message)) = conn.ws.next().await {
            if let Message::Ping(_) = message {
                pings += 1;
            }
        }
        pings
    });
    let error = daemon.record_where("error", |r| r["type"] == "error").await;
    let after = opened.elapsed();
    assert!(
        error["error"].as_str().unwrap().contains("receive_timeout"),
        "{error}"
    );
    assert!(
        after >= Duration::from_millis(850),
        "stale after only {after:?}"
    );
    assert!(
        after < Duration::from_millis(900 + 2000),
        "stale only after {after:?}"
    );
    let pings = pings.await.unwrap();
    assert!(
        pings >= 3,
        "the connection was kept alive by Pings ({pings} seen) yet declared stale"
    );
    eprintln!("FIGURE stale feed: error after {after:?}, {pings} Pings answered meanwhile");
    let _again = server.accept().await;
    daemon.record_where("open", |r| r["type"] == "open").await;
}

#[tokio::test]
async fn sigterm_with_records_in_flight_writes_every_received_record_before_exit() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let config = format!(
        "[daemon]\nshutdown_timeout = \"10s\"\n[[upstream]]\nname = \"load\"\nurl = \"{}\"\n[[sink]]\ntype = \"stdout\"\n",
        server.url("/")
    );
    let mut daemon = Daemon::start(&config).await;
    let mut conn = server.accept().await;
    let total = 100_000u64;
    let sender = tokio::spawn(async move {
        use futures_util::SinkExt;
        for i in 0..total {
            if conn
                .ws
                .feed(Message::text(format!("{{\"n\":{i}}}")))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = conn.ws.flush().await;
        // Answer the bridge's Close like a server does, then hang up.
        while let Some(Ok(_)) = conn.ws.next().await {}
    });
    // Let the stream get going, then stop the daemon mid-flight.
    daemon
        .record_where("data", |r| r["seq"].as_u64().is_some_and(|s| s >= 1000))
        .await;
    daemon.signal(15);
    let rest = daemon.rest_of_stdout().await;
    let status = daemon.wait().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    let last_seq = rest.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap();
    // Every seq from the first record after the 1000th to the last is present, in order.
    let seqs: Vec<u64> = rest.iter().filter_map(|r| r["seq"].as_u64()).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "gap in seq after SIGTERM");
    }
    // And the last one written is the last one received.
    let log = daemon.stderr();
    let received = log
        .lines()
        .find(|l| l.contains("upstream closed"))
        .and_then(|l| l.split("messages_received=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no total in the log:\n{log}"));
    assert_eq!(last_seq, received, "records received but not written");
    assert!(rest
        .iter()
        .any(|r| r["type"] == "close" && r["code"] == 1001));
    eprintln!("SIGTERM after ~1000 of {total}: {received} received, all written");
    sender.abort();
}

#[tokio::test]
async fn secrets_never_reach_logs_records_or_check_output() {
    let server = TestServer::start(ServerOptions {
        reject: Some(403),
        ..Default::default()
    })
    .await;
    let (url_secret, header_secret, cookie_secret) = ("pw-5e3c7a", "tok-9f8e7d", "ck-42aa17");
    let url = format!("ws://operator:{url_secret}@{}/private", server.addr);
    let config = format!(
        r#"
[daemon]
log_level = "trace"

[[upstream]]
name = "secret"
url = "{url}"
headers = {{ Authorization = "Bearer ${{WSB_TOKEN}}" }}
cookies = {{ session = "{cookie_secret}" }}
reconnect = {{ initial = "50ms", max = "100ms" }}

[[sink]]
type = "stdout"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with_env(
        dir,
        &config,
        &[("WSB_TOKEN", header_secret), ("RUST_LOG", "trace")],
    )
    .await;
    let mut records = Vec::new();
    for _ in 0..3 {
        records.push(
            daemon
                .record_where("error", |r| r["type"] == "error")
                .await
                .to_string(),
        );
    }
    let check = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&daemon.config_path)
        .env("WSB_TOKEN", header_secret)
        .output()
        .unwrap();
    assert!(check.status.success());
    daemon.signal(15);
    daemon.wait().await;
    let everything = format!(
        "{}\n{}\n{}\n{}",
        records.join("\n"),
        daemon.stderr(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(records[0].contains("HTTP 403"), "{}", records[0]);
    assert!(
        records[0].contains(&server.addr.to_string()),
        "the error names the URL: {}",
        records[0]
    );
    for secret in [url_secret, header_secret, cookie_secret] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

#[tokio::test]
async fn the_unix_socket_has_its_mode_from_the_moment_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("private.sock");
    let config = format!(
        "[[sink]]\ntype = \"unix\"\npath = \"{}\"\nmode = \"0600\"\n",
        sock.display()
    );
    let watcher_path = sock.clone();
    // Watch for the path from before the daemon starts: its first observed mode must be final.
    let watcher = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(meta) = std::fs::symlink_metadata(&watcher_path) {
                return meta.permissions().mode() & 0o777;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the socket never appeared"
            );
            std::hint::spin_loop();
        }
    });
    let daemon = Daemon::start_in(dir, &config).await;
    let first_mode = watcher.join().unwrap();
    assert_eq!(
        first_mode, 0o600,
        "the socket was visible with mode {first_mode:o} first"
    );
    let _client = connect_unix(&sock).await;
    daemon.wait_for_log("client connected").await;
}
