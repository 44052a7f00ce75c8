//! The exec sink: a program kept running with records on its stdin, for tools that read
//! stdin and will never speak WebSocket.
//!
//! Three tasks: this one takes the sink's input and hands it to the shared [`Driver`] under
//! `on_slow` (`block`: backpressure, for at most `max_block` without progress; `drop`:
//! counted); the [`Feeder`] owns the sink's one queue for its whole life and writes it to
//! each program's stdin in turn, so records queued for a program that exits go to the one
//! that replaces it; the [`Supervisor`] starts the program, reads its output and restarts
//! it after a backoff that grows while it keeps exiting and resets once it has run for
//! `restart.max`.
//!
//! Why not the shared [`pump`](super::writer::pump): the queue must outlive each program,
//! and a record is written only once the program read it, which only the pipe can tell.
//!
//! Counting: a record counts as written once the program has read it from its stdin pipe,
//! and as dropped (`program_exited`) if the program exited with it unread in the pipe, or
//! with part of it written (Linux tells how many bytes a pipe still holds; see
//! [`feed`]). What a program reads and then discards (`head` reads ahead) is written for
//! wsbridge: no writer can see it.
//!
//! At the end, what is queued is still written, the program reads it, its stdin closes and
//! it gets what is left of 40 % of `shutdown_timeout` to exit (half is the upstreams' Close,
//! the rest a margin); then its process group gets SIGTERM, and SIGKILL a tenth of
//! `shutdown_timeout` later. Every program is waited for (no zombie), its pipes close with
//! it (no leaked fd), and its whole process group is signalled when it ends, on restart as
//! at shutdown.

mod feed;
mod program;
pub mod settings;
mod unread;

pub use settings::{ExecSettings, RestartPolicy};

use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::inbound::Router;
use super::SinkContext;
use crate::config::ReconnectPolicy;
use feed::Feeder;
use program::Supervisor;

/// Runs an exec sink until its input closes or it is cancelled.
pub async fn run(mut ctx: SinkContext) {
    let Some(ExecSettings { command, restart }) = ctx.config.settings.get::<ExecSettings>() else {
        return;
    };
    let policy = ReconnectPolicy {
        initial: restart.initial,
        max: restart.max,
        multiplier: 2.0,
        jitter: 0.2,
        max_attempts: 0,
        reset_after: restart.max,
    };
    let name = ctx.config.name();
    let mut driver = ctx.driver(ctx.config.on_slow);
    let (pending, queue) = driver.open();
    let (programs, programs_rx) = mpsc::channel(1);
    let stop_feeding = CancellationToken::new();
    let feeder = Feeder::new(queue, ctx.stats.clone()).run(programs_rx, stop_feeding.clone());
    let mut feeder = AbortOnDropHandle::new(tokio::spawn(feeder.in_current_span()));
    driver.add(pending, feeder.abort_handle());
    let (stop, stop_rx) = watch::channel(None);
    let supervisor = Supervisor {
        command: command.clone(),
        name,
        policy,
        router: Router {
            config: ctx.config.clone(),
            directory: ctx.directory.clone(),
            max_line: ctx.max_line,
        },
        programs,
        stop: stop_rx,
        kill_after: ctx.shutdown_timeout / 10,
    };
    let supervisor = AbortOnDropHandle::new(tokio::spawn(supervisor.run().in_current_span()));
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            delivery = ctx.input.recv() => match delivery {
                None => break,
                Some(delivery) => tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => break,
                    () = driver.deliver(delivery) => {}
                },
            },
        }
    }
    // What is queued still goes to the program, which then gets what is left of 40 % of
    // shutdown_timeout to exit: half is the upstreams' Close, the rest a margin, and the
    // daemon's shutdown must end within the whole.
    let deadline = Instant::now() + ctx.shutdown_timeout.mul_f64(0.4);
    ctx.input.close();
    while let Ok(Some(delivery)) = timeout_at(deadline, ctx.input.recv()).await {
        let _ = timeout_at(deadline, driver.deliver(delivery)).await;
    }
    // The queue closes: the feeder writes what it holds, waits for the program to read it,
    // then closes the program's stdin.
    drop(driver);
    let _ = stop.send(Some(deadline));
    if timeout_at(deadline, &mut feeder).await.is_err() {
        stop_feeding.cancel();
        let _ = feeder.await;
    }
    let _ = supervisor.await;
}
