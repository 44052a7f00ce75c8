//! `replay = N` on unix and tcp sinks: a client that joins late gets the last N data records
//! of each upstream, then the live ones, with no gap and no repeat in `seq`, also while the
//! feed runs as fast as the daemon takes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;

/// The `seq` of an NDJSON data record line, without parsing the whole line.
fn seq_of(line: &str) -> Option<u64> {
    let rest = &line[line.find("\"seq\":")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads data records until `last`, asserting each `seq` follows the one before; returns the
/// first.
async fn contiguous_until<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut RecordReader<R>,
    last: u64,
    who: &str,
) -> u64 {
    let mut first = None;
    let mut previous = 0;
    while previous < last {
        let line = reader
            .next_line()
            .await
            .unwrap_or_else(|| panic!("{who}: the sink closed before seq {last}"));
        let Some(seq) = seq_of(&line) else { continue };
        if first.is_none() {
            first = Some(seq);
        } else {
            assert_eq!(seq, previous + 1, "{who}: seq {seq} after {previous}");
        }
        previous = seq;
    }
    first.expect("at least one record")
}

/// Sends text messages `from..=to` (their text is their number) as fast as the socket takes
/// them, counting into `sent` what was handed to the socket.
async fn send_numbered(conn: &mut Conn, from: u64, to: u64, sent: &AtomicU64) {
    for i in from..=to {
        conn.ws.feed(Message::text(i.to_string())).await.unwrap();
        sent.store(i, Ordering::Release);
        if i % 256 == 0 {
            conn.ws.flush().await.unwrap();
        }
    }
    conn.ws.flush().await.unwrap();
}

#[tokio::test]
async fn a_late_joiner_gets_the_last_n_records_of_each_upstream_then_the_live_ones() {
    let mut one = TestServer::start(ServerOptions::default()).await;
    let mut two = TestServer::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("feed.sock");
    let port = free_port();
    let config = format!(
        r#"
[[upstream]]
name = "one"
url = "{one}"

[[upstream]]
name = "two"
url = "{two}"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{port}"
replay = 100

[[sink]]
type = "unix"
path = "{sock}"
upstreams = ["one"]
replay = 5
"#,
        one = one.url("/"),
        two = two.url("/"),
        sock = sock.display()
    );
    let _daemon = Daemon::start_in(dir, &config).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // A client from the start sees everything; it tells the test when the sink has it all.
    let mut early = RecordReader::new(connect_tcp(addr).await);
    let (mut a, mut b) = (one.accept().await, two.accept().await);
    let sent = AtomicU64::new(0);
    send_numbered(&mut a, 1, 300, &sent).await;
    send_numbered(&mut b, 1, 30, &sent).await;
    let mut seen = (0, 0);
    while seen != (300, 30) {
        let r = early.next().await;
        if is_data(&r) {
            let seq = r["seq"].as_u64().unwrap();
            match r["upstream"].as_str() {
                Some("one") => seen.0 = seq,
                _ => seen.1 = seq,
            }
        }
    }

    let mut late = RecordReader::new(connect_tcp(addr).await);
    let mut history = (Vec::new(), Vec::new());
    while history.0.len() < 100 || history.1.len() < 30 {
        let r = late.next().await;
        if is_data(&r) {
            let seq = r["seq"].as_u64().unwrap();
            match r["upstream"].as_str() {
                Some("one") => history.0.push(seq),
                _ => history.1.push(seq),
            }
        }
    }
    assert_eq!(history.0, (201..=300).collect::<Vec<_>>());
    assert_eq!(history.1, (1..=30).collect::<Vec<_>>());
    let mut unix = RecordReader::new(connect_unix(&sock).await);

    // The live records follow the history at once.
    send_numbered(&mut a, 301, 310, &sent).await;
    let first = contiguous_until(&mut late, 310, "tcp late joiner").await;
    assert_eq!(first, 301);
    let first = contiguous_until(&mut unix, 310, "unix late joiner").await;
    assert_eq!(first, 296, "the unix sink keeps the last 5");
}

#[tokio::test]
async fn clients_joining_a_hot_feed_at_random_moments_see_contiguous_seq() {
    const TOTAL: u64 = 50_000;
    const REPLAY: u64 = 1000;
    const CLIENTS: usize = 20;
    let mut server = TestServer::start(ServerOptions::default()).await;
    let port = free_port();
    let config = format!(
        r#"
[[upstream]]
name = "hot"
url = "{url}"

[[sink]]
type = "tcp"
listen = "127.0.0.1:{port}"
events = false
replay = {REPLAY}
on_slow = "block"
"#,
        url = server.url("/"),
    );
    let daemon = Daemon::start(&config).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    drop(connect_tcp(addr).await); // listening
    let mut conn = server.accept().await;
    // A client from the start: what it has read, the sink had delivered.
    let seen = Arc::new(AtomicU64::new(0));
    let observer = {
        let seen = seen.clone();
        let mut reader = RecordReader::new(connect_tcp(addr).await);
        tokio::spawn(async move {
            let mut previous = 0;
            while previous < TOTAL {
                let line = reader.next_line().await.expect("observer: sink open");
                let seq = seq_of(&line).expect("a data record");
                assert_eq!(seq, previous + 1, "observer: seq {seq} after {previous}");
                previous = seq;
                seen.store(seq, Ordering::Release);
            }
        })
    };

    let mut clients = Vec::new();
    for k in 0..CLIENTS {
        let join_at = rand::rng().random_range(0..TOTAL * 9 / 10);
        let seen = seen.clone();
        clients.push(tokio::spawn(async move {
            while seen.load(Ordering::Acquire) < join_at {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The sink had delivered at least this many when it added the client.
            let before = seen.load(Ordering::Acquire);
            let mut reader = RecordReader::new(connect_tcp(addr).await);
            let who = format!("client {k} (joined after seq {before})");
            let first = contiguous_until(&mut reader, TOTAL, &who).await;
            (who, first, before)
        }));
    }
    let sent = AtomicU64::new(0);
    send_numbered(&mut conn, 1, TOTAL, &sent).await;
    observer.await.expect("observer ok");
    let mut replayed = 0;
    for client in clients {
        let (who, first, before) = client.await.expect("client ok");
        // Its history is at most the last REPLAY records of what the sink had at its join.
        assert!(
            first + REPLAY > before,
            "{who}: first seq {first} is older than the last {REPLAY}; stderr:\n{}",
            daemon.stderr()
        );
        // Without a history its first record would come after `before`.
        replayed += usize::from(first <= before);
    }
    // Informative only: how far the sink ran ahead of the observer is not bounded here.
    eprintln!("{replayed} of {CLIENTS} clients got records from before they joined");
}
