//! `wsbridge replay FILE…`: serves recorded NDJSON (from a file sink or `connect --ndjson`,
//! plain or `.gz`) as a WebSocket server. Each upstream in the files is the path
//! `/<upstream>`; a client gets that upstream's text and binary messages with their recorded
//! spacing divided by `--speed` (0: as fast as the client reads), then Close 1000. So a
//! recorded feed can drive a legacy tool, a test or a benchmark without the network.
//!
//! [`source`] reads the files (each client streams them again, so memory does not grow with
//! their size); [`client`] paces and sends; this module accepts and routes.

mod client;
mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Clients served at once; more are answered 503 (each has a reader thread).
const MAX_CLIENTS: usize = 256;
/// Messages read ahead of a client: bounds what a slow client costs.
const READ_AHEAD: usize = 1024;

/// What `wsbridge replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The recording, played in this order.
    pub files: Vec<PathBuf>,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Recorded spacing is divided by this; 0 sends without waiting.
    pub speed: f64,
    /// Start over at the end instead of closing.
    pub looping: bool,
}

/// Why replaying could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file cannot be read (or is not valid gzip).
    #[error("cannot read {}: {source}; is it NDJSON, or gzip when it ends in .gz?", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No data record in any file.
    #[error("no text or binary record in {files}: replay needs NDJSON records as a file sink with format = \"ndjson\" or `connect --ndjson` writes them")]
    Empty {
        /// The files, for the message.
        files: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {error}; pick another address with --listen (port 0 picks a free one)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
}

/// The server, listening: [`Server::addr`] tells where, [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    options: ReplayOptions,
    upstreams: Arc<Vec<String>>,
    /// Data messages of each upstream, in the same order.
    counts: Vec<u64>,
}

impl Server {
    /// Reads the files once (which upstreams they hold) and binds the listener.
    pub async fn bind(options: ReplayOptions) -> Result<Server, ReplayError> {
        let files = options.files.clone();
        let index = tokio::task::spawn_blocking(move || source::scan(&files))
            .await
            .unwrap_or_else(|e| {
                Err(ReplayError::Read {
                    path: PathBuf::from("(scan)"),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        if index.upstreams.is_empty() {
            let files = options
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ReplayError::Empty { files });
        }
        if index.skipped > 0 {
            warn!(
                lines = index.skipped,
                "lines that are not NDJSON records are skipped"
            );
        }
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|error| ReplayError::Listen {
                    addr: options.listen,
                    error,
                })?;
        Ok(Server {
            listener,
            options,
            upstreams: Arc::new(index.upstreams.keys().cloned().collect()),
            counts: index.upstreams.into_values().collect(),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The upstreams it serves (paths without the leading `/`), with their data messages.
    pub fn upstreams(&self) -> impl Iterator<Item = (&str, u64)> {
        self.upstreams
            .iter()
            .map(String::as_str)
            .zip(self.counts.iter().copied())
    }

    /// Serves clients until `shutdown`; their replays end with Close 1001 then.
    pub async fn run(self, shutdown: CancellationToken) {
        let files: Arc<[PathBuf]> = self.options.files.clone().into();
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let mut clients = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = clients.join_next(), if !clients.is_empty() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accepting a client failed; pausing briefly");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let slot = slots.clone().try_acquire_owned().ok();
            let upstreams = self.upstreams.clone();
            let files = files.clone();
            let (speed, looping) = (self.options.speed, self.options.looping);
            let shutdown = shutdown.clone();
            clients.spawn(async move {
                let mut chosen = None;
                let full = slot.is_none();
                // tungstenite's callback signature, not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback = |request: &Request, response: Response| {
                    route(request, response, &upstreams, full, &mut chosen)
                };
                let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        debug!(%peer, error = %e, "handshake refused or failed");
                        return;
                    }
                };
                let Some(upstream) = chosen else { return };
                let (tx, rx) = mpsc::channel(READ_AHEAD);
                let name = upstream.clone();
                // A thread of its own: reading and gunzipping block.
                std::thread::spawn(move || source::play(&files, &name, looping, tx));
                let who = format!("{peer} /{upstream}");
                debug!(client = %who, "replaying");
                client::serve(ws, rx, speed, shutdown, who).await;
                drop(slot);
            });
        }
        // Each client sends its Close 1001 and waits briefly for the answer.
        while clients.join_next().await.is_some() {}
    }
}

/// Picks the upstream named by the request's path, or answers 404 (503 when full). The
/// `Err` type is tungstenite's callback signature, not ours to shrink.
#[allow(clippy::result_large_err)]
fn route(
    request: &Request,
    response: Response,
    upstreams: &[String],
    full: bool,
    chosen: &mut Option<String>,
) -> Result<Response, ErrorResponse> {
    let name = request.uri().path().trim_start_matches('/');
    let refuse = |status: StatusCode, body: String| {
        let mut refusal = ErrorResponse::new(Some(body));
        *refusal.status_mut() = status;
        Err(refusal)
    };
    if !upstreams.iter().any(|u| u == name) {
        let paths: Vec<String> = upstreams.iter().map(|u| format!("/{u}")).collect();
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no upstream {name:?} in the recording; its paths are: {}\n",
                paths.join(", ")
            ),
        );
    }
    if full {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_CLIENTS} clients are being served; try again later\n"),
        );
    }
    *chosen = Some(name.to_string());
    Ok(response)
}
