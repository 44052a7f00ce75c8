//! `wsbridge demo`: an embedded WebSocket server (a random loopback port unless `--listen`
//! says otherwise) that streams sample ticks, bridged to stdout by the real supervisor, so a
//! new user sees the product work at once. Other clients (`wsbridge run -c config/demo.toml`
//! with `--listen 127.0.0.1:8765`) may connect to it too.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::config::sink::{Settings, SinkType};
use crate::config::{Config, DaemonConfig, Format, OnSlow, SinkConfig, UpstreamConfig};
use crate::sink::stdout::settings::{Stdout, StdoutSettings};
use crate::supervisor::{Control, Supervisor};

/// The demo's options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the embedded server listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Stop after this many ticks; `None` = until Ctrl-C.
    pub count: Option<u64>,
    /// Time between ticks; anything shorter than [`MIN_INTERVAL`] is taken as that.
    pub interval: Duration,
}

/// The shortest time between ticks: a zero period would make the tick timer spin.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded server cannot listen.
    #[error("cannot listen on {addr} for the demo server: {error}; pick another address with --listen, or leave it out for a free loopback port")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error (part of the message, not a source, so it is said once).
        error: std::io::Error,
    },
    /// The bridge could not start.
    #[error(transparent)]
    Start(#[from] crate::supervisor::StartError),
    /// The bridge failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

/// Starts the demo server and bridges it to stdout until `controls` says stop or `count`
/// ticks were sent.
pub async fn run(options: DemoOptions, controls: mpsc::Receiver<Control>) -> Result<(), DemoError> {
    let listen_error = |error| DemoError::Listen {
        addr: options.listen,
        error,
    };
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let (finished_tx, mut finished) = mpsc::channel::<()>(1);
    tokio::spawn(serve(listener, options.clone(), finished_tx));

    let supervisor = Supervisor::start(config(addr)).await?;
    // Whichever comes first: the user's Ctrl-C or the last tick.
    let (forward_tx, forward) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut controls = controls;
        let control = tokio::select! {
            c = controls.recv() => c.unwrap_or(Control::Shutdown),
            _ = finished.recv() => Control::Shutdown,
        };
        let _ = forward_tx.send(control).await;
    });
    supervisor
        .run(forward, || Ok(config(addr)))
        .await
        .map_err(DemoError::from)
}

fn config(addr: SocketAddr) -> Config {
    let url = Url::parse(&format!("ws://{addr}/ticks"))
        .unwrap_or_else(|_| unreachable!("a socket address makes a valid URL"));
    let mut upstream = UpstreamConfig::new("demo", url);
    upstream.on_connect = vec![r#"{"op":"subscribe","channel":"ticks"}"#.into()];
    upstream.subprotocols = vec!["demo.v1".into()];
    Config {
        daemon: DaemonConfig {
            shutdown_timeout: Duration::from_secs(2),
            ..DaemonConfig::default()
        },
        metrics: None,
        upstreams: vec![upstream],
        sinks: vec![SinkConfig {
            sink_type: Stdout::NAME,
            takes: Stdout::SHARED,
            settings: Settings(std::sync::Arc::new(StdoutSettings)),
            filter: None,
            upstreams: None,
            format: Format::Ndjson,
            events: true,
            parse_json: false,
            buffer: 4096,
            buffer_bytes: crate::config::DEFAULT_BUFFER_BYTES,
            on_slow: OnSlow::Block,
            max_block: None,
            inbound: false,
            listener: Default::default(),
        }],
        cluster: None,
    }
}

/// Accepts the `demo.v1` subprotocol when offered. The `Err` type is tungstenite's callback
/// signature, not ours to shrink.
#[allow(clippy::result_large_err)]
fn choose_protocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|p| p.to_str().ok())
        .is_some_and(|p| p.split(',').any(|p| p.trim() == "demo.v1"));
    if offered {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("demo.v1"),
        );
    }
    Ok(response)
}

/// The embedded upstream: answers the subscribe message, then sends ticks. After `count`
/// ticks it says so on `finished` and the bridge closes the connection as it stops: that
/// `close` record is the bridge's own, without a `retry_in_ms` (a Close from the server
/// would read as an upstream that goes away and is reconnected to).
async fn serve(listener: TcpListener, options: DemoOptions, finished: mpsc::Sender<()>) {
    while let Ok((stream, _)) = listener.accept().await {
        let options = options.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, choose_protocol).await
            else {
                return;
            };
            if let Some(Ok(Message::Text(_))) = ws.next().await {
                let _ = ws
                    .send(Message::text(r#"{"event":"subscribed","channel":"ticks"}"#))
                    .await;
            }
            let symbols = ["BTC-USD", "ETH-USD", "SOL-USD"];
            let mut price = [64_250.0_f64, 3_120.5, 142.25];
            let mut tick = tokio::time::interval(options.interval.max(MIN_INTERVAL));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    incoming = ws.next() => match incoming {
                        Some(Ok(_)) => continue,
                        _ => return,
                    },
                }
                if options.count.is_some_and(|c| n >= c) {
                    let _ = finished.send(()).await;
                    // Reading answers the bridge's Close; the ticks sent before it arrive first.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                let i = (n % symbols.len() as u64) as usize;
                // A deterministic wobble keeps the demo reproducible.
                let step = ((n * 7919) % 200) as f64 / 100.0 - 1.0;
                price[i] = (price[i] * (1.0 + step / 1000.0) * 100.0).round() / 100.0;
                let side = if n % 2 == 0 { "buy" } else { "sell" };
                let size = ((n * 37) % 90 + 10) as f64 / 100.0;
                let tick_json = format!(
                    r#"{{"symbol":"{}","price":{},"size":{size},"side":"{side}","trade_id":{}}}"#,
                    symbols[i],
                    price[i],
                    n + 1
                );
                n += 1;
                if ws.send(Message::text(tick_json)).await.is_err() {
                    return;
                }
            }
        });
    }
}
