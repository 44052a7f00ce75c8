//! `[cluster]` against a real `nats-server -js` and real wsbridge processes: one owner per
//! upstream and an even spread, failover after `kill -9` and SIGTERM, every upstream stopped
//! while NATS is away, and `replicas = 2` into JetStream losing nothing when one dies.
//!
//! A counting WebSocket server sees every connection per path, with the longest time two
//! were open at once on one path.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use wsbridge::metrics::Status;

use crate::brokers::*;
use crate::common::*;

const TTL: Duration = Duration::from_secs(2);
/// Fair slack for a debug build on a busy machine.
const SLACK: Duration = Duration::from_secs(3);

#[derive(Default)]
struct PathState {
    open: usize,
    /// Connections ever opened.
    connects: usize,
    /// When a second connection opened, while two are.
    doubled_at: Option<Instant>,
    longest_double: Duration,
}

/// Counts the open connections per path; broadcasts `feed` messages to every connection.
#[derive(Clone)]
struct CountingServer {
    addr: SocketAddr,
    paths: Arc<Mutex<HashMap<String, PathState>>>,
    feed: broadcast::Sender<String>,
}

impl CountingServer {
    async fn start() -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (feed, _) = broadcast::channel(100_000);
        let server = CountingServer {
            addr: listener.local_addr().unwrap(),
            paths: Arc::default(),
            feed,
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    let callback = |req: &Request, resp: Response| {
                        path = req.uri().path().to_string();
                        Ok(resp)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                        return;
                    };
                    let mut feed = s.feed.subscribe();
                    s.change(&path, true);
                    let (mut tx, mut rx) = ws.split();
                    loop {
                        tokio::select! {
                            m = rx.next() => match m {
                                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                                Some(Ok(_)) => {}
                            },
                            m = feed.recv() => match m {
                                Ok(text) => if tx.send(Message::text(text)).await.is_err() { break },
                                Err(_) => break,
                            },
                        }
                    }
                    s.change(&path, false);
                });
            }
        });
        server
    }

    fn change(&self, path: &str, opened: bool) {
        let mut paths = self.paths.lock().unwrap();
        let p = paths.entry(path.to_string()).or_default();
        if opened {
            p.open += 1;
            p.connects += 1;
            if p.open == 2 {
                p.doubled_at = Some(Instant::now());
            }
        } else {
            p.open -= 1;
            if p.open == 1 {
                if let Some(at) = p.doubled_at.take() {
                    p.longest_double = p.longest_double.max(at.elapsed());
                }
            }
        }
    }

    fn open(&self) -> BTreeMap<String, usize> {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.open))
            .collect()
    }

    fn connects(&self) -> BTreeMap<String, usize> {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.connects))
            .collect()
    }

    fn longest_double(&self) -> Duration {
        self.paths
            .lock()
            .unwrap()
            .values()
            .map(|p| {
                let now = p.doubled_at.map_or(Duration::ZERO, |at| at.elapsed());
                p.longest_double.max(now)
            })
            .max()
            .unwrap_or_default()
    }

    /// Waits until each of `paths` has exactly `want` connections; returns how long it took.
    async fn wait_each(&self, paths: &[String], want: usize, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let open = self.open();
            if paths
                .iter()
                .all(|p| open.get(p).copied().unwrap_or(0) == want)
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "not {want} connection(s) per path within {within:?}: {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Instance {
    daemon: Daemon,
    metrics: SocketAddr,
}

fn paths(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/u{i}")).collect()
}

async fn instance(
    name: &str,
    nats: u16,
    server: &CountingServer,
    upstreams: usize,
    replicas: usize,
    sink: &str,
) -> Instance {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut config = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\n[cluster]\nnats = \"nats://127.0.0.1:{nats}\"\nbucket = \"leases\"\n\
         instance = \"{name}\"\nlease_ttl = \"{}ms\"\n\n[defaults]\nreconnect = {{ initial = \"100ms\", max = \"500ms\" }}\n\n",
        TTL.as_millis()
    );
    for (i, path) in paths(upstreams).iter().enumerate() {
        config.push_str(&format!(
            "[[upstream]]\nname = \"u{i}\"\nurl = \"ws://{}{path}\"\nreplicas = {replicas}\n\n",
            server.addr
        ));
    }
    config.push_str(sink);
    Instance {
        daemon: Daemon::start(&config).await,
        metrics,
    }
}

