//! The `nats` sink against a real `nats-server -js` the test starts: every record in the
//! JetStream stream exactly once and in order, across `kill -9` of the server, with drops
//! counted exactly, and with two daemons on one feed (`msg_id = "content"`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;

use crate::brokers::*;
use crate::common::*;

/// How long a feed may take to reach the stream in a debug build.
const FEED_TIME: Duration = Duration::from_secs(120);

fn nats_sink(port: u16, extra: &str) -> String {
    nats_sink_keys(port, "wsbridge.{upstream}", extra)
}

/// Every message of stream FEED: (Wsbridge-Seq, the fed number), in stream order.
async fn read_stream(port: u16, expect_at_least: u64) -> Vec<(u64, u64)> {
    let messages = stream_messages(port, "FEED").await;
    assert!(
        messages.len() as u64 >= expect_at_least,
        "the stream holds {} messages, expected at least {expect_at_least}",
        messages.len()
    );
    let mut out = Vec::new();
    for message in messages {
        let headers = message.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("Wsbridge-Upstream").map(|v| v.as_str()),
            Some("feed")
        );
        assert!(headers.get("Wsbridge-Ts").is_some());
        let seq: u64 = headers
            .get("Wsbridge-Seq")
            .expect("Wsbridge-Seq")
            .as_str()
            .parse()
            .unwrap();
        out.push((seq, fed_number(&message.payload)));
    }
    out
}

/// Waits until the stream holds at least `count` messages.
async fn wait_stream_count(port: u16, count: u64) {
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let js = &jetstream::new(client);
    let what = format!("the stream holding {count} messages");
    wait_until(FEED_TIME, &what, || async move {
        let mut stream = js.get_stream("FEED").await.map_err(|e| e.to_string())?;
        let held = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .messages;
        (held >= count).then_some(()).ok_or(format!("{held}"))
    })
    .await
}

async fn start(server: &ServerProcess, extra: &str) -> (TestServer, Daemon, SocketAddr) {
    let ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let config = head.sink("nats", &nats_sink(server.port, extra));
    let daemon = Daemon::start(&config.to_string()).await;
    (ws, daemon, metrics)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn jetstream_holds_every_record_once_in_order() {
    const N: u64 = 100_000;
    let server = nats_server().await;
    let (mut ws, daemon, metrics) = start(&server, "").await;
    let _feed = feed(&mut ws, N).await;
    wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
    })
    .await;
    let got = read_stream(server.port, N).await;
    assert_eq!(got.len() as u64, N, "exactly N messages");
    for (i, (seq, n)) in got.iter().enumerate() {
        assert_eq!(
            (*seq, *n),
            (i as u64 + 1, i as u64 + 1),
            "message {i} out of order"
        );
    }
    let status = sink_status(metrics).await;
    let broker = status.broker.expect("broker status");
    assert!(broker.connected);
    assert!(
        broker
            .last_round_trip_age_seconds
            .is_some_and(|age| age < 10.0),
        "the last acknowledgement is recent: {broker:?}"
    );
    assert_eq!(
        (broker.published, broker.retried, status.records_dropped),
        (N, 0, 0)
    );
    drop(daemon);
}

