//! `wsbridge connect URL`: the websocat-style pipe. Stdin lines become messages, messages
//! become stdout lines. It is the daemon's own upstream task (handshake, autoping, backoff)
//! with stdout as its only sink ([`stdout`]: written on the connection's thread where that
//! cannot block it) and stdin feeding its send queue ([`stdin`]: a thread of its own).

mod gather;
mod stdin;
mod stdout;

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Format, UpstreamConfig};
use crate::hub::{self, Outlet};
use crate::record::Encoding;
use crate::sink::SinkError;
use crate::upstream::{describe, RunMode, SessionEnd, Upstream, UpstreamExit, UpstreamStats};
use stdin::StdinReader;
use stdout::Stdout;

/// Batches between the connection and the stdout writer. The bytes bound the memory (a few
/// full batches of small messages, or one large message being written while the next one
/// waits); the count only keeps the channel bounded too and must not bind first: an echo's
/// replies come as batches of a few lines, and a small count would have the connection and
/// the writer hand over a few lines at a time.
const STDOUT_BATCHES: usize = 64;
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
    /// Send Close at stdin EOF (after `linger`); false (`-n`): read on until the peer closes.
    pub close_at_eof: bool,
    /// After our Close, how long to wait for the peer's.
    pub close_timeout: Duration,
    /// After stdin EOF, how long the peer must be quiet before our Close goes out.
    pub linger: Duration,
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
    let stdin = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => return Outcome::Failed(format!("cannot read stdin: {e}")),
    };
    match crate::sink::process_stdout() {
        Ok(stdout) => run_with(options, stdin, stdout, interrupt).await,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// [`run`] on any reader and stdout file.
pub async fn run_with<R>(
    options: ConnectOptions,
    stdin: R,
    stdout: std::fs::File,
    interrupt: CancellationToken,
) -> Outcome
where
    R: Read + Send + 'static,
{
    let url = options.upstream.display_url();
    let (queue_tx, queue_rx) = mpsc::channel(options.upstream.send_queue);
    let stop = interrupt.child_token();
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
    let writer = Stdout::choose(stdout);
    let (stdout_tx, stdout_rx) = hub::sink_input(STDOUT_BATCHES, STDOUT_BYTES);
    let sinks = if options.send_only {
        // Nothing is printed: without a sender the writer ends at once, and the pipe ends
        // with the connection alone.
        drop(stdout_tx);
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
        max_messages: options.max_messages,
        linger: options.linger,
    };
    let span = tracing::info_span!("connect", url = %url);
    let mut upstream_task = tokio::spawn(upstream.run().instrument(span));

    // The writer ends when the upstream task (holding the outlet) is gone.
    let mut writer_task = writer.spawn(stdout_rx, encoding);

    if !options.recv_only {
        let reader = StdinReader {
            queue: queue_tx,
            binary: options.binary,
            ndjson: options.ndjson,
            max_line: options.upstream.max_message_size,
            close_at_eof: options.close_at_eof,
        };
        if let Err(e) = reader.spawn(stdin) {
            return Outcome::Failed(format!("cannot start reading stdin: {e}"));
        }
    } else {
        drop(queue_tx);
    }

    // Either the connection ends (then the writer drains and ends), or stdout fails first
    // (`| head` closed it) and the connection is closed early. Once interrupted, a reader of
    // stdout that stopped reading is waited for until `cut_off`, no longer: the connection
    // waits for room in stdout's input, and the writer in write(2).
    let mut written = None;
    let mut cut_off = None;
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
            _ = interrupt.cancelled(), if cut_off.is_none() => {
                cut_off = Some(tokio::time::Instant::now() + 2 * options.close_timeout);
            }
            _ = sleep_until_some(cut_off) => {
                upstream_task.abort();
                return stalled_stdout(options.close_timeout);
            }
        }
    };
    let written = match written {
        Some(result) => result,
        None => tokio::select! {
            result = &mut writer_task => flatten(result),
            _ = sleep_until_some(cut_off) => return stalled_stdout(options.close_timeout),
        },
    };
    if let Err(e) = written {
        return stdout_outcome(e);
    }
    match exit {
        Ok(exit) => outcome(exit, &url),
        Err(e) => Outcome::Failed(format!("the connection task failed: {e}")),
    }
}

/// Waits until `deadline`, or for ever if there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Interrupted while stdout's reader had stopped reading: exit without what it did not take.
fn stalled_stdout(close_timeout: Duration) -> Outcome {
    Outcome::Failed(format!(
        "interrupted, and stdout did not take the rest of the output within {} (twice --shutdown-timeout): the program reading it has stopped reading; exiting without it",
        crate::duration::human(2 * close_timeout)
    ))
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
