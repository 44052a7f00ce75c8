//! `wsbridge connect URL`: the websocat-style pipe. Stdin lines become messages, messages
//! become stdout lines. It is the daemon's own upstream task (handshake, autoping, backoff)
//! with stdout as its only sink and stdin feeding its send queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use crate::config::{Format, UpstreamConfig};
use crate::hub::{self, Outlet};
use crate::lines::{BoundedLines, Line};
use crate::record::{parse_inbound, Encoding};
use crate::sink::{SinkError, SinkStats, StdoutSink};
use crate::upstream::{describe, RunMode, SessionEnd, Upstream, UpstreamExit, UpstreamStats};

/// Batches between the connection and the stdout writer, and their bytes: a few batches of
/// small messages, or one large message being written while the next one waits.
const STDOUT_BATCHES: usize = 4;
/// See [`STDOUT_BATCHES`].
const STDOUT_BYTES: usize = 1 << 20;

/// What the user asked for, resolved.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The connection (URL, headers, keepalive, limits, reconnect policy).
    pub upstream: UpstreamConfig,
    /// Keep reconnecting instead of ending with the first connection.
    pub reconnect: bool,
    /// Stdin is read as binary chunks, and binary messages go to stdout as bytes.
    pub binary: bool,
    /// Stdout gets NDJSON records; stdin lines are parsed as inbound records.
    pub ndjson: bool,
    /// Stop after this many messages.
    pub max_messages: Option<u64>,
    /// Do not read stdin; stay until the peer closes.
    pub recv_only: bool,
    /// Print nothing.
    pub send_only: bool,
    /// After our Close, how long to wait for the peer's.
    pub close_timeout: Duration,
}

/// How the pipe ended, mapped to an exit code by the caller.
#[derive(Debug)]
pub enum Outcome {
    /// Stdin EOF, `--max-messages`, Ctrl-C, a 1000/1001 Close from the peer, or stdout closed
    /// by its reader: exit 0.
    Clean,
    /// Exit 1 with this one-line reason.
    Failed(String),
}

