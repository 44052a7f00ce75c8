//! The process around the bridge: reload on SIGHUP, `check`, refusing bad configs and
//! unbindable sinks, and the demo.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

fn two_upstreams(a: &str, b: Option<&str>) -> String {
    let mut config = TestConfig::new()
        .shutdown_timeout("2s")
        .upstream("steady", a, "");
    if let Some(b) = b {
        config = config.upstream("extra", b, "");
    }
    config.stdout_sink().to_string()
}

#[tokio::test]
async fn sighup_adds_and_removes_an_upstream_without_touching_the_other() {
    let mut steady_server = TestServer::start(ServerOptions::default()).await;
    let mut extra_server = TestServer::start(ServerOptions::default()).await;
    let steady_url = steady_server.url("/");
    let mut daemon = Daemon::start(&two_upstreams(&steady_url, None)).await;
    let mut steady = steady_server.accept().await;
    daemon.record_where("open", |r| r["type"] == "open").await;

    // Add "extra".
    daemon.write_config(&two_upstreams(&steady_url, Some(&extra_server.url("/"))));
    daemon.signal(1);
    let mut extra = extra_server.accept().await;
    let open = daemon
        .record_where("open of extra", |r| r["type"] == "open")
        .await;
    assert_eq!(open["upstream"], "extra");
    extra.send_text("from extra").await;
    steady.send_text("from steady").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = daemon.next_record().await;
        if is_data(&r) {
            seen.push((
                r["upstream"].as_str().unwrap().to_string(),
                r["data"].as_str().unwrap().to_string(),
            ));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("extra".into(), "from extra".into()),
            ("steady".into(), "from steady".into())
        ]
    );

    // Remove it again: it gets Close 1001, steady's connection carries on.
    daemon.write_config(&two_upstreams(&steady_url, None));
    daemon.signal(1);
    match extra.recv().await {
        tokio_tungstenite::tungstenite::Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1001)
        }
        other => panic!("expected Close 1001, got {other:?}"),
    }
    steady.send_text("still here").await;
    let r = daemon.record_where("steady data", is_data).await;
    assert_eq!(
        (r["upstream"].as_str(), r["data"].as_str()),
        (Some("steady"), Some("still here"))
    );
    // The steady upstream never reconnected: no second connection, and exactly one open.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), steady_server.accept())
            .await
            .is_err(),
        "steady reconnected on reload"
    );
    let opens_of_steady = daemon.stderr().matches("connected url=").count();
    assert_eq!(
        opens_of_steady,
        2,
        "one connect each for steady and extra:\n{}",
        daemon.stderr()
    );
}

#[tokio::test]
async fn removing_the_stdout_sink_on_reload_stops_it_while_the_feed_is_quiet() {
    // stdout is written by a thread of its own; a quiet upstream keeps its route to the old
    // sink until it next sends, so only the sink's own shutdown can end that thread.
    let mut server = TestServer::start(ServerOptions::default()).await;
    let keep = format!(
        "[daemon]\nshutdown_timeout = \"3s\"\n\n[[upstream]]\nname = \"quiet\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{}\"\n",
        server.url("/"),
        free_port()
    );
    let mut daemon = Daemon::start(&format!("{keep}\n[[sink]]\ntype = \"stdout\"\n")).await;
    let _conn = server.accept().await;
    daemon.record_where("open", |r| r["type"] == "open").await;

    daemon.write_config(&keep);
    daemon.signal(1); // SIGHUP: reload without the stdout sink
    daemon.signal(10); // SIGUSR1: the summary, logged once the reload is done
    daemon.wait_for_log("upstreams open, 1 sinks").await;
    let log = daemon.stderr();
    assert!(log.contains("stopping sink (removed or changed)"), "{log}");
    assert!(
        !log.contains("did not stop within shutdown_timeout"),
        "the stdout sink had to be aborted:\n{log}"
    );
}

#[tokio::test]
async fn an_invalid_config_on_reload_is_logged_and_the_running_one_stays() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let mut daemon = Daemon::start(&two_upstreams(&url, None)).await;
    let mut conn = server.accept().await;
    daemon.record_where("open", |r| r["type"] == "open").await;
    daemon.write_config(
        "[[upstream]]\nname = \"steady\"\nurl = \"ws://h/\"\nping_intervall = \"1s\"\n",
    );
    daemon.signal(1);
    daemon.wait_for_log("keeping the running one").await;
    assert!(daemon.stderr().contains("ping_intervall"));
    conn.send_text("still bridged").await;
    assert_eq!(
        daemon.record_where("data", is_data).await["data"],
        "still bridged"
    );
}

