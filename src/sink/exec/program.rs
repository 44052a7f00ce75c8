//! The exec sink's programs, one at a time: each started in a process group of its own
//! (`WSBRIDGE_SINK` set, no shell), its stdin handed to the feeder, its stdout (inbound
//! lines, or logged) and stderr (logged) read; restarted after a backoff when it exits.
//!
//! However a program ends, its whole process group is signalled: SIGTERM, a grace for it
//! and its output to close, then SIGKILL, so a `sh -c "tool | tool2"` or a background child
//! does not linger. Only then is the feeder told it is gone, so that what the pipe still
//! holds is final when it is counted.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::FramedRead;
use tracing::{error, info, warn, Instrument};

use super::feed::Stdin;
use crate::backoff::Backoff;
use crate::config::ReconnectPolicy;
use crate::duration::human;
use crate::lines::{BoundedLines, Line};
use crate::sink::inbound::Router;
use crate::throttle::Throttled;

/// How long a program's group gets after SIGTERM before SIGKILL, and a program that closed
/// its stdin gets to exit by itself.
const GRACE: Duration = Duration::from_secs(1);
/// The longest stderr line logged whole.
const MAX_STDERR_LINE: usize = 64 * 1024;

/// Starts, watches and restarts the sink's programs.
pub struct Supervisor {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The sink's name, for `WSBRIDGE_SINK`.
    pub name: String,
    /// The restart backoff.
    pub policy: ReconnectPolicy,
    /// Where inbound lines from the program's stdout go.
    pub router: Router,
    /// Each program's stdin, to the feeder.
    pub programs: mpsc::Sender<Stdin>,
    /// Set when the sink stops: no more restarts, and the running program has until then
    /// to exit after its stdin closes.
    pub stop: watch::Receiver<Option<Instant>>,
    /// How long after that deadline its group gets SIGKILL.
    pub kill_after: Duration,
}

/// One run of the program.
struct Running {
    child: Child,
    pid: u32,
    started: Instant,
    /// Read its stdout and stderr until they close.
    readers: [JoinHandle<()>; 2],
    /// Tells the feeder the program is gone; `None` once told.
    gone: Option<oneshot::Sender<()>>,
    /// The feeder saying a write failed.
    stopped_reading: oneshot::Receiver<io::Error>,
}

/// What ended the program.
enum Ended {
    Exited,
    StoppedReading(io::Error),
    Stopping(Instant),
}