const QUIET_SINK: &str = "[[sink]]\ntype = \"stdout\"\nevents = false\n";

/// The upstreams an instance has open, by its /status.
/// `None` while the instance's view shows a lease without a holder (a handover under way).
async fn open_upstreams(i: &Instance) -> Option<usize> {
    match wsbridge::status_client::fetch_status(i.metrics).await {
        Ok(Status {
            upstreams,
            cluster: Some(c),
            ..
        }) if c.leases.iter().all(|l| l.holder.is_some()) => {
            Some(upstreams.iter().filter(|u| u.state == "open").count())
        }
        _ => None,
    }
}

async fn three(nats: u16, server: &CountingServer) -> Vec<Instance> {
    let mut out = Vec::new();
    for name in ["a", "b", "c"] {
        out.push(instance(name, nats, server, 12, 1, QUIET_SINK).await);
    }
    server.wait_each(&paths(12), 1, SOON * 2).await;
    out
}

/// Waits until the three instances have 4 upstreams open each (the spread converged).
async fn wait_even(instances: &[Instance], each: &[usize]) {
    let each: Vec<Option<usize>> = each.iter().map(|&n| Some(n)).collect();
    let deadline = Instant::now() + SOON * 2;
    loop {
        let mut counts = Vec::new();
        for i in instances {
            counts.push(open_upstreams(i).await);
        }
        if counts == each {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "upstreams per instance {counts:?}, expected {each:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn three_instances_one_owner_each_four_apiece() {
    let nats = nats_server().await;
    let server = CountingServer::start().await;
    let instances = three(nats.port, &server).await;
    wait_even(&instances, &[4, 4, 4]).await;
    server.wait_each(&paths(12), 1, SOON).await;
    // Converged: nothing moves any more.
    let connects = server.connects();
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(
        server.connects(),
        connects,
        "upstreams moved after the spread converged"
    );
    let status = status_of(instances[0].metrics).await;
    let cluster = status.cluster.expect("a cluster section in /status");
    assert_eq!(cluster.members, ["a", "b", "c"]);
    assert!(
        cluster
            .last_round_trip_age_seconds
            .is_some_and(|age| age < TTL.as_secs_f64()),
        "a lease round was answered within the last lease_ttl: {cluster:?}"
    );
    assert_eq!(cluster.leases.len(), 12);
    assert!(
        cluster.leases.iter().all(|l| l.holder.is_some()),
        "{cluster:?}"
    );
    assert!(
        server.longest_double() < TTL,
        "two connections on one path for {:?}",
        server.longest_double()
    );
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn kill_9_fails_over_within_lease_ttl() {
    let nats = nats_server().await;
    let server = CountingServer::start().await;
    let mut instances = three(nats.port, &server).await;
    wait_even(&instances, &[4, 4, 4]).await;
    let mut victim = instances.remove(0);
    victim.daemon.child.start_kill().unwrap();
    let _ = victim.daemon.child.wait().await;
    // The killed instance's connections drop with it.
    let took = server
        .wait_each(&paths(12), 1, TTL + Duration::from_secs(2) + SLACK)
        .await;
    eprintln!("failover after kill -9 took {took:?}");
    wait_even(&instances, &[6, 6]).await;
    assert!(
        server.longest_double() < TTL,
        "two connections on one path for {:?}",
        server.longest_double()
    );
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn sigterm_hands_leases_over_at_once() {
    let nats = nats_server().await;
    let server = CountingServer::start().await;
    let mut instances = three(nats.port, &server).await;
    wait_even(&instances, &[4, 4, 4]).await;
    let mut leaving = instances.remove(0);
    leaving.daemon.signal(15);
    let stopped = Instant::now();
    assert!(
        leaving.daemon.wait().await.success(),
        "{}",
        leaving.daemon.stderr()
    );
    leaving.daemon.wait_for_log("leases handed back").await;
    // Each path first loses its connection; then, well before lease_ttl, has one again.
    let deadline = stopped + Duration::from_secs(2) + SLACK;
    loop {
        let open = server.open();
        let all = paths(12).iter().all(|p| open.get(p) == Some(&1));
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over in time: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("takeover after SIGTERM took {:?}", stopped.elapsed());
    wait_even(&instances, &[6, 6]).await;
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn nats_down_stops_every_upstream_and_they_come_back() {
    let mut nats = nats_server().await;
    let server = CountingServer::start().await;
    let instances = three(nats.port, &server).await;
    nats.kill().await;
    let took = server.wait_each(&paths(12), 0, TTL + SLACK).await;
    eprintln!("all upstreams stopped {took:?} after NATS went away");
    tokio::time::sleep(TTL).await;
    assert!(
        server.open().values().all(|&n| n == 0),
        "{:?}",
        server.open()
    );
    nats.restart().await;
    server.wait_each(&paths(12), 1, SOON * 2).await;
    wait_even(&instances, &[4, 4, 4]).await;
    server.wait_each(&paths(12), 1, SOON).await;
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn a_fourth_instance_takes_its_share_stopping_each_upstream_at_most_once() {
    let nats = nats_server().await;
    let server = CountingServer::start().await;
    let mut instances = three(nats.port, &server).await;
    wait_even(&instances, &[4, 4, 4]).await;
    server.wait_each(&paths(12), 1, SOON).await;
    let before = server.connects();
    instances.push(instance("d", nats.port, &server, 12, 1, QUIET_SINK).await);
    wait_even(&instances, &[3, 3, 3, 3]).await;
    server.wait_each(&paths(12), 1, SOON).await;
    let after = server.connects();
    let moved: Vec<_> = after.iter().filter(|(p, n)| before[*p] != **n).collect();
    assert_eq!(
        moved.len(),
        3,
        "exactly the joiner's share moves: {moved:?}"
    );
    assert!(
        moved.iter().all(|(p, n)| before[*p] + 1 == **n),
        "{moved:?}"
    );
    assert!(
        server.longest_double() < TTL,
        "two connections on one path for {:?}",
        server.longest_double()
    );
}

#[tokio::test]
#[ignore = "needs nats-server: tests/run.sh installs and runs it"]
async fn two_replicas_into_jetstream_lose_nothing_when_one_is_killed() {
    const N: u64 = 3000;
    let nats = nats_server().await;
    let server = CountingServer::start().await;
    let sink = format!(
        "[[sink]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\nsubject = \"feed.{{upstream}}\"\njetstream = true\n\
         events = false\nmsg_id = \"content\"\nstream = {{ name = \"FEED\", subjects = [\"feed.>\"] }}\n",
        nats.port
    );
    let _a = instance("a", nats.port, &server, 1, 2, &sink).await;
    let mut b = instance("b", nats.port, &server, 1, 2, &sink).await;
    server.wait_each(&paths(1), 2, SOON * 2).await;
    for n in 1..=N {
        let _ = server.feed.send(format!("{{\"n\":{n}}}"));
        if n == N / 2 {
            b.daemon.child.start_kill().unwrap();
            let _ = b.daemon.child.wait().await;
        }
        if n % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("FEED").await.expect("stream FEED");
    let deadline = Instant::now() + SOON * 3;
    loop {
        let count = stream.info().await.unwrap().state.messages;
        if count >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {count} of {N} messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = vec![0u32; N as usize + 1];
    let total = stream.info().await.unwrap().state.messages;
    for _ in 0..total {
        let m = tokio::time::timeout(SOON, messages.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        seen[fed_number(&m.payload) as usize] += 1;
    }
    let wrong: Vec<_> = (1..=N as usize)
        .filter(|&n| seen[n] != 1)
        .map(|n| (n, seen[n]))
        .collect();
    assert!(
        wrong.is_empty(),
        "messages not stored exactly once (n, times): {wrong:?}"
    );
    assert_eq!(total, N);
}
