//! The pieces of `bench/http.sh`, on loopback: a WebSocket feed, an HTTP collector, and a
//! plain hyper client posting the same NDJSON batches (the baseline the sink is measured
//! against).
//!
//! ```text
//! http_bench feed --port P --count N        # sends N text messages to its first client
//! http_bench collect --port P --count N     # prints `DONE <records> <secs>` once N lines arrived
//! http_bench plain --url U --count N --batch B
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::SinkExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A WebSocket server sending `count` messages to its first client.
    Feed {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u64,
    },
    /// An HTTP server counting NDJSON lines until `count`.
    Collect {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u64,
    },
    /// POSTs `count` records in batches of `batch`, one request in flight.
    Plain {
        #[arg(long)]
        url: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
    },
}

fn message(n: u64) -> String {
    format!("{{\"n\":{n},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().cmd {
        Cmd::Feed { port, count } => {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let (stream, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(stream).await?;
            for n in 1..=count {
                ws.feed(Message::text(message(n))).await?;
            }
            ws.flush().await?;
            tokio::time::sleep(Duration::from_secs(300)).await;
        }
        Cmd::Collect { port, count } => {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let seen = Arc::new(AtomicU64::new(0));
            let start: Arc<std::sync::OnceLock<Instant>> = Arc::default();
            loop {
                let (stream, _) = listener.accept().await?;
                let (seen, start) = (seen.clone(), start.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, start) = (seen.clone(), start.clone());
                        async move {
                            start.get_or_init(Instant::now);
                            let body = req.into_body().collect().await?.to_bytes();
                            let lines = memchr::memchr_iter(b'\n', &body).count() as u64;
                            let total = seen.fetch_add(lines, Ordering::Relaxed) + lines;
                            if total >= count {
                                let secs = start.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
                                println!("DONE {total} {secs:.3}");
                                // After this answer has gone out.
                                tokio::spawn(async {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    std::process::exit(0);
                                });
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
        Cmd::Plain { url, count, batch } => {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let uri: hyper::Uri = url.parse()?;
            let mut n = 0;
            while n < count {
                let mut body = Vec::new();
                for _ in 0..batch.min(count - n) {
                    n += 1;
                    // The shape of a sink's line: the record around the message.
                    body.extend_from_slice(
                        format!(
                            "{{\"upstream\":\"feed\",\"seq\":{n},\"ts\":1,\"type\":\"text\",\"data\":{:?}}}\n",
                            message(n)
                        )
                        .as_bytes(),
                    );
                }
                let request = Request::post(uri.clone())
                    .header("content-type", "application/x-ndjson")
                    .body(Full::new(Bytes::from(body)))?;
                let response = client.request(request).await?;
                response.into_body().collect().await?;
            }
        }
    }
    Ok(())
}
