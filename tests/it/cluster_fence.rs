//! Leases fence the data, against a real `nats-server -js` and real wsbridge processes: a
//! holder paused (SIGSTOP) across its lease publishes nothing once woken; every upstream
//! stops within `lease_ttl` + 1 s of NATS going away, even against a server that never
//! answers Close; three instances, one paused and woken at random, store no message twice
//! and publish nothing after their lease lapsed.
//!
//! Each instance publishes to a subject of its own (`feed.<instance>.<upstream>`), so the
//! stream says who published what. The feed server numbers its messages and notes when it
//! sent each and when each connection opened, so "arrived after the takeover" is read from
//! the server's clock, not from wsbridge's.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::brokers::*;
use crate::common::*;

const TTL: Duration = Duration::from_secs(2);
/// For the time a signal takes to stop or wake a process.
const MARGIN: Duration = Duration::from_millis(100);

/// One connection as the feed server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// The `X-Instance` header of the handshake.
    instance: String,
    opened: Instant,
    /// The first and last `n` written to it.
    sent: Option<(u64, u64)>,
    closed: Option<Instant>,
}

/// A WebSocket server sending numbered messages (`{"n":N}`) at a steady rate to every
/// connection; with `answer_close = false` it sends nothing and never answers Close (it reads
/// the raw bytes after the handshake and throws them away), so only the socket closing tells
/// it a client left.
#[derive(Clone)]
struct FeedServer {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Seen>>>,
    /// When each message was sent (index `n`).
    sent: Arc<Mutex<Vec<Instant>>>,
    next: Arc<AtomicU64>,
}