impl Supervisor {
    /// Runs programs until the sink stops.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.policy.clone());
        while self.deadline().is_none() {
            let delay = match start(&self.command, &self.name, &self.router) {
                Ok((running, stdin)) => {
                    let pid = running.pid;
                    info!(pid, "started {:?}", self.command);
                    if self.programs.send(stdin).await.is_err() {
                        return;
                    }
                    let Some((ran, status)) = self.watch(running).await else {
                        return;
                    };
                    if ran >= self.policy.reset_after {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay().unwrap_or(self.policy.max);
                    warn!(pid, %status, ran = %human(ran), restart_in = %human(delay), "the program exited; restarting it");
                    delay
                }
                Err(e) => {
                    let delay = backoff.next_delay().unwrap_or(self.policy.max);
                    error!(error = %e, retry_in = %human(delay), "cannot start {:?}; check `command` (the program must exist and be executable)", self.command);
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.wait_for(Option::is_some) => return,
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self.stop.borrow()
    }

    /// Watches the program until it ends; its group is gone then. How long it ran and its
    /// exit status, or `None` if the sink is stopping.
    async fn watch(&mut self, mut running: Running) -> Option<(Duration, String)> {
        let ended = tokio::select! {
            biased;
            _ = running.child.wait() => Ended::Exited,
            Ok(e) = &mut running.stopped_reading => Ended::StoppedReading(e),
            deadline = self.stop.wait_for(Option::is_some) => {
                let deadline = deadline.ok().and_then(|d| *d).unwrap_or_else(Instant::now);
                Ended::Stopping(deadline)
            }
        };
        let ran = running.started.elapsed();
        let status = match ended {
            Ended::Exited => {
                let now = Instant::now();
                running.end(now, now + GRACE).await
            }
            Ended::StoppedReading(e) => {
                let term_at = Instant::now() + GRACE;
                if timeout_at(term_at, running.child.wait()).await.is_err() {
                    warn!(pid = running.pid, error = %e, "the program closed its stdin but runs on; stopping it so that it restarts");
                }
                running.end(term_at, term_at + GRACE).await
            }
            Ended::Stopping(deadline) => {
                if timeout_at(deadline, running.child.wait()).await.is_err() {
                    warn!(
                        pid = running.pid,
                        "the program did not exit after its stdin closed; killing it (SIGTERM to its process group, then SIGKILL)"
                    );
                }
                let status = running.end(deadline, deadline + self.kill_after).await;
                info!(pid = running.pid, %status, "the program exited");
                return None;
            }
        };
        Some((ran, status))
    }
}

/// Starts the program; its stdin goes to the feeder.
fn start(command: &[String], name: &str, router: &Router) -> io::Result<(Running, Stdin)> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::other("the command is empty"))?;
    let mut child = Command::new(program)
        .args(args)
        .env("WSBRIDGE_SINK", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: a terminal's Ctrl-C reaches only wsbridge, and the whole
        // group can be signalled.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let (Some(pipe), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("the program's pipes are missing"));
    };
    let stdout = tokio::spawn(read_stdout(stdout, router.clone(), pid).in_current_span());
    let stderr = tokio::spawn(read_stderr(stderr, pid).in_current_span());
    let (gone, gone_rx) = oneshot::channel();
    let (stopped_tx, stopped_reading) = oneshot::channel();
    let running = Running {
        child,
        pid,
        started: Instant::now(),
        readers: [stdout, stderr],
        gone: Some(gone),
        stopped_reading,
    };
    let stdin = Stdin {
        pipe,
        gone: gone_rx,
        stopped_reading: stopped_tx,
    };
    Ok((running, stdin))
}

impl Running {
    /// Ends the program's process group: SIGTERM at `term_at` (at once if the program has
    /// exited), its output read until `kill_at`, SIGKILL to what is left; the program
    /// waited for (no zombie), then the feeder told. Its exit status, for the log.
    async fn end(&mut self, term_at: Instant, kill_at: Instant) -> String {
        let status = timeout_at(term_at, self.child.wait()).await.ok();
        self.signal(Signal::TERM);
        let status = match status {
            Some(status) => status,
            None => match timeout_at(kill_at, self.child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    self.signal(Signal::KILL);
                    self.child.wait().await
                }
            },
        };
        for reader in &mut self.readers {
            if timeout_at(kill_at, &mut *reader).await.is_err() {
                break;
            }
        }
        self.signal(Signal::KILL);
        for reader in &mut self.readers {
            if reader.is_finished() {
                continue;
            }
            // Only a process that left the group can still hold them open.
            if timeout(GRACE, &mut *reader).await.is_err() {
                reader.abort();
                let _ = reader.await;
            }
        }
        if let Some(gone) = self.gone.take() {
            let _ = gone.send(());
        }
        status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string())
    }

    /// Signals the program's process group (nothing if it is empty by now).
    fn signal(&self, signal: Signal) {
        let pgid = i32::try_from(self.pid).ok().and_then(Pid::from_raw);
        if let Some(pgid) = pgid {
            let _ = kill_process_group(pgid, signal);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The sink was aborted before the program ended: nothing of it may outlive us.
        if self.gone.is_some() {
            self.signal(Signal::KILL);
        }
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// The program's stdout: inbound lines sent upstream (`inbound = true`), else logged.
async fn read_stdout(stdout: impl AsyncRead + Unpin, router: Router, pid: u32) {
    let mut lines = FramedRead::new(stdout, BoundedLines::new(router.max_line));
    let mut refused = Throttled::default();
    while let Some(Ok(line)) = lines.next().await {
        let text = match line {
            Line::Text(text) => text,
            Line::TooLong => {
                warn!(
                    pid,
                    max = router.max_line,
                    "a line of the program's stdout is too long; discarded"
                );
                continue;
            }
            Line::NotUtf8 => {
                warn!(
                    pid,
                    "a line of the program's stdout is not UTF-8; discarded"
                );
                continue;
            }
        };
        if !router.config.inbound {
            info!(pid, stdout = %text.as_str(), "program output");
            continue;
        }
        if let Some(reply) = router.route(&text) {
            if let Some(count) = refused.due() {
                let reply = String::from_utf8_lossy(&reply);
                warn!(pid, count, reply = %reply.trim_end(), "a line of the program's stdout was not sent upstream");
            }
        }
    }
}

/// The program's stderr, logged line by line.
async fn read_stderr(stderr: impl AsyncRead + Unpin, pid: u32) {
    let mut lines = FramedRead::new(stderr, BoundedLines::new(MAX_STDERR_LINE));
    while let Some(Ok(line)) = lines.next().await {
        match line {
            Line::Text(text) => info!(pid, stderr = %text.as_str(), "program stderr"),
            Line::TooLong => info!(pid, "program stderr: a line longer than 64 KiB, discarded"),
            Line::NotUtf8 => info!(pid, "program stderr: a line that is not UTF-8, discarded"),
        }
    }
}