#[tokio::test]
async fn check_rejects_a_misspelt_key_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n\n[[sink]]\ntype = \"stdout\"\nformt = \"raw\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:7:1: sink[0].formt: unknown field `formt`",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(out.stdout.is_empty());

    // `run` refuses the same file with exit 2.
    let out = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("formt"));
}

#[tokio::test]
async fn check_prints_the_plan_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[[upstream]]\nname = \"a\"\nurl = \"wss://user:pw-secret@example.com/ws\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\ncookies = { sid = \"cookie-secret\" }\n[[sink]]\ntype = \"stdout\"\n",
    )
    .unwrap();
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .env("TOKEN", "token-secret"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("upstream a") && stdout.contains("a -> stdout"),
        "{stdout}"
    );
    assert!(stdout.contains("Authorization: <redacted>"), "{stdout}");
    for secret in ["pw-secret", "token-secret", "cookie-secret"] {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
}

#[tokio::test]
async fn a_sink_that_cannot_bind_stops_the_daemon_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n[[sink]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );

    // A regular file where the socket should go is left alone.
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    std::fs::write(
        &path,
        format!("[[sink]]\ntype = \"unix\"\npath = \"{}\"\n", file.display()),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // leaves the file behind
    assert!(sock.exists());
    let config = format!("[[sink]]\ntype = \"unix\"\npath = \"{}\"\n", sock.display());
    let daemon = Daemon::start_in(dir, &config).await;
    let _client = connect_unix(&sock).await;
    daemon.wait_for_log("client connected").await;
}

#[tokio::test]
async fn demo_prints_ndjson_records_within_2_seconds() {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin())
        .args(["demo", "--count", "3", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
        .await
        .expect("a record within 2 s")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["type"], "open");
    let mut records = vec![first];
    while let Some(line) = lines.next_line().await.unwrap() {
        records.push(serde_json::from_str(&line).unwrap());
    }
    let status = child.wait().await.unwrap();
    assert!(status.success());
    let ticks: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "text" && r["data"].as_str().unwrap().contains("price"))
        .collect();
    assert_eq!(ticks.len(), 3, "{records:?}");
    let tick: serde_json::Value = serde_json::from_str(ticks[0]["data"].as_str().unwrap()).unwrap();
    assert!(tick["price"].is_number());
}

#[tokio::test]
async fn demo_into_a_closed_pipe_exits_0_quietly() {
    // bash reports the exit status of the left side of the pipe; its stderr is ours.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' demo --interval 10ms | head -n 2 >/dev/null; echo ${{PIPESTATUS[0]}}",
            bin()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("wsbridge:"),
        "an error was printed: {stderr}"
    );
}

/// A reload sends Close to every changed and removed upstream at once and then waits for them
/// together. These peers never answer Close, so each takes its whole close timeout (half of
/// `shutdown_timeout`, here 30 s): one after the other, the second Close would come 30 s late.
#[tokio::test]
async fn a_reload_closes_changed_and_removed_upstreams_together() {
    let mut changed_server = TestServer::start(ServerOptions::default()).await;
    let mut removed_server = TestServer::start(ServerOptions::default()).await;
    let (changed_url, removed_url) = (changed_server.url("/"), removed_server.url("/"));
    let config = |changed_extra: &str, with_removed: bool| {
        let mut config = format!(
            "[daemon]\nshutdown_timeout = \"60s\"\n\n[[upstream]]\nname = \"changed\"\nurl = \"{changed_url}\"\n{changed_extra}\n"
        );
        if with_removed {
            config.push_str(&format!(
                "\n[[upstream]]\nname = \"removed\"\nurl = \"{removed_url}\"\n"
            ));
        }
        config.push_str("\n[[sink]]\ntype = \"stdout\"\n");
        config
    };
    let mut daemon = Daemon::start(&config("", true)).await;
    let mut changed = changed_server.accept().await;
    let mut removed = removed_server.accept().await;
    for _ in 0..2 {
        daemon.record_where("open", |r| r["type"] == "open").await;
    }

    daemon.write_config(&config("on_connect = [\"v2\"]", false));
    daemon.signal(1);
    // Each `recv` waits at most SOON (10 s), well below the 30 s a serial reload would take.
    let (to_changed, to_removed) = tokio::join!(changed.recv(), removed.recv());
    for (what, message) in [("changed", to_changed), ("removed", to_removed)] {
        match message {
            tokio_tungstenite::tungstenite::Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1001, "{what}")
            }
            other => panic!("{what}: expected Close 1001, got {other:?}"),
        }
    }
    // Hanging up ends both old connections; the changed upstream comes back with its new
    // settings.
    drop((changed, removed));
    let mut again = changed_server.accept().await;
    assert_eq!(again.recv_text().await, "v2");
}
