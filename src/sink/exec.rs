//! The exec sink: a program kept running with records on its stdin, for tools that read
//! stdin and will never speak WebSocket.
//!
//! One task supervises the program: it starts it (`command`, no shell, `WSBRIDGE_SINK` set
//! to the sink's name, in a process group of its own so a terminal's Ctrl-C reaches only
//! wsbridge), feeds its stdin through the shared [`Driver`] and [`pump`] under `on_slow`
//! (`block`: backpressure; `drop`: counted), and reads its stdout (inbound lines, sent
//! upstream through the sinks' [`Router`], or logged) and its stderr (logged line by line).
//! When the program exits, its status is logged and it is started again after a backoff
//! that grows while it keeps exiting and resets once it has run for `restart.max`.
//!
//! Every program is waited for (no zombie) and its pipes are closed with it (no leaked fd).
//! At the end its stdin is closed after what is queued is written; it gets 40 % of
//! `shutdown_timeout` to exit (half is the upstreams' Close, the rest a margin), then SIGKILL.

pub mod settings;

pub use settings::{ExecSettings, RestartPolicy};

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::FramedRead;
use tracing::{error, info, warn, Instrument};

use super::client::SocketWriter;
use super::inbound::Router;
use super::queue::Bounds;
use super::writer::pump;
use super::{Driver, SinkContext};
use crate::backoff::Backoff;
use crate::config::{Format, OnSlow, ReconnectPolicy};
use crate::duration::human;
use crate::hub::Delivery;
use crate::lines::{BoundedLines, Line};
use crate::throttle::Throttled;

/// How long the program's output is still read after it exited (a child of its own may
/// hold the pipes open), and how long a program that closed its stdin gets to exit.
const GRACE: Duration = Duration::from_secs(1);
/// The longest stderr line logged whole.
const MAX_STDERR_LINE: usize = 64 * 1024;

/// One run of the program.
struct Running {
    child: Child,
    pid: u32,
    started: Instant,
    /// Writes its stdin; ends when the program stops reading or the queue closes.
    stdin: Option<JoinHandle<io::Result<()>>>,
    /// Read its stdout and stderr until they close.
    readers: [JoinHandle<()>; 2],
}

/// What happened to the running program.
enum Happened {
    Exited(io::Result<ExitStatus>),
    StoppedReading,
}

/// Runs an exec sink until its input closes or it is cancelled.
pub async fn run(mut ctx: SinkContext) {
    let Some(ExecSettings { command, restart }) = ctx.config.settings.get::<ExecSettings>() else {
        return;
    };
    let command = command.clone();
    let policy = ReconnectPolicy {
        initial: restart.initial,
        max: restart.max,
        multiplier: 2.0,
        jitter: 0.2,
        max_attempts: 0,
        reset_after: restart.max,
    };
    let name = ctx.config.name();
    let mut driver = Driver::new(
        name.clone(),
        ctx.encoder(),
        ctx.config.on_slow,
        Bounds::of(&ctx.config),
        ctx.stats.clone(),
    )
    .with_max_block(ctx.config.max_block);
    let router = Router {
        config: ctx.config.clone(),
        directory: ctx.directory.clone(),
        max_line: ctx.max_line,
    };
    let mut backoff = Backoff::new(policy.clone());
    let mut program: Option<Running> = None;
    let mut start_at = Some(Instant::now());
    loop {
        if program.is_none() && start_at.is_some_and(|at| at <= Instant::now()) {
            match start(&command, &name, &mut driver, &router) {
                Ok(running) => {
                    info!(pid = running.pid, "started {command:?}");
                    program = Some(running);
                    start_at = None;
                }
                Err(e) => {
                    let delay = backoff.next_delay().unwrap_or(policy.max);
                    error!(error = %e, retry_in = %human(delay), "cannot start {command:?}; check `command` (the program must exist and be executable)");
                    start_at = Some(Instant::now() + delay);
                }
            }
        }
        let taking = program.is_some() || ctx.config.on_slow == OnSlow::Drop;
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            happened = next(&mut program) => {
                let Some(mut running) = program.take() else { continue };
                let status = match happened {
                    Happened::Exited(status) => status,
                    Happened::StoppedReading => {
                        running.stdin = None;
                        match timeout(GRACE, running.child.wait()).await {
                            Ok(status) => status,
                            Err(_) => {
                                warn!(pid = running.pid, "the program closed its stdin but runs on; stopping it so that it restarts");
                                let _ = running.child.start_kill();
                                running.child.wait().await
                            }
                        }
                    }
                };
                if running.started.elapsed() >= policy.reset_after {
                    backoff.reset();
                }
                let delay = backoff.next_delay().unwrap_or(policy.max);
                let status = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
                warn!(pid = running.pid, %status, ran = %human(running.started.elapsed()), restart_in = %human(delay), "the program exited; restarting it");
                running.finish().await;
                driver.prune();
                start_at = Some(Instant::now() + delay);
            }
            () = sleep_until(start_at), if program.is_none() => {}
            delivery = ctx.input.recv(), if taking => match delivery {
                None => break,
                Some(delivery) if program.is_some() => tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => break,
                    () = driver.deliver(delivery) => {}
                },
                Some(delivery) => dropped(&ctx, &delivery),
            },
        }
    }
    // What is queued still goes to the program, then its stdin closes and it gets what is
    // left of 40 % of shutdown_timeout to exit: half is the upstreams' Close, the rest a
    // margin, and the daemon's shutdown must end within the whole.
    let deadline = Instant::now() + ctx.shutdown_timeout.mul_f64(0.4);
    ctx.input.close();
    while let Ok(Some(delivery)) = timeout_at(deadline, ctx.input.recv()).await {
        if program.is_some() {
            let _ = timeout_at(deadline, driver.deliver(delivery)).await;
        } else {
            dropped(&ctx, &delivery);
        }
    }
    drop(driver);
    if let Some(running) = program {
        running.stop(deadline).await;
    }
}