/// Runs the pipe on the process's stdin and stdout until it ends or `interrupt` is cancelled.
pub async fn run(options: ConnectOptions, interrupt: CancellationToken) -> Outcome {
    match crate::sink::process_stdout() {
        Ok(stdout) => run_with(options, tokio::io::stdin(), stdout, interrupt).await,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// [`run`] on any reader and writer.
pub async fn run_with<R, W>(
    options: ConnectOptions,
    stdin: R,
    stdout: W,
    interrupt: CancellationToken,
) -> Outcome
where
    R: AsyncRead + Unpin + Send + 'static,
    W: std::io::Write + Send + 'static,
{
    let url = options.upstream.display_url();
    let (queue_tx, queue_rx) = mpsc::channel(options.upstream.send_queue);
    let (stdout_tx, stdout_rx) = hub::sink_input(STDOUT_BATCHES, STDOUT_BYTES);
    let stop = interrupt.child_token();
    let sinks = if options.send_only {
        Vec::new()
    } else {
        vec![stdout_tx]
    };
    let upstream = Upstream {
        config: Arc::new(options.upstream.clone()),
        stats: Arc::new(UpstreamStats::default()),
        outlet: Outlet::fixed(sinks),
        queue: queue_rx,
        shutdown: stop.clone(),
        goodbye: CloseCode::Normal,
        mode: if options.reconnect {
            RunMode::Reconnect
        } else {
            RunMode::Once
        },
        close_timeout: options.close_timeout,
    };
    let span = tracing::info_span!("connect", url = %url);
    let mut upstream_task = tokio::spawn(upstream.run().instrument(span));

    let encoding = Encoding {
        format: if options.ndjson {
            Format::Ndjson
        } else {
            Format::Raw
        },
        events: true,
        parse_json: false,
        binary_bytes: options.binary && !options.ndjson,
    };
    let mut writer = StdoutSink::new(stdout, encoding);
    if let Some(max) = options.max_messages {
        writer = writer.with_limit(max, stop.clone());
    }
    // The writer ends when the upstream task (holding the outlet) is gone.
    let mut writer_task = tokio::spawn(writer.run(
        stdout_rx,
        CancellationToken::new(),
        Arc::new(SinkStats::default()),
    ));

    if !options.recv_only {
        let reader = StdinReader {
            queue: queue_tx,
            binary: options.binary,
            ndjson: options.ndjson,
            max_line: options.upstream.max_message_size,
        };
        tokio::spawn(reader.run(stdin));
    } else {
        drop(queue_tx);
    }

    // Either the connection ends (then the writer drains and ends), or stdout fails first
    // (`| head` closed it) and the connection is closed early.
    let mut written = None;
    let exit = loop {
        tokio::select! {
            exit = &mut upstream_task => break exit,
            result = &mut writer_task, if written.is_none() => match flatten(result) {
                Ok(()) => written = Some(Ok(())),
                Err(e) => {
                    stop.cancel();
                    let _ = tokio::time::timeout(options.close_timeout, &mut upstream_task).await;
                    return stdout_outcome(e);
                }
            },
        }
    };
    let written = match written {
        Some(result) => result,
        None => flatten(writer_task.await),
    };
    if let Err(e) = written {
        return stdout_outcome(e);
    }
    match exit {
        Ok(exit) => outcome(exit, &url),
        Err(e) => Outcome::Failed(format!("the connection task failed: {e}")),
    }
}

fn flatten(result: Result<Result<(), SinkError>, tokio::task::JoinError>) -> Result<(), SinkError> {
    result.unwrap_or_else(|e| Err(SinkError::Stdout(std::io::Error::other(e.to_string()))))
}

/// A closed stdout (`| head`) is a clean end; any other write error is not.
fn stdout_outcome(error: SinkError) -> Outcome {
    match error {
        SinkError::BrokenPipe => Outcome::Clean,
        other => Outcome::Failed(other.to_string()),
    }
}

fn outcome(exit: UpstreamExit, url: &str) -> Outcome {
    match exit {
        UpstreamExit::Shutdown => Outcome::Clean,
        UpstreamExit::Ended(SessionEnd::Closed { .. }) => Outcome::Clean,
        UpstreamExit::Ended(SessionEnd::PeerClosed {
            code: 1000 | 1001, ..
        }) => Outcome::Clean,
        UpstreamExit::Ended(end) => Outcome::Failed(format!("{url}: {}", describe(&end))),
        UpstreamExit::ConnectFailed(e) => Outcome::Failed(format!("cannot connect to {url}: {e}")),
        UpstreamExit::GaveUp => Outcome::Failed(format!("{url}: gave up reconnecting")),
    }
}

/// Feeds stdin into the upstream's send queue; at EOF, queues a Close (1000) behind the rest.
struct StdinReader {
    queue: mpsc::Sender<Message>,
    binary: bool,
    ndjson: bool,
    max_line: usize,
}

impl StdinReader {
    async fn run<R: AsyncRead + Unpin>(self, mut stdin: R) {
        if self.binary && !self.ndjson {
            // One message per read chunk, as websocat's --binary does.
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                buf.reserve(64 * 1024);
                match stdin.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {
                        let chunk = buf.split().freeze();
                        if self.queue.send(Message::Binary(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read stdin");
                        break;
                    }
                }
            }
        } else {
            let mut lines = FramedRead::new(stdin, BoundedLines::new(self.max_line));
            let mut number = 0u64;
            while let Some(line) = lines.next().await {
                number += 1;
                let message = match line {
                    Ok(Line::Text(text)) if self.ndjson => match parse_inbound(&text) {
                        Ok(inbound) => inbound.message,
                        Err(e) => {
                            warn!("stdin line {number} skipped: {e}");
                            continue;
                        }
                    },
                    Ok(Line::Text(text)) => Message::text(text),
                    Ok(Line::TooLong) => {
                        warn!(
                            "stdin line {number} skipped: longer than max_message_size ({} bytes)",
                            self.max_line
                        );
                        continue;
                    }
                    Ok(Line::NotUtf8) => {
                        warn!(
                            "stdin line {number} skipped: not valid UTF-8 (use --binary for bytes)"
                        );
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read stdin");
                        break;
                    }
                };
                if self.queue.send(message).await.is_err() {
                    return;
                }
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.queue.send(Message::Close(Some(close))).await;
    }
}
