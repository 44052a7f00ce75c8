//! Feeds you can check: `sequence` against servers that skip, repeat and restart their
//! numbering, `on_gap = "reconnect"` subscribing again, `event_time` giving `lag_ms` for
//! times in ms, s and RFC 3339, and `connect --sequence` in both output modes.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::*;

fn config(url: &str, metrics: u16, keys: &str) -> String {
    let subscribe = r#"
on_connect = ['{"op":"subscribe"}']
reconnect = { initial = "50ms", max = "200ms", jitter = 0.0 }
"#;
    TestConfig::new()
        .shutdown_timeout("2s")
        .metrics(metrics)
        .upstream("book", url, &format!("{subscribe}{keys}"))
        .stdout_sink()
        .to_string()
}

/// The feed's own number of a data record.
fn u(record: &Value) -> Option<u64> {
    let data: Value = serde_json::from_str(record["data"].as_str()?).ok()?;
    data["u"].as_u64()
}

/// Accepts the next connection and waits for its subscription.
async fn subscribed(server: &mut TestServer) -> Conn {
    let mut conn = server.accept().await;
    assert_eq!(conn.recv_text().await, r#"{"op":"subscribe"}"#);
    conn
}

#[tokio::test]
async fn one_gap_record_after_the_last_message_before_it_and_every_message_delivered() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let mut daemon = Daemon::start(&config(&server.url("/"), port, "sequence = \".u\"")).await;
    let mut conn = subscribed(&mut server).await;
    let sent: Vec<u64> = (1..=1000u64)
        .filter(|u| !(300..=304).contains(u))
        .flat_map(|u| if u == 600 { vec![u, u] } else { vec![u] })
        .collect();
    for u in &sent {
        conn.send_text(&format!(r#"{{"u":{u},"p":"1.5"}}"#)).await;
    }
    let mut delivered = Vec::new();
    let mut gaps = Vec::new();
    while delivered.len() < sent.len() {
        let record = daemon.next_record().await;
        match record["type"].as_str() {
            Some("text") => delivered.push(u(&record).expect("a numbered message")),
            Some("gap") => gaps.push((delivered.last().copied(), record)),
            _ => {}
        }
    }
    assert_eq!(delivered, sent, "every data message, in order");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (after, gap) = &gaps[0];
    assert_eq!(*after, Some(299), "right after u = 299: {gap}");
    assert_eq!((&gap["expected"], &gap["got"]), (&300.into(), &305.into()));
    assert_eq!(gap["upstream"], "book");
    assert!(gap["ts"].as_u64().is_some(), "{gap}");
    // Counted before the batch was handed to the sinks.
    let status = upstream_status(port).await;
    assert_eq!(
        (&status["gaps"], &status["repeats"]),
        (&1.into(), &1.into())
    );
    assert_eq!(status["sequence_errors"], 0);
    let metrics = http_get(port, "/metrics").await;
    assert!(metrics.contains("wsbridge_upstream_gaps_total{upstream=\"book\"} 1"));
    assert!(metrics.contains("wsbridge_upstream_repeats_total{upstream=\"book\"} 1"));
}

#[tokio::test]
async fn on_gap_reconnect_subscribes_again_once_and_the_fresh_start_is_no_gap() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let keys = "sequence = \".u\"\non_gap = \"reconnect\"";
    let mut daemon = Daemon::start(&config(&server.url("/"), port, keys)).await;
    // Each subscription starts at u = 1; the first one then skips 11..14.
    let mut first = subscribed(&mut server).await;
    for u in (1..=10).chain([15]) {
        first.send_text(&format!(r#"{{"u":{u}}}"#)).await;
    }
    let mut second = subscribed(&mut server).await;
    for u in 1..=20 {
        second.send_text(&format!(r#"{{"u":{u}}}"#)).await;
    }
    let mut kinds = Vec::new();
    loop {
        let record = daemon.next_record().await;
        let kind = record["type"].as_str().unwrap_or("").to_string();
        kinds.push(match kind.as_str() {
            "text" => format!("u{}", u(&record).unwrap_or(0)),
            "gap" => format!("gap {}->{}", record["expected"], record["got"]),
            _ => kind,
        });
        if kinds.iter().filter(|k| *k == "open").count() == 2 && kinds.last().unwrap() == "u20" {
            break;
        }
    }
    let gap_at = kinds.iter().position(|k| k.starts_with("gap")).unwrap();
    assert_eq!(kinds[gap_at], "gap 11->15", "{kinds:?}");
    assert_eq!(kinds[gap_at - 1], "u10", "{kinds:?}");
    assert_eq!(kinds[gap_at + 1], "u15", "{kinds:?}");
    let reopened = kinds.iter().rposition(|k| k == "open").unwrap();
    assert!(
        gap_at < reopened,
        "the gap record comes before the reconnect: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| k.starts_with("gap")).count(),
        1,
        "{kinds:?}"
    );
    let status = upstream_status(port).await;
    assert_eq!(status["connects"], 2, "{status}");
    assert_eq!(status["disconnects"]["sequence_gap"], 1, "{status}");
    assert_eq!(status["gaps"], 1, "{status}");
    drop(first);
}

#[tokio::test]
async fn numbering_restarted_by_a_new_connection_is_no_gap() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let mut daemon = Daemon::start(&config(&server.url("/"), port, "sequence = \".u\"")).await;
    let mut first = subscribed(&mut server).await;
    for u in 500..=510 {
        first.send_text(&format!(r#"{{"u":{u}}}"#)).await;
    }
    first.send_close(1001, "restarting").await;
    let mut second = subscribed(&mut server).await;
    for u in 1..=10 {
        second.send_text(&format!(r#"{{"u":{u}}}"#)).await;
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&Some(10)) || seen.len() < 21 {
        let record = daemon.next_record().await;
        assert_ne!(record["type"], "gap", "{record}");
        if record["type"] == "text" {
            seen.push(u(&record));
        }
    }
    let status = upstream_status(port).await;
    assert_eq!(
        (&status["gaps"], &status["repeats"]),
        (&0.into(), &0.into())
    );
}

#[tokio::test]
async fn lag_ms_is_the_delay_put_into_the_event_time_in_ms_s_and_rfc3339() {
    const DELAY_MS: i64 = 5_000;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let keys = r#"event_time = '.E'"#;
    let mut daemon = Daemon::start(&config(&server.url("/"), port, keys)).await;
    let mut conn = subscribed(&mut server).await;
    for form in ["ms", "s", "rfc3339"] {
        let made = SystemTime::now() - Duration::from_millis(DELAY_MS as u64);
        let since = made.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let e = match form {
            "ms" => since.as_millis().to_string(),
            "s" => format!("{:.3}", since.as_secs_f64()),
            _ => format!("\"{}\"", humantime::format_rfc3339_millis(made)),
        };
        conn.send_text(&format!(r#"{{"form":"{form}","E":{e}}}"#))
            .await;
        let record = daemon.record_where("with data", is_data).await;
        let lag = record["lag_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("{record}"));
        assert!(
            (lag - DELAY_MS).abs() <= 50,
            "{form}: lag_ms {lag}: {record}"
        );
    }
    let status = upstream_status(port).await;
    let p50 = status["lag"]["p50_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{status}"));
    assert!((2.5..=10.0).contains(&p50), "{status}");
    assert_eq!(status["lag"]["count"], 3);
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("wsbridge_upstream_lag_seconds_bucket{le=\"10.0\",upstream=\"book\"} 3")
            || metrics
                .contains("wsbridge_upstream_lag_seconds_bucket{upstream=\"book\",le=\"10.0\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_sequence_writes_the_gap_record_with_ndjson_and_logs_it_in_raw_mode() {
    for ndjson in [true, false] {
        let mut server = TestServer::start(ServerOptions::default()).await;
        let url = server.url("/");
        let mut args = vec![
            url.as_str(),
            "-U",
            "--max-messages",
            "4",
            "--sequence",
            ".u",
        ];
        args.extend(["--event-time", ".E"]);
        if ndjson {
            args.push("--ndjson");
        }
        let child = tokio::process::Command::new(bin())
            .arg("connect")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut conn = server.accept().await;
        for u in [1, 2, 5, 6] {
            conn.send_text(&format!(r#"{{"u":{u},"E":1}}"#)).await;
        }
        let out = tokio::time::timeout(SOON, child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("skipped sequence numbers"), "{stderr}");
        if ndjson {
            let records: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let gap = records.iter().position(|r| r["type"] == "gap").unwrap();
            assert_eq!(
                (&records[gap]["expected"], &records[gap]["got"]),
                (&3.into(), &5.into())
            );
            assert_eq!(u(&records[gap + 1]), Some(5));
            assert!(records[gap + 1]["lag_ms"].as_i64().unwrap() > 1_000_000);
        } else {
            assert_eq!(stdout.lines().count(), 4, "{stdout}");
        }
    }
}
