//! Drives the Autobahn|Testsuite fuzzing server through wsbridge's own upstream task: the
//! same handshake, session loop, keepalive and send queue the daemon uses. Every data
//! event the task delivers is sent back through its send queue (an echo).
//!
//! Usage: `autobahn_client ws://127.0.0.1:PORT [AGENT]` (run by `tests/autobahn/run.sh`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use url::Url;
use wsbridge::config::UpstreamConfig;
use wsbridge::hub::Outlet;
use wsbridge::record::EventKind;
use wsbridge::upstream::{RunMode, Upstream, UpstreamExit, UpstreamStats};

/// One connection through the upstream task; returns every text message received, after
/// echoing each data message back when `echo` is set.
async fn session(url: Url, echo: bool) -> Result<Vec<String>, String> {
    let mut config = UpstreamConfig::new("autobahn", url);
    // Cases go up to 16 MiB messages; the default limit is exactly that.
    config.ping_interval = None;
    config.connect_timeout = Duration::from_secs(30);
    let (queue, queue_rx) = mpsc::channel(1024);
    let (events_tx, mut events) = wsbridge::hub::sink_input(1024, 64 << 20);
    let upstream = Upstream {
        config: Arc::new(config),
        stats: Arc::new(UpstreamStats::default()),
        outlet: Outlet::fixed(vec![events_tx]),
        queue: queue_rx,
        shutdown: CancellationToken::new(),
        goodbye: CloseCode::Normal,
        mode: RunMode::Once,
        close_timeout: Duration::from_secs(5),
        max_messages: None,
        linger: Duration::ZERO,
    };
    let task = tokio::spawn(upstream.run());
    let mut texts = Vec::new();
    while let Some(delivery) = events.recv().await {
        for event in &delivery.batch.events {
            let reply = match &event.kind {
                EventKind::Text { data, .. } => {
                    let text = data.to_str().into_owned();
                    texts.push(text.clone());
                    Message::text(text)
                }
                EventKind::Binary { data, .. } => Message::Binary(data.clone()),
                _ => continue,
            };
            if echo {
                // The task may already have ended (a case that fails the connection).
                let _ = queue.send(reply).await;
            }
        }
    }
    match task.await.map_err(|e| e.to_string())? {
        UpstreamExit::ConnectFailed(e) => Err(e.to_string()),
        _ => Ok(texts),
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .ok_or("usage: autobahn_client ws://HOST:PORT [AGENT]")?;
    let agent = args.next().unwrap_or_else(|| "wsbridge".into());
    let url = |path: &str| Url::parse(&format!("{base}{path}")).map_err(|e| e.to_string());

    let count: u32 = session(url("/getCaseCount")?, false)
        .await?
        .first()
        .and_then(|n| n.trim().parse().ok())
        .ok_or("the server sent no case count")?;
    eprintln!("autobahn_client: {count} cases");
    for case in 1..=count {
        if let Err(e) = session(url(&format!("/runCase?case={case}&agent={agent}"))?, true).await {
            eprintln!("autobahn_client: case {case}: {e}");
        }
    }
    session(url(&format!("/updateReports?agent={agent}"))?, false).await?;
    Ok(())
}