impl FeedServer {
    async fn start(answer_close: bool, every: Duration) -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (feed, _) = broadcast::channel::<String>(1 << 20);
        let server = FeedServer {
            addr: listener.local_addr().unwrap(),
            conns: Arc::default(),
            sent: Arc::new(Mutex::new(vec![Instant::now()])),
            next: Arc::new(AtomicU64::new(1)),
        };
        if answer_close {
            let (s, feed) = (server.clone(), feed.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let n = s.next.fetch_add(1, Ordering::SeqCst);
                    s.sent.lock().unwrap().push(Instant::now());
                    let _ = feed.send(format!("{{\"n\":{n}}}"));
                }
            });
        }
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                let mut rx = feed.subscribe();
                tokio::spawn(async move {
                    let mut path = String::new();
                    let mut instance = String::new();
                    let callback = |req: &Request, resp: Response| {
                        path = req.uri().path().to_string();
                        instance = req
                            .headers()
                            .get("x-instance")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    let index = {
                        let mut conns = s.conns.lock().unwrap();
                        conns.push(Seen {
                            path,
                            instance,
                            opened: Instant::now(),
                            sent: None,
                            closed: None,
                        });
                        conns.len() - 1
                    };
                    if answer_close {
                        let (mut tx, mut frames) = ws.split();
                        loop {
                            tokio::select! {
                                m = frames.next() => match m {
                                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                                    Some(Ok(_)) => {}
                                },
                                m = rx.recv() => match m {
                                    Ok(text) => {
                                        let n = fed_number(text.as_bytes());
                                        if tx.send(Message::text(text)).await.is_err() { break }
                                        let mut conns = s.conns.lock().unwrap();
                                        let sent = &mut conns[index].sent;
                                        *sent = Some((sent.map_or(n, |r| r.0), n));
                                    }
                                    Err(_) => break,
                                },
                            }
                        }
                    } else {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = ws.get_mut().read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    s.conns.lock().unwrap()[index].closed = Some(Instant::now());
                });
            }
        });
        server
    }

    fn conns(&self) -> Vec<Seen> {
        self.conns.lock().unwrap().clone()
    }

    fn open_on(&self, path: &str) -> usize {
        self.conns()
            .iter()
            .filter(|c| c.path == path && c.closed.is_none())
            .count()
    }

    fn sent_at(&self, n: u64) -> Instant {
        self.sent.lock().unwrap()[n as usize]
    }

    async fn wait(&self, what: &str, within: Duration, done: impl Fn(&FeedServer) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {within:?}: {:?}",
                self.conns()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Instance {
    /// Its `[cluster] instance`.
    name: String,
    daemon: Daemon,
    metrics: SocketAddr,
}

/// An instance running `upstreams` upstreams (`/u0`, …) with `replicas` each; with `jetstream`,
/// a nats sink into the stream FEED on `feed.<instance>.<upstream>` (`msg_id` as given),
/// otherwise a quiet stdout sink.
async fn instance(
    name: &str,
    nats: u16,
    feed: SocketAddr,
    upstreams: usize,
    replicas: usize,
    jetstream: Option<&str>,
    extra: &str,
) -> Instance {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut config = format!(
        "{extra}[metrics]\nlisten = \"{metrics}\"\n\n[cluster]\nnats = \"nats://127.0.0.1:{nats}\"\nbucket = \"leases\"\n\
         instance = \"{name}\"\nlease_ttl = \"{}ms\"\n\n[defaults]\nreconnect = {{ initial = \"100ms\", max = \"500ms\" }}\n\n",
        TTL.as_millis()
    );
    for i in 0..upstreams {
        config.push_str(&format!(
            "[[upstream]]\nname = \"u{i}\"\nurl = \"ws://{feed}/u{i}\"\nreplicas = {replicas}\n\
             headers = {{ X-Instance = \"{name}\" }}\n\n"
        ));
    }
    match jetstream {
        Some(msg_id) => config.push_str(&format!(
            "[[sink]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{nats}\"\nsubject = \"feed.{{instance}}.{{upstream}}\"\n\
             jetstream = true\nevents = false\nmsg_id = {msg_id}\nstream = {{ name = \"FEED\", subjects = [\"feed.>\"] }}\n"
        )),
        None => config.push_str("[[sink]]\ntype = \"stdout\"\nevents = false\n"),
    }
    Instance {
        name: name.to_string(),
        daemon: Daemon::start(&config).await,
        metrics,
    }
}

/// Every message of the stream FEED: (publishing instance, upstream, n).
async fn stored(nats: u16) -> Vec<(String, String, u64)> {
    let client = async_nats::connect(format!("nats://127.0.0.1:{nats}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("FEED").await.expect("stream FEED");
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    for _ in 0..total {
        let m = tokio::time::timeout(SOON, messages.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        let mut parts = m.subject.split('.').skip(1);
        let who = parts.next().unwrap_or_default().to_string();
        let upstream = parts.next().unwrap_or_default().to_string();
        out.push((who, upstream, fed_number(&m.payload)));
    }
    out
}

/// Waits until the instance's sink holds nothing more (routed == written + dropped).
async fn settled(i: &Instance) -> wsbridge::metrics::SinkStatus {
    wait_status(i.metrics, SOON * 2, "the sink settling", |s| {
        s.records_routed == s.records_written + s.records_dropped && s.bytes_buffered == 0
    })
    .await
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn a_holder_woken_after_a_takeover_publishes_nothing_that_arrived_after_it() {
    let nats = nats_server().await;
    let server = FeedServer::start(true, Duration::from_millis(4)).await;
    let a = instance("a", nats.port, server.addr, 1, 1, Some("\"seq\""), "").await;
    server
        .wait("a connecting", SOON * 2, |s| s.open_on("/u0") == 1)
        .await;
    let b = instance("b", nats.port, server.addr, 1, 1, Some("\"seq\""), "").await;
    // a publishes for a while, b has joined.
    wait_status(a.metrics, SOON, "a publishing", |s| s.records_written > 200).await;
    let paused = Instant::now();
    a.daemon.signal(19); // SIGSTOP
    server
        .wait("b taking over", SOON * 2, |s| s.conns().len() == 2)
        .await;
    let takeover = server.conns()[1].opened;
    eprintln!("b took over {:?} after a was paused", takeover - paused);
    // b's /status shows it running the upstream.
    let deadline = Instant::now() + SOON;
    loop {
        let open = status_of(b.metrics)
            .await
            .upstreams
            .iter()
            .any(|u| u.state == "open");
        if open {
            break;
        }
        assert!(Instant::now() < deadline, "b never showed u0 open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the backlog grow a while past the takeover, then wake a.
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.daemon.signal(18); // SIGCONT
    server
        .wait("a's old connection closing", SOON, |s| {
            s.conns()[0].closed.is_some()
        })
        .await;
    let a_sink = settled(&a).await;
    settled(&b).await;
    let records = stored(nats.port).await;
    let late: Vec<u64> = records
        .iter()
        .filter(|(who, _, n)| who == "a" && server.sent_at(*n) > takeover)
        .map(|(_, _, n)| *n)
        .collect();
    let by_a = records.iter().filter(|r| r.0 == "a").count();
    let fenced = a_sink.dropped_by_reason.get("fenced").copied().unwrap_or(0);
    eprintln!(
        "a stored {by_a} messages, {} of them sent after b took over; a counted {fenced} fenced",
        late.len()
    );
    assert!(
        late.is_empty(),
        "a published {} messages that arrived after the takeover (first {:?})",
        late.len(),
        late.first()
    );
    // The server wrote to a's connection after the takeover: a read that when woken, and
    // must have counted what it did not publish.
    let written_to_a = server.conns()[0].sent.map_or(0, |r| r.1);
    let pending = written_to_a > 0 && server.sent_at(written_to_a) > takeover;
    assert!(
        fenced > 0 || !pending,
        "a had records pending when woken but counted none fenced: {a_sink:?}"
    );
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn nats_gone_stops_every_upstream_within_lease_ttl_against_a_server_that_ignores_close() {
    let mut nats = nats_server().await;
    let server = FeedServer::start(false, Duration::from_millis(10)).await;
    // A long shutdown_timeout: the bound holds whatever it is.
    let daemon = "[daemon]\nshutdown_timeout = \"10s\"\n\n";
    let _a = instance("a", nats.port, server.addr, 4, 1, None, daemon).await;
    let _b = instance("b", nats.port, server.addr, 4, 1, None, daemon).await;
    server
        .wait("every upstream open", SOON * 2, |s| {
            (0..4).all(|i| s.open_on(&format!("/u{i}")) == 1)
        })
        .await;
    // Converged: nothing is being handed over.
    tokio::time::sleep(TTL).await;
    let killed = Instant::now();
    nats.kill().await;
    let bound = TTL + Duration::from_secs(1);
    let slack = Duration::from_secs(2);
    server
        .wait("every upstream stopping", bound + slack + SOON, |s| {
            s.conns().iter().all(|c| c.closed.is_some())
        })
        .await;
    let took = server
        .conns()
        .iter()
        .filter_map(|c| c.closed)
        .map(|at| at.saturating_duration_since(killed))
        .max()
        .unwrap_or_default();
    eprintln!("every upstream stopped {took:?} after NATS went away (lease_ttl {TTL:?})");
    assert!(
        took <= bound + slack,
        "upstreams stopped {took:?} after NATS went away; the bound is lease_ttl + 1 s = {bound:?} (+ {slack:?} slack)"
    );
}

/// Pauses (SIGSTOP) and wakes one instance after another at random moments for `run`; returns
/// the pauses as (instance, stopped, woken).
async fn pause_at_random(instances: &[Instance], run: Duration) -> Vec<(usize, Instant, Instant)> {
    let start = Instant::now();
    let mut pauses = Vec::new();
    while start.elapsed() < run {
        let who = rand::random::<u32>() as usize % instances.len();
        let before = Duration::from_millis(500 + rand::random::<u64>() % 2500);
        tokio::time::sleep(before).await;
        let length = Duration::from_millis(500 + rand::random::<u64>() % 4000);
        instances[who].daemon.signal(19);
        let stopped = Instant::now();
        tokio::time::sleep(length).await;
        instances[who].daemon.signal(18);
        pauses.push((who, stopped, Instant::now()));
    }
    pauses
}

async fn three_paused_at_random(replicas: usize, msg_id: &str) {
    let nats = nats_server().await;
    let server = FeedServer::start(true, Duration::from_millis(5)).await;
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(instance(name, nats.port, server.addr, 3, replicas, Some(msg_id), "").await);
    }
    server
        .wait("every slot running", SOON * 3, |s| {
            (0..3).all(|i| s.open_on(&format!("/u{i}")) == replicas)
        })
        .await;
    let pauses = pause_at_random(&instances, Duration::from_secs(60)).await;
    for i in &instances {
        settled(i).await;
    }
    let records = stored(nats.port).await;
    // Stored twice: the same message of the same upstream in two entries.
    let mut times: HashMap<(String, u64), u32> = HashMap::new();
    for (_, upstream, n) in &records {
        *times.entry((upstream.clone(), *n)).or_default() += 1;
    }
    let twice = times.values().filter(|&&t| t > 1).count();
    // Published after its lease lapsed: a message the server wrote past four fifths of
    // lease_ttl into a pause that lasted longer (no renewal can have been sent meanwhile), on
    // a connection of that instance opened before the pause, and on none it opened later.
    let conns = server.conns();
    let on = |who: &str, path: &str, n: u64, from: Instant| {
        conns.iter().any(|c| {
            c.instance == who
                && c.path == path
                && c.opened >= from
                && c.sent.is_some_and(|(first, last)| first <= n && n <= last)
        })
    };
    let late = records
        .iter()
        .filter(|(who, upstream, n)| {
            let index = instances.iter().position(|i| i.name == *who).unwrap_or(0);
            let sent = server.sent_at(*n);
            let path = format!("/{upstream}");
            pauses.iter().any(|(p, stopped, woken)| {
                // The last renewal was sent before the pause, so the lease lapsed by four
                // fifths of lease_ttl into it; a shorter pause may have kept it.
                let lapsed = *stopped + TTL * 4 / 5 + MARGIN;
                *p == index && *woken > lapsed && sent > lapsed && !on(who, &path, *n, *stopped)
            })
        })
        .count();
    let fenced: u64 = {
        let mut total = 0;
        for i in &instances {
            total += sink_status(i.metrics)
                .await
                .dropped_by_reason
                .get("fenced")
                .copied()
                .unwrap_or(0);
        }
        total
    };
    eprintln!(
        "replicas {replicas}: {} pauses, {} messages stored, {twice} stored twice, {late} published after a lease lapsed, {fenced} fenced",
        pauses.len(),
        records.len()
    );
    assert_eq!(twice, 0, "messages stored twice");
    assert_eq!(late, 0, "messages published after the lease lapsed");
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn three_instances_paused_at_random_one_replica() {
    three_paused_at_random(1, "{ jq = \".n\" }").await;
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn three_instances_paused_at_random_two_replicas() {
    three_paused_at_random(2, "{ jq = \".n\" }").await;
}
