//! The `nats` sink's record identity under faults, against a real `nats-server -js`: an
//! upstream removed and added back by reloads, two sinks into one stream, replicas with
//! `msg_id = { jq = … }`, and a storm of reloads. Each checks the stream itself: every record
//! in it once, or counted as dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::brokers::*;
use crate::common::*;

/// How long a feed may take to reach the stream in a debug build.
const FEED_TIME: Duration = Duration::from_secs(60);
const SIGHUP: i32 = 1;

/// One message of the stream: its subject, upstream, seq and fed number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Stored {
    subject: String,
    upstream: String,
    seq: u64,
    n: u64,
}

/// Every message of stream FEED, in stream order.
async fn read_stream(port: u16) -> Vec<Stored> {
    let mut out = Vec::new();
    for message in stream_messages(port, "FEED").await {
        let headers = message.headers.as_ref().expect("headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        out.push(Stored {
            subject: message.subject.to_string(),
            upstream: header("Wsbridge-Upstream").expect("Wsbridge-Upstream"),
            seq: header("Wsbridge-Seq")
                .expect("Wsbridge-Seq")
                .parse()
                .unwrap(),
            n: fed_number(&message.payload),
        });
    }
    out
}

/// Polls until every sink has had `n` records acknowledged.
async fn wait_acknowledged(metrics: SocketAddr, n: u64) {
    let deadline = Instant::now() + FEED_TIME;
    loop {
        let all = status_of(metrics).await.sinks;
        if all
            .iter()
            .all(|s| s.broker.as_ref().is_some_and(|b| b.acknowledged >= n))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every sink had {n} records acknowledged within {FEED_TIME:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrites the config, sends SIGHUP and waits until the reload is applied.
async fn reload(daemon: &Daemon, config: &str) {
    const APPLIED: &str = " upstreams open, ";
    let before = daemon.stderr().matches(APPLIED).count();
    daemon.write_config(config);
    daemon.signal(SIGHUP);
    let deadline = Instant::now() + SOON * 2;
    while daemon.stderr().matches(APPLIED).count() <= before {
        assert!(
            Instant::now() < deadline,
            "the reload was not applied in time; stderr:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A feed server's connections, each sent `{"n":1,…}`, `{"n":2,…}`, … every `every` until
/// it closes or `stop` is set.
fn feed_every_connection(mut server: TestServer, every: Duration, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        loop {
            let conn = server.accept_any().await;
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut tx, mut rx) = conn.ws.split();
                // Reading answers Pings and the Close of a reload.
                tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 1.. {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let text = format!("{{\"n\":{n},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}");
                    if tx.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn an_upstream_removed_and_added_back_keeps_every_record() {
    const N: u64 = 1_000;
    let server = nats_server().await;
    let mut ws = TestServer::start(ServerOptions::default()).await;
    let idle = TestServer::start(ServerOptions::default()).await;
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let sink = nats_sink_keys(server.port, "wsbridge.{upstream}", "");
    let with_feed = TestConfig::new()
        .metrics(metrics.port())
        .upstream("feed", &ws.url("/"), "")
        .upstream("idle", &idle.url("/"), "")
        .sink("nats", &sink)
        .to_string();
    let without = TestConfig::new()
        .metrics(metrics.port())
        .upstream("idle", &idle.url("/"), "")
        .sink("nats", &sink)
        .to_string();
    let daemon = Daemon::start(&with_feed).await;
    let first = feed(&mut ws, N).await;
    wait_acknowledged(metrics, N).await;
    reload(&daemon, &without).await;
    first.abort();
    reload(&daemon, &with_feed).await;
    let _second = feed(&mut ws, N).await;
    wait_acknowledged(metrics, 2 * N).await;
    let stored = read_stream(server.port).await;
    let status = &status_of(metrics).await.sinks[0];
    println!(
        "stream holds {} of {} records; written {}, dropped {}",
        stored.len(),
        2 * N,
        status.records_written,
        status.records_dropped
    );
    assert_eq!(
        stored.len() as u64,
        2 * N,
        "{} of the second connection's {N} records are missing from the stream",
        2 * N - stored.len() as u64
    );
    let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
    assert_eq!(
        seqs,
        (1..=2 * N).collect::<Vec<_>>(),
        "seq went on counting"
    );
    assert_eq!(status.records_written, 2 * N);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn two_sinks_into_one_stream_keep_every_record() {
    const N: u64 = 2_000;
    let server = nats_server().await;
    let mut ws = TestServer::start(ServerOptions::default()).await;
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = TestConfig::new()
        .metrics(metrics.port())
        .upstream("feed", &ws.url("/"), "")
        .sink(
            "nats",
            &nats_sink_keys(server.port, "wsbridge.raw.{upstream}", ""),
        )
        .sink(
            "nats",
            &nats_sink_keys(server.port, "wsbridge.copy.{upstream}", ""),
        );
    let _daemon = Daemon::start(&config.to_string()).await;
    let _feed = feed(&mut ws, N).await;
    wait_acknowledged(metrics, N).await;
    let stored = read_stream(server.port).await;
    let mut by_subject: HashMap<String, HashSet<u64>> = HashMap::new();
    for s in &stored {
        by_subject.entry(s.subject.clone()).or_default().insert(s.n);
    }
    let raw = by_subject.get("wsbridge.raw.feed").map_or(0, HashSet::len);
    let copy = by_subject.get("wsbridge.copy.feed").map_or(0, HashSet::len);
    println!("of {N} records each: {raw} on wsbridge.raw.feed, {copy} on wsbridge.copy.feed");
    assert_eq!(
        (raw as u64, copy as u64),
        (N, N),
        "each sink's records all stored"
    );
    assert_eq!(stored.len() as u64, 2 * N, "and each once");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn replicas_with_a_jq_msg_id_store_each_message_once() {
    const N: u64 = 2_000;
    let server = nats_server().await;
    let mut daemons = Vec::new();
    let mut feeds = Vec::new();
    let mut all_metrics = Vec::new();
    // Two instances of one config on one feed: each its own connection and own run.
    for _ in 0..2 {
        let mut ws = TestServer::start(ServerOptions::default()).await;
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let sink = nats_sink_keys(
            server.port,
            "wsbridge.{upstream}",
            "msg_id = { jq = \".n\" }",
        );
        let config = TestConfig::new()
            .metrics(metrics.port())
            .upstream("feed", &ws.url("/"), "")
            .sink("nats", &sink);
        daemons.push(Daemon::start(&config.to_string()).await);
        feeds.push(feed(&mut ws, N).await);
        feeds.push(tokio::spawn(async move {
            let _keep = ws;
            std::future::pending::<()>().await
        }));
        all_metrics.push(metrics);
    }
    for metrics in &all_metrics {
        wait_acknowledged(*metrics, N).await;
    }
    let stored = read_stream(server.port).await;
    let numbers: HashSet<u64> = stored.iter().map(|s| s.n).collect();
    println!(
        "two instances of {N} messages each: the stream holds {} messages, {} distinct",
        stored.len(),
        numbers.len()
    );
    assert_eq!(
        numbers,
        (1..=N).collect::<HashSet<_>>(),
        "every message stored"
    );
    assert_eq!(stored.len() as u64, N, "each once");
    for metrics in &all_metrics {
        let status = &status_of(*metrics).await.sinks[0];
        assert_eq!(status.broker.as_ref().unwrap().msg_id_fallbacks, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn a_storm_of_reloads_loses_no_record_silently() {
    const RELOADS: usize = 50;
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let server = nats_server().await;
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut urls = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in NAMES {
        let ws = TestServer::start(ServerOptions::default()).await;
        urls.push(ws.url("/"));
        feed_every_connection(ws, Duration::from_millis(2), stop.clone());
    }
    let sink = nats_sink_keys(server.port, "wsbridge.{upstream}", "");
    // A non-empty subset of the upstreams, by the bits of `mask`.
    let config = |mask: usize| {
        let mut config = TestConfig::new().metrics(metrics.port());
        for (i, name) in NAMES.iter().enumerate() {
            if mask & (1 << i) != 0 {
                config = config.upstream(name, &urls[i], "");
            }
        }
        config.sink("nats", &sink).to_string()
    };
    let daemon = Daemon::start(&config(0b111)).await;
    let started = Instant::now();
    for i in 0..RELOADS {
        // Every subset in turn, so each upstream is removed and added back many times.
        let mask = (i * 5) % 7 + 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        reload(&daemon, &config(mask)).await;
    }
    reload(&daemon, &config(0b111)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    // Once nothing more comes, everything routed is written or dropped.
    let deadline = Instant::now() + FEED_TIME;
    let status = loop {
        let s = status_of(metrics).await.sinks.remove(0);
        let settled = s.records_written + s.records_dropped == s.records_routed;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = status_of(metrics).await.sinks.remove(0);
        if settled && again.records_routed == s.records_routed {
            break again;
        }
        assert!(Instant::now() < deadline, "never settled: {again:?}");
    };
    let stored = read_stream(server.port).await;
    let distinct: HashSet<(String, u64)> =
        stored.iter().map(|s| (s.upstream.clone(), s.seq)).collect();
    println!(
        "{RELOADS} reloads in {:?}: routed {}, written {}, dropped {}, stream {} ({} distinct upstream+seq)",
        started.elapsed(),
        status.records_routed,
        status.records_written,
        status.records_dropped,
        stored.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), stored.len(), "no upstream+seq stored twice");
    assert_eq!(
        status.records_written + status.records_dropped,
        status.records_routed,
        "every record routed is written or dropped"
    );
    assert_eq!(
        stored.len() as u64,
        status.records_written,
        "every record counted as written is in the stream ({} missing)",
        status.records_written.saturating_sub(stored.len() as u64)
    );
    // Each upstream's seqs: 1, 2, 3, … with none missing that was not dropped.
    for name in NAMES {
        let mut seqs: Vec<u64> = distinct
            .iter()
            .filter(|(u, _)| u == name)
            .map(|(_, s)| *s)
            .collect();
        seqs.sort_unstable();
        let max = seqs.last().copied().unwrap_or(0);
        assert!(
            max - seqs.len() as u64 <= status.records_dropped,
            "upstream {name}: {} seqs missing below {max}, {} dropped",
            max - seqs.len() as u64,
            status.records_dropped
        );
    }
}
