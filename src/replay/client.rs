//! One client of `wsbridge replay`: sends the messages its reader hands over at their
//! recorded offsets divided by `--speed` (or at once with speed 0), while always reading the
//! client's side (its Close, Pings whose Pongs go out with the next write), then Close 1000.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::source::Item;

/// How long the client has to answer our Close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a client's replay ended.
enum End {
    /// The recording is over.
    Done,
    /// The server is stopping.
    Shutdown,
    /// Reading the files failed.
    Failed(String),
    /// The client closed or the connection broke: nothing more to send.
    Left,
}

/// Serves one client: `items` at `speed` until they end, the client leaves, or `shutdown`.
pub async fn serve(
    mut ws: WebSocketStream<TcpStream>,
    mut items: mpsc::Receiver<Item>,
    speed: f64,
    shutdown: CancellationToken,
    who: String,
) {
    let end = send_all(&mut ws, &mut items, speed, &shutdown).await;
    // Stop the reader thread before waiting on the client.
    drop(items);
    let frame = match &end {
        End::Done => Some((CloseCode::Normal, "end of recording".to_string())),
        End::Shutdown => Some((CloseCode::Away, "server shutting down".to_string())),
        End::Failed(reason) => {
            warn!(client = %who, "cannot read the recording: {reason}");
            Some((CloseCode::Error, "cannot read the recording".to_string()))
        }
        End::Left => None,
    };
    if let Some((code, reason)) = frame {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        if ws.send(close).await.is_ok() {
            // Its Close answers ours; then the connection is done.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
    }
    debug!(client = %who, "replay client done");
}

async fn send_all(
    ws: &mut WebSocketStream<TcpStream>,
    items: &mut mpsc::Receiver<Item>,
    speed: f64,
    shutdown: &CancellationToken,
) -> End {
    // When the current lap's first message went out.
    let mut lap_start: Option<Instant> = None;
    // A message waiting for its time.
    let mut due: Option<(Instant, Message)> = None;
    loop {
        let wait = async {
            match &due {
                Some((at, _)) => tokio::time::sleep_until(*at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Shutdown,
            incoming = ws.next() => match incoming {
                // Pings are answered by tungstenite with the next write or flush.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Left,
                Some(Ok(_)) => {
                    if ws.flush().await.is_err() {
                        return End::Left;
                    }
                }
            },
            _ = wait, if due.is_some() => {
                if let Some((_, message)) = due.take() {
                    if ws.send(message).await.is_err() {
                        return End::Left;
                    }
                }
            }
            item = items.recv(), if due.is_none() => match item {
                None => {
                    return match ws.flush().await {
                        Ok(()) => End::Done,
                        Err(_) => End::Left,
                    };
                }
                Some(Item::Failed(reason)) => return End::Failed(reason),
                Some(Item::Lap) => lap_start = None,
                Some(Item::Message { offset_ms, message }) => {
                    let now = Instant::now();
                    let start = *lap_start.get_or_insert(now);
                    let at = if speed > 0.0 {
                        start + Duration::from_secs_f64(offset_ms as f64 / 1000.0 / speed)
                    } else {
                        now
                    };
                    if at > now {
                        // What was written goes out before the wait.
                        if ws.flush().await.is_err() {
                            return End::Left;
                        }
                        due = Some((at, message));
                    } else {
                        // Batched into tungstenite's write buffer; flushed when the
                        // reader has nothing ready.
                        if ws.feed(message).await.is_err() {
                            return End::Left;
                        }
                        if items.is_empty() && ws.flush().await.is_err() {
                            return End::Left;
                        }
                    }
                }
            },
        }
    }
}