/// Kills the server (`kill -9`) once the daemon has had `at` records acknowledged or
/// dropped, leaves it down for half a second, starts it again on the same port and store.
/// With `notice`, waits until the sink has noticed (it notices when it next sends).
async fn kill_at(server: &mut ServerProcess, metrics: SocketAddr, at: u64, notice: bool) {
    wait_status(metrics, FEED_TIME, "progress", |s| {
        s.broker
            .as_ref()
            .is_some_and(|b| b.acknowledged > 0 && b.acknowledged + s.records_dropped >= at)
    })
    .await;
    server.kill().await;
    if notice {
        wait_status(metrics, SOON, "the sink noticing", |s| {
            s.broker.as_ref().is_some_and(|b| !b.connected)
        })
        .await;
    }
    // The outage is the point, not a condition: records wait (block) or are dropped (drop)
    // while the server is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn kill_9_twice_with_block_loses_and_repeats_nothing() {
    const N: u64 = 40_000;
    let mut server = nats_server().await;
    let (mut ws, daemon, metrics) = start(&server, "on_slow = \"block\"").await;
    let _feed = feed(&mut ws, N).await;
    kill_at(&mut server, metrics, N / 3, true).await;
    kill_at(&mut server, metrics, 2 * N / 3, true).await;
    let status = wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
        s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
    })
    .await;
    assert_eq!(status.records_dropped, 0);
    let got = read_stream(server.port, N).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a seq is in the stream twice");
    assert_eq!(seqs.len() as u64, N, "exactly one message per seq");
    assert!(unique.iter().all(|s| (1..=N).contains(s)));
    let out_of_order = seqs.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(out_of_order, 0, "records stored out of seq order");
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("lost the connection") || stderr.contains("cannot connect"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn kill_9_with_drop_loses_exactly_what_it_counts() {
    const N: u64 = 40_000;
    let mut server = nats_server().await;
    let (mut ws, _daemon, metrics) =
        start(&server, "on_slow = \"drop\"\nbuffer = \"256KiB\"").await;
    let _feed = feed(&mut ws, N).await;
    // A fast feed may be through (acknowledged or dropped) before the kill: the accounting
    // must hold either way.
    kill_at(&mut server, metrics, N / 4, false).await;
    // Every record is either acknowledged or counted as dropped.
    let status = wait_status(
        metrics,
        FEED_TIME,
        "every record acknowledged or dropped",
        |s| {
            s.broker
                .as_ref()
                .is_some_and(|b| b.acknowledged + s.records_dropped == N)
        },
    )
    .await;
    assert!(
        status.records_dropped > 0,
        "the outage dropped nothing: {status:?}"
    );
    let got = read_stream(server.port, 1).await;
    let seqs: HashSet<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), got.len(), "a seq is in the stream twice");
    assert_eq!(
        N - seqs.len() as u64,
        status.records_dropped,
        "missing != dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn two_daemons_on_one_feed_store_each_message_once() {
    const N: u64 = 20_000;
    let server = nats_server().await;
    let mut ws = TestServer::start(ServerOptions::default()).await;
    let sink = nats_sink(server.port, "msg_id = \"content\"");
    let (head_a, metrics_a) = daemon_head(&ws.url("/"));
    let (head_b, metrics_b) = daemon_head(&ws.url("/"));
    let _a = Daemon::start(&head_a.sink("nats", &sink).to_string()).await;
    let feed_a = feed(&mut ws, N).await;
    let _b = Daemon::start(&head_b.sink("nats", &sink).to_string()).await;
    let feed_b = feed(&mut ws, N).await;
    for metrics in [metrics_a, metrics_b] {
        wait_status(metrics, FEED_TIME, "acknowledgement of every record", |s| {
            s.broker.as_ref().is_some_and(|b| b.acknowledged == N)
        })
        .await;
    }
    wait_stream_count(server.port, N).await;
    let got = read_stream(server.port, N).await;
    let numbers: HashSet<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(got.len() as u64, N, "the stream holds a message twice");
    assert_eq!(numbers.len() as u64, N);
    feed_a.abort();
    feed_b.abort();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn a_server_that_never_answers_fills_the_buffer_and_other_sinks_keep_flowing() {
    const N: u64 = 5_000;
    // Accepts connections and never says a word (no INFO): the client waits, then retries.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let mut ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let config = head
        .sink(
            "nats",
            &nats_sink(port, "on_slow = \"drop\"\nbuffer = \"16KiB\""),
        )
        .sink("stdout", "events = false");
    let mut daemon = Daemon::start(&config.to_string()).await;
    let _feed = feed(&mut ws, N).await;
    for n in 1..=N {
        let record = daemon.next_record().await;
        assert_eq!(record["seq"], n, "stdout missed a record");
    }
    let status = wait_status(metrics, SOON, "drops counted", |s| s.records_dropped > 0).await;
    let broker = status.broker.clone().expect("broker status");
    assert!(!broker.connected);
    assert_eq!(broker.acknowledged, 0);
    // Every record reached the sink; none is written (acknowledged), the rest of those not
    // dropped still wait in the buffer.
    assert_eq!(status.records_routed, N, "{status:?}");
    assert_eq!(status.records_written, 0, "{status:?}");
    assert!(status.records_dropped < N, "{status:?}");
    // The buffer, or one batch larger than it (a batch of up to 1,024 records always fits
    // an empty buffer; these lines are under 160 bytes).
    assert!(status.bytes_buffered <= 1024 * 160, "{status:?}");
}
