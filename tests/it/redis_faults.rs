//! The `redis` sink's promise under faults, against a real `redis-server`: every record
//! routed to the sink is in the stream once or counted dropped, when another client adds
//! entries to the same key and through a storm of reloads; `check` refuses configs with two
//! writers on one key.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::brokers::*;
use crate::common::*;
use crate::redis_sink::redis_server;

/// How long a feed may take to reach the stream in a debug build.
const FEED_TIME: Duration = Duration::from_secs(120);

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to redis")
}

/// An entry's fields by name.
type Fields = HashMap<String, Vec<u8>>;

/// Every entry of `key`, in stream order.
async fn entries(port: u16, key: &str) -> Vec<Fields> {
    let mut conn = connection(port).await;
    let mut out = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page: Vec<crate::redis_sink::Entry> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(2_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let Some(last) = page.last().map(|e| e.0.clone()) else {
            return out;
        };
        out.extend(page.into_iter().map(|(_, f)| f.into_iter().collect()));
        from = format!("({last}");
    }
}

/// `wsbridge_sink_records_dropped_total{…reason="REASON"}` of the (only) sink.
async fn dropped_for(metrics: SocketAddr, reason: &str) -> u64 {
    let text = http_get(metrics.port(), "/metrics").await;
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .find(|l| l.starts_with("wsbridge_sink_records_dropped_total{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no dropped series for {reason} in:\n{text}")) as u64
}

/// Waits until everything routed to the sink is written or dropped (its queue empty).
async fn settled(metrics: SocketAddr, routed_at_least: u64) -> wsbridge::metrics::SinkStatus {
    wait_status(metrics, FEED_TIME, "every routed record settled", |s| {
        s.records_routed >= routed_at_least
            && s.records_written + s.records_dropped == s.records_routed
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: tests/run.sh installs and runs it"]
async fn redis_another_writer_on_the_key_never_makes_a_lost_record_count_as_written() {
    const N: u64 = 3_000;
    let server = redis_server().await;
    let mut ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let sink = redis_sink_keys(server.port, "wsbridge:{upstream}");
    let daemon = Daemon::start(&head.sink("redis", &sink).to_string()).await;
    // The other writer: `XADD key * …` about once a millisecond while the feed flows.
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let stop = stop.clone();
        let mut conn = connection(server.port).await;
        tokio::spawn(async move {
            let mut added = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg("wsbridge:feed")
                    .arg("*")
                    .arg("other")
                    .arg(added)
                    .query_async(&mut conn)
                    .await;
                added += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            added
        })
    };
    let _feed = feed(&mut ws, N).await;
    let status = settled(metrics, N).await;
    stop.store(true, Ordering::Relaxed);
    let other_added = other.await.unwrap();

    let all = entries(server.port, "wsbridge:feed").await;
    let ours: Vec<&Fields> = all.iter().filter(|f| f.contains_key("upstream")).collect();
    let mut seen = HashSet::new();
    for fields in &ours {
        let seq = String::from_utf8(fields["seq"].clone()).unwrap();
        assert!(seen.insert(seq.clone()), "seq {seq} is in the stream twice");
    }
    let other_writer = dropped_for(metrics, "other_writer").await;
    let in_stream = ours.len() as u64;
    println!(
        "routed {}, in the stream {in_stream}, written {}, dropped other_writer {other_writer} \
         (all reasons {}), missing from the stream {}; the other client added {other_added}",
        status.records_routed,
        status.records_written,
        status.records_dropped,
        N - in_stream
    );
    assert_eq!(status.records_routed, N);
    assert_eq!(
        status.records_written, in_stream,
        "records counted written must be the records in the stream"
    );
    assert_eq!(status.records_dropped, other_writer, "{status:?}");
    assert_eq!(status.records_written + other_writer, N);
    if other_writer > 0 {
        assert!(
            daemon.stderr().contains("other_writer"),
            "drops are logged: {}",
            daemon.stderr()
        );
    }
}

/// A WebSocket server whose every connection sends numbered messages `{"c":C,"n":k}` (C
/// unique per connection), `per_connection` of them, then stays open.
async fn numbering_server(per_connection: u64) -> (String, Arc<AtomicU64>) {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let url = server.url("/");
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let conn = server.accept_any().await;
            let c = counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let (mut tx, mut rx) = conn.ws.split();
                tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                for n in 1..=per_connection {
                    let text = format!("{{\"c\":{c},\"n\":{n}}}");
                    if tx.send(Message::text(text)).await.is_err() {
                        return;
                    }
                    if n % 64 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                std::future::pending::<()>().await;
            });
        }
    });
    (url, connections)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: tests/run.sh installs and runs it"]