/// Starts the program with its stdin fed from a new destination of `driver`.
fn start(
    command: &[String],
    name: &str,
    driver: &mut Driver,
    router: &Router,
) -> io::Result<Running> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::other("the command is empty"))?;
    let mut child = Command::new(program)
        .args(args)
        .env("WSBRIDGE_SINK", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("the program's pipes are missing"));
    };
    let (pending, queue) = driver.open();
    let stdin = tokio::spawn(pump(queue, SocketWriter::new(stdin), None).in_current_span());
    driver.add(pending, stdin.abort_handle());
    let stdout = tokio::spawn(read_stdout(stdout, router.clone(), pid).in_current_span());
    let stderr = tokio::spawn(read_stderr(stderr, pid).in_current_span());
    Ok(Running {
        child,
        pid,
        started: Instant::now(),
        stdin: Some(stdin),
        readers: [stdout, stderr],
    })
}

impl Running {
    /// After the program exited: its stdin closed, its output read to the end (within
    /// [`GRACE`]).
    async fn finish(mut self) {
        if let Some(stdin) = self.stdin.take() {
            stdin.abort();
            let _ = stdin.await;
        }
        for reader in &mut self.readers {
            if timeout(GRACE, &mut *reader).await.is_err() {
                reader.abort();
                let _ = reader.await;
            }
        }
    }

    /// At the end: what is queued written, stdin closed, the program given until `deadline`
    /// to exit, then killed; always waited for.
    async fn stop(mut self, deadline: Instant) {
        if let Some(mut stdin) = self.stdin.take() {
            if timeout_at(deadline, &mut stdin).await.is_err() {
                stdin.abort();
                let _ = stdin.await;
            }
        }
        match timeout_at(deadline, self.child.wait()).await {
            Ok(status) => {
                let status = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
                info!(pid = self.pid, %status, "the program exited");
            }
            Err(_) => {
                warn!(
                    pid = self.pid,
                    "the program did not exit after its stdin closed; killing it"
                );
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
            }
        }
        self.finish().await;
    }
}

/// The next thing that happens to the running program; never, without one.
async fn next(program: &mut Option<Running>) -> Happened {
    let Some(running) = program else {
        return std::future::pending().await;
    };
    let stdin = async {
        match &mut running.stdin {
            Some(stdin) => {
                let _ = stdin.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        status = running.child.wait() => Happened::Exited(status),
        () = stdin => Happened::StoppedReading,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records that arrive while the program is down (`on_slow = "drop"`): counted.
fn dropped(ctx: &SinkContext, delivery: &Delivery) {
    let events = ctx.config.format == Format::Ndjson && ctx.config.events;
    let count = delivery
        .batch
        .events
        .iter()
        .filter(|e| events || e.is_data())
        .count();
    let count = count as u64;
    ctx.stats.records_routed.fetch_add(count, Ordering::Relaxed);
    ctx.stats.drop_records(
        super::DropReason::ProgramExited,
        count,
        &"the program is not running (on_slow = \"drop\")",
    );
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
