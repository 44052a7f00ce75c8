//! An idle WebSocket server for `bench/run.sh`'s many-upstreams figure, bound to loopback.
//!
//! ```text
//! loadserver [--port P] [--report-open N] [--max-secs S]
//! ```
//!
//! Accepts any number of connections, completes the handshake and keeps each one open,
//! reading (and so answering Pings) until the client leaves. It sends no data: the daemon's
//! upstreams stay idle. Prints `LISTENING <port>` when ready and `OPEN <N> <unix_ms>` once N
//! connections are open at the same time (the wall clock, so the script can measure from the
//! daemon's start). Exits after `--max-secs`. The single-connection servers of the other
//! figures are the reference tools' `blaster` (../shared/reference-bench).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(about = "Idle WebSocket server for the wsbridge benchmarks (loopback only)")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Print `OPEN N <unix_ms>` once N connections are open at once.
    #[arg(long)]
    report_open: Option<u64>,
    /// Hard limit on the server's lifetime, in seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let serve = serve(&args);
        match tokio::time::timeout(Duration::from_secs(args.max_secs), serve).await {
            Ok(result) => result,
            Err(_) => {
                eprintln!("loadserver: --max-secs reached, exiting");
                Ok(())
            }
        }
    })
}

async fn serve(args: &Args) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], args.port).into())?;
    // A deep backlog: thousands of clients connect at once, and a full queue would cost
    // them a SYN retransmission (a second) each.
    let listener = socket.listen(4096)?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let open = Arc::new(AtomicU64::new(0));
    let report = args.report_open;
    // Idle peers read little: a small read buffer keeps ten thousand of them light.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("loadserver: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = open.clone();
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            if report == Some(now) {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                println!("OPEN {now} {ms}");
            }
            while let Some(Ok(_)) = ws.next().await {}
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
