//! The file sink: records appended to a file by a thread of its own, as `tail -F`, log
//! shippers and batch jobs expect.
//!
//! The file is opened when the sink is bound, so a path the daemon cannot write stops it at
//! start. The shared [`Driver`] encodes (and filters) and queues with backpressure, like
//! stdout; [`FileWriter`] hands each round to the thread, which appends it with as few
//! writes as it can ([`output`]). A small task beside it asks the thread, once a second, to
//! rotate by time and to notice a deleted file, and passes on reloads (SIGHUP), which reopen
//! the file: logrotate's "move, then reload" loses nothing.
//!
//! Failures of the disk (full, removed directory) never stop the sink or the daemon: the
//! records that cannot be written are dropped, counted and reported at a bounded rate, and
//! writing resumes by itself when it can.

mod output;
mod rotated;
pub mod settings;

pub use settings::{FileSettings, RotatePolicy};

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::driver::{run_single, Driver};
use super::queue::Bounds;
use super::writer::SinkWriter;
use super::{Encoded, SinkContext, SinkError, SinkStats};
use crate::config::OnSlow;
use output::Output;

/// How often the thread checks the time (rotation by `every`) and whether its file was
/// deleted.
const TICK: Duration = Duration::from_secs(1);

/// A file sink's file, opened for appending when the sink is bound.
pub struct FileBinding {
    path: PathBuf,
    file: File,
}

/// Opens (creating it if needed) the file at `path` for appending.
pub fn bind(path: &Path) -> Result<FileBinding, SinkError> {
    match open_append(path) {
        Ok(file) => Ok(FileBinding {
            path: path.to_path_buf(),
            file,
        }),
        Err(source) => Err(SinkError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Runs a file sink until its input closes or it is cancelled; the file is synced at the end.
pub async fn run(binding: FileBinding, ctx: SinkContext) -> Result<(), SinkError> {
    let path = binding.path.clone();
    let failed = |source| SinkError::File {
        path: path.clone(),
        source,
    };
    let rotate = ctx
        .config
        .settings
        .get::<FileSettings>()
        .and_then(|f| f.rotate.clone());
    let driver = Driver::new(
        ctx.config.name(),
        ctx.encoder(),
        OnSlow::Block,
        Bounds::of(&ctx.config),
        ctx.stats.clone(),
    )
    .with_max_block(ctx.config.max_block);
    let writer = FileWriter::spawn(binding, rotate, ctx.stats.clone(), ctx.reopen.clone())
        .map_err(failed)?;
    run_single(ctx.input, ctx.shutdown, driver, writer)
        .await
        .map_err(failed)
}

/// What the writing thread is asked to do.
enum Command {
    /// Append these runs.
    Write(Vec<Encoded>),
    /// A second passed: rotate if it is time, reopen a deleted file, retry after a failure.
    Tick,
    /// Reload: reopen the file at its path.
    Reopen,
}

/// Hands rounds to the writing thread; waits (asynchronously) while it is behind.
struct FileWriter {
    commands: Option<mpsc::Sender<Command>>,
    done: Option<oneshot::Receiver<io::Result<()>>>,
    ticker: JoinHandle<()>,
}

impl FileWriter {
    fn spawn(
        binding: FileBinding,
        rotate: Option<RotatePolicy>,
        stats: Arc<SinkStats>,
        reopen: Arc<Notify>,
    ) -> io::Result<FileWriter> {
        let output = Output::new(binding.path, binding.file, rotate, stats)?;
        // One round waits while the thread writes the previous one, and room for a tick.
        let (tx, rx) = mpsc::channel(2);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("wsbridge-file".into())
            .spawn(move || {
                let _ = done_tx.send(serve(output, rx));
            })?;
        let ticker = tokio::spawn(tick(tx.clone(), reopen));
        Ok(FileWriter {
            commands: Some(tx),
            done: Some(done),
            ticker,
        })
    }

    /// Lets the thread finish (sync and close the file) and says how it ended.
    async fn result(&mut self) -> io::Result<()> {
        self.ticker.abort();
        let _ = (&mut self.ticker).await;
        self.commands = None;
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the file writer thread panicked (a bug: please report it with the log)",
                ))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Its sender held the thread's queue open.
        self.ticker.abort();
    }
}

impl SinkWriter for FileWriter {
    fn counts_itself(&self) -> bool {
        true
    }

    async fn write(&mut self, round: &[Encoded]) -> io::Result<()> {
        let sent = match &self.commands {
            Some(commands) => commands.send(Command::Write(round.to_vec())).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.result().await?;
        Err(io::Error::other("the file writer thread stopped"))
    }

    async fn close(&mut self) -> io::Result<()> {
        self.result().await
    }
}

/// The ticker: a tick a second, and reloads as they come, until the thread is gone.
async fn tick(commands: mpsc::Sender<Command>, reopen: Arc<Notify>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = reopen.notified() => {
                if commands.send(Command::Reopen).await.is_err() {
                    return;
                }
            }
            _ = interval.tick() => {
                // A full queue means the thread is busy writing: this tick can be skipped.
                if let Err(mpsc::error::TrySendError::Closed(_)) = commands.try_send(Command::Tick) {
                    return;
                }
            }
        }
    }
}

/// The thread: carries out commands until every sender is gone, then syncs and closes.
fn serve(mut output: Output, mut commands: mpsc::Receiver<Command>) -> io::Result<()> {
    while let Some(command) = commands.blocking_recv() {
        match command {
            Command::Write(runs) => output.write(&runs),
            Command::Tick => output.tick(),
            Command::Reopen => output.reopen(),
        }
    }
    output.close();
    Ok(())
}
