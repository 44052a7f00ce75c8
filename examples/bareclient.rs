//! The reference line for the benchmarks: a bare tokio-tungstenite client that connects,
//! counts data messages and payload bytes until the peer closes, and prints one JSON line.
//!
//! ```text
//! bareclient ws://127.0.0.1:PORT/ [--max-secs 120]
//! ```
//!
//! It uses the same frame limits wsbridge uses by default (16 MiB) and the same runtime
//! (multi-threaded tokio), and does nothing with a message but count it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: bareclient ws://127.0.0.1:PORT/ [--max-secs N]");
    let mut max_secs = 120u64;
    while let Some(a) = args.next() {
        if a == "--max-secs" {
            max_secs = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--max-secs N");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(max_secs), run(&url)).await });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("bareclient: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("bareclient: --max-secs reached");
            std::process::exit(1);
        }
    }
}

async fn run(url: &str) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let started = Instant::now();
    let mut messages = 0u64;
    let mut bytes = 0u64;
    while let Some(next) = ws.next().await {
        let next = match next {
            Ok(m) => m,
            Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            ) => break,
            Err(e) => return Err(e),
        };
        match next {
            Message::Text(t) => {
                messages += 1;
                bytes += t.len() as u64;
            }
            Message::Binary(b) => {
                messages += 1;
                bytes += b.len() as u64;
            }
            Message::Close(_) => {}
            _ => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"messages\":{messages},\"bytes\":{bytes},\"secs\":{secs:.6}}}");
    Ok(())
}