async fn redis_reload_storm_leaves_every_record_once_in_the_stream_or_counted() {
    const RELOADS: usize = 50;
    let server = redis_server().await;
    let (url, _connections) = numbering_server(2_000).await;
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    // One key for every upstream: the sink is its only writer, whatever the reloads do.
    let config = |extra: &[usize]| {
        let mut config = TestConfig::new()
            .metrics(metrics.port())
            .upstream("steady", &url, "");
        for k in extra {
            config = config.upstream(&format!("x{k}"), &url, "");
        }
        config
            .sink("redis", &redis_sink_keys(server.port, "wsbridge:all"))
            .to_string()
    };
    let daemon = Daemon::start(&config(&[])).await;
    // Signals are handled once the sink runs.
    daemon.wait_for_log("started").await;
    let reloaded = |d: &Daemon| d.stderr().matches("upstreams open,").count();
    for i in 0..RELOADS {
        // Upstreams come and go, and come back under the same names.
        let extra: Vec<usize> = (0..4).filter(|k| (i + k) % 3 != 0).collect();
        daemon.write_config(&config(&extra));
        let before = reloaded(&daemon);
        daemon.signal(1);
        let deadline = Instant::now() + SOON;
        while reloaded(&daemon) == before {
            assert!(
                Instant::now() < deadline,
                "reload {i} not done: {}",
                daemon.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    daemon.write_config(&config(&[]));
    daemon.signal(1);
    // Let the last connections finish their numbered messages, then everything settle.
    let mut last = 0;
    let status = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = settled(metrics, 1).await;
        if status.records_routed == last {
            break status;
        }
        last = status.records_routed;
    };

    let all = entries(server.port, "wsbridge:all").await;
    let mut seen = HashSet::new();
    for fields in &all {
        let data = String::from_utf8(fields["data"].clone()).unwrap();
        assert!(seen.insert(data.clone()), "{data} is in the stream twice");
    }
    let in_stream = all.len() as u64;
    println!(
        "{RELOADS} reloads: routed {}, in the stream {in_stream}, written {}, dropped {} {:?}",
        status.records_routed,
        status.records_written,
        status.records_dropped,
        status.dropped_by_reason
    );
    assert_eq!(
        status.records_written + status.records_dropped,
        status.records_routed
    );
    // A record the sink gave up on at a reload may still have reached the server.
    assert!(
        in_stream >= status.records_written
            && in_stream <= status.records_written + status.records_dropped,
        "{in_stream} in the stream, {status:?}"
    );
}

/// `wsbridge check` on `text`: (exit code, stderr with the file name taken off each line).
fn check(text: &str) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsbridge.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let prefix = format!("{}:", path.display());
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    (out.status.code(), errors)
}

#[test]
fn check_refuses_two_writers_on_one_redis_key() {
    const UP: &str = "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n\
                      [[upstream]]\nname = \"b\"\nurl = \"ws://127.0.0.1:1/\"\n";
    let refused = |text: &str, needle: &str| {
        let (code, errors) = check(text);
        assert_eq!(code, Some(1), "check accepted:\n{text}");
        assert!(
            errors.iter().any(|e| e.starts_with(needle)),
            "no error starting {needle:?} in:\n{}",
            errors.join("\n")
        );
        println!("refused: {}", errors.join(" | "));
    };
    let accepted = |text: &str| {
        let (code, errors) = check(text);
        assert_eq!(
            code,
            Some(0),
            "check refused:\n{text}\n{}",
            errors.join("\n")
        );
    };
    // The same default key on the same server and database, however the URL is spelt.
    refused(
        &format!("{UP}[[sink]]\ntype = \"redis\"\n[[sink]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n"),
        "10:8: sink[1].stream: ",
    );
    // Two templates that render to one key for a routed upstream.
    refused(
        &format!(
            "{UP}[[sink]]\ntype = \"redis\"\nstream = \"s:{{upstream}}\"\nupstreams = [\"a\"]\n\
             [[sink]]\ntype = \"redis\"\nstream = \"s:a\"\nupstreams = [\"b\"]\n"
        ),
        "13:10: sink[1].stream: ",
    );
    // Another database, or keys that never meet: two writers of their own.
    accepted(&format!(
        "{UP}[[sink]]\ntype = \"redis\"\n[[sink]]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/1\"\n"
    ));
    accepted(&format!(
        "{UP}[[sink]]\ntype = \"redis\"\nupstreams = [\"a\"]\n[[sink]]\ntype = \"redis\"\nupstreams = [\"b\"]\n"
    ));
    // Replicas: each instance writes the upstream, so each needs its own key.
    let cluster = "[cluster]\ninstance = \"one\"\n";
    refused(
        &format!("{cluster}{UP}replicas = 2\n[[sink]]\ntype = \"redis\"\n"),
        "11:8: sink[0].stream: ",
    );
    accepted(&format!(
        "{cluster}{UP}replicas = 2\n[[sink]]\ntype = \"redis\"\nstream = \"w:{{instance}}:{{upstream}}\"\n"
    ));
    // `{instance}` names the instance of `[cluster]`: without one it means nothing.
    refused(
        &format!("{UP}[[sink]]\ntype = \"redis\"\nstream = \"w:{{instance}}\"\n"),
        "9:10: sink[0].stream: ",
    );
}
