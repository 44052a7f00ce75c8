//! The `http` sink against a real HTTP/1.1 server (hyper) the test runs: batches POSTed as
//! NDJSON, retried after 503 with `Retry-After`, after 500s and after a request that hangs
//! past `timeout`, so that every record arrives (at least once); a 4xx answer counts the
//! batch dropped (`rejected`). Routed == written + dropped at the end.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::brokers::*;
use crate::common::*;

/// How long a feed may take to arrive in a debug build.
const FEED_TIME: Duration = Duration::from_secs(120);

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Requests, counted from 1.
    requests: u64,
    /// Times each seq arrived in a request the server answered 2xx (or held).
    seqs: HashMap<u64, u64>,
    /// Records per request.
    sizes: Vec<usize>,
    /// Content-Type and the `authorization` header of each request.
    headers: Vec<(String, String)>,
}

/// How the server answers the request numbered `n` (from 1).
type Plan = fn(u64) -> Answer;

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Status(u16, Option<&'static str>),
    Hang,
}

/// Serves HTTP/1.1 on a free port, answering as `plan` says.
async fn server(plan: Plan) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(req, plan, &state).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    plan: Plan,
    state: &Mutex<Seen>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let headers = (header("content-type"), header("authorization"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let seqs: Vec<u64> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("an NDJSON line");
            v["seq"].as_u64().expect("a seq")
        })
        .collect();
    let what = {
        let mut seen = state.lock().unwrap();
        seen.requests += 1;
        let what = plan(seen.requests);
        seen.headers.push(headers);
        if matches!(what, Answer::Ok | Answer::Hang) {
            seen.sizes.push(seqs.len());
            for seq in &seqs {
                *seen.seqs.entry(*seq).or_default() += 1;
            }
        }
        what
    };
    let status = match what {
        Answer::Ok => 200,
        Answer::Hang => {
            // Stored, but the answer comes too late: the batch is sent again.
            tokio::time::sleep(Duration::from_secs(30)).await;
            200
        }
        Answer::Status(code, _) => code,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"not today\n")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Answer::Status(_, Some(after)) = what {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

async fn start(addr: SocketAddr, extra: &str) -> (TestServer, Daemon, SocketAddr) {
    let ws = TestServer::start(ServerOptions::default()).await;
    let (head, metrics) = daemon_head(&ws.url("/"));
    let sink = format!(
        "url = \"http://{addr}/ingest\"\n\
         headers = {{ Authorization = \"Bearer ${{WSB_HTTP_TEST_TOKEN}}\" }}\n\
         events = false\non_slow = \"block\"\n{extra}"
    );
    // The daemon expands ${WSB_HTTP_TEST_TOKEN} from its environment.
    let daemon = Daemon::start_with_env(
        tempfile::tempdir().unwrap(),
        &head.sink("http", &sink).to_string(),
        &[("WSB_HTTP_TEST_TOKEN", "s3cret")],
    )
    .await;
    (ws, daemon, metrics)
}

/// 503 with `Retry-After: 1`, then two 500s, then a request hung past `timeout`, then a
/// 500 now and then: every one of 5,000 records arrives, at least once.
#[tokio::test(flavor = "multi_thread")]
async fn http_every_record_arrives_through_503_500_and_a_hung_request() {
    const N: u64 = 5_000;
    let (addr, seen) = server(|n| match n {
        1 => Answer::Status(503, Some("1")),
        2 | 3 => Answer::Status(500, None),
        4 => Answer::Hang,
        n if n % 7 == 0 => Answer::Status(500, None),
        _ => Answer::Ok,
    })
    .await;
    let (mut ws, daemon, metrics) = start(
        addr,
        "max_batch = 300\nlinger = \"20ms\"\ntimeout = \"1s\"\n",
    )
    .await;
    let started = std::time::Instant::now();
    let _feed = feed(&mut ws, N).await;
    let status = wait_status(metrics, FEED_TIME, "every record written", |s| {
        s.records_written == N
    })
    .await;
    let took = started.elapsed();
    assert_eq!(status.records_dropped, 0, "{status:?}");
    assert_eq!(
        status.records_routed,
        status.records_written + status.records_dropped
    );
    assert_eq!(status.bytes_buffered, 0);
    let seen = seen.lock().unwrap();
    let missing: Vec<u64> = (1..=N).filter(|s| !seen.seqs.contains_key(s)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    let duplicates: u64 = seen.seqs.values().map(|n| n - 1).sum();
    assert!(seen.sizes.iter().all(|n| *n <= 300), "{:?}", seen.sizes);
    assert!(seen
        .headers
        .iter()
        .all(|(ct, auth)| ct == "application/x-ndjson" && auth == "Bearer s3cret"));
    let broker = status.broker.expect("delivery counters");
    println!(
        "http sink: {N} records in {took:?}, {} requests (largest {}), {duplicates} duplicates, \
         retried {} records",
        seen.requests,
        seen.sizes.iter().max().unwrap_or(&0),
        broker.retried
    );
    // The first retry waited for Retry-After: 1.
    assert!(took >= Duration::from_secs(1));
    assert!(broker.retried > 0);
    let log = daemon.stderr();
    assert!(log.contains("HTTP 503"), "{log}");
    assert!(log.contains("no answer within timeout"), "{log}");
    assert!(!log.contains("s3cret"), "the header's secret is in the log");
}

/// A 4xx refuses the batch for good: its records are counted dropped (`rejected`) with a
/// log line, and the sink goes on.
#[tokio::test(flavor = "multi_thread")]
async fn http_4xx_counts_the_batch_rejected() {
    const N: u64 = 500;
    let (addr, seen) = server(|n| {
        if n % 2 == 1 {
            Answer::Status(400, None)
        } else {
            Answer::Ok
        }
    })
    .await;
    let (mut ws, daemon, metrics) = start(addr, "max_batch = 50\nlinger = \"10ms\"\n").await;
    let _feed = feed(&mut ws, N).await;
    let status = wait_status(metrics, FEED_TIME, "every record settled", |s| {
        s.records_written + s.records_dropped == N
    })
    .await;
    let rejected = status
        .dropped_by_reason
        .get("rejected")
        .copied()
        .unwrap_or(0);
    println!(
        "http sink 4xx: written {}, rejected {rejected}",
        status.records_written
    );
    assert!(rejected > 0, "{status:?}");
    assert_eq!(rejected, status.records_dropped);
    assert_eq!(
        status.records_routed,
        status.records_written + status.records_dropped
    );
    let accepted: u64 = seen.lock().unwrap().sizes.iter().map(|n| *n as u64).sum();
    assert_eq!(accepted, status.records_written);
    let log = daemon.stderr();
    assert!(log.contains("400 Bad Request"), "{log}");
    assert!(log.contains("not today"), "{log}");
}
