//! The `redis` sink against a real `redis-server` the test starts: every record an entry of
//! the stream once and in order, also across a `kill -9` and restart of the server.

use std::collections::HashSet;
use std::time::Duration;

use redis::Value;

use crate::brokers::*;
use crate::common::*;

/// How long a feed may take to reach the stream in a debug build.
const FEED_TIME: Duration = Duration::from_secs(120);

pub async fn redis_server() -> ServerProcess {
    ServerProcess::start(
        "redis-server",
        &[
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            "{dir}",
        ],
    )
    .await
}

/// A stream entry as XRANGE gives it: its ID and its fields.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// Every entry of `wsbridge:feed`: (seq, fed number), in stream order.
async fn read_stream(port: u16) -> Vec<(u64, u64)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    // Parsing a page in a debug build takes longer than the client's default timeout.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to redis");
    let len: u64 = redis::cmd("XLEN")
        .arg("wsbridge:feed")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut from = "-".to_string();
    while (out.len() as u64) < len {
        let page: Vec<Entry> = redis::cmd("XRANGE")
            .arg("wsbridge:feed")
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(2_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let last = page.last().expect("more entries").0.clone();
        for (_, fields) in page {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("no {name}"))
            };
            assert_eq!(field("upstream"), b"feed");
            assert_eq!(field("type"), b"text");
            let seq: u64 = String::from_utf8(field("seq")).unwrap().parse().unwrap();
            out.push((seq, fed_number(&field("data"))));
        }
        from = format!("({last}");
    }
    assert_eq!(out.len() as u64, len);
    let _: Value = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    out
}

async fn start(server: &ServerProcess) -> (TestServer, Daemon, std::net::SocketAddr) {
    let ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let sink = redis_sink_keys(server.port, "wsbridge:{upstream}");
    let daemon = Daemon::start(&head.sink("redis", &sink).to_string()).await;
    (ws, daemon, metrics)
}

fn assert_once_in_order(got: &[(u64, u64)], n: u64) {
    assert_eq!(got.len() as u64, n, "XLEN is not the number of records");
    let unique: HashSet<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(unique.len(), got.len(), "a seq is in the stream twice");
    for (i, (seq, fed)) in got.iter().enumerate() {
        assert_eq!(
            (*seq, *fed),
            (i as u64 + 1, i as u64 + 1),
            "entry {i} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: tests/run.sh installs and runs it"]
async fn redis_stream_holds_every_record_once_in_order() {
    const N: u64 = 100_000;
    let server = redis_server().await;
    let (mut ws, _daemon, metrics) = start(&server).await;
    let _feed = feed(&mut ws, N).await;
    let status = wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
    })
    .await;
    assert_eq!(status.records_dropped, 0);
    assert_once_in_order(&read_stream(server.port).await, N);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: tests/run.sh installs and runs it"]
async fn redis_kill_9_and_restart_loses_and_repeats_nothing() {
    const N: u64 = 40_000;
    let mut server = redis_server().await;
    let (mut ws, daemon, metrics) = start(&server).await;
    let _feed = feed(&mut ws, N).await;
    wait_status(metrics, FEED_TIME, "progress", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged >= N / 3)
    })
    .await;
    server.kill().await;
    wait_status(metrics, SOON, "the sink noticing", |s| {
        s.broker.as_ref().is_some_and(|b| !b.connected)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    let status = wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
    })
    .await;
    assert_eq!(status.records_dropped, 0);
    assert_once_in_order(&read_stream(server.port).await, N);
    assert!(
        daemon.stderr().contains("redis://127.0.0.1"),
        "{}",
        daemon.stderr()
    );
}
