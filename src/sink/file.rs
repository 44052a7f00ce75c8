//! The file sink: records appended to a file by a thread of its own, as `tail -F`, log
//! shippers and batch jobs expect.
//!
//! The file is opened when the sink is bound, so a path the daemon cannot write stops it at
//! start. The shared [`Driver`] encodes (and filters) and queues with backpressure, like
//! stdout; [`FileWriter`] hands each round to the thread, which appends it with as few
//! writes as it can ([`output`]). A small task beside it asks the thread, once a second, to
//! rotate by time and to notice a deleted file, and passes on reloads (SIGHUP), which reopen
//! the file: logrotate's "move, then reload" loses nothing. The file is synced to the disk
//! on rotation, reload and shutdown, and with `fsync = DURATION` at most that long after a
//! write.
//!
//! Failures of the disk (full, removed directory) never stop the sink or the daemon: the
//! records that cannot be written are dropped, counted and reported at a bounded rate, and
//! writing resumes by itself when it can.

mod fsync;
mod output;
mod rotated;
pub mod settings;

pub use settings::{FileSettings, RotatePolicy};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

use super::driver::run_single;
use super::writer::SinkWriter;
use super::{Encoded, SinkContext, SinkError, SinkStats};
use crate::config::OnSlow;
use fsync::Fsync;
use output::Output;

/// How often the thread checks the time (rotation by `every`), whether its file was
/// deleted, and (with a short `fsync`) more often, whether a sync is due.
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
    let (rotate, fsync) = match ctx.config.settings.get::<FileSettings>() {
        Some(f) => (f.rotate.clone(), f.fsync),
        None => (None, None),
    };
    let driver = ctx.driver(OnSlow::Block);
    match cut_torn_line(&binding) {
        Ok(0) => {}
        Ok(cut) => {
            warn!(file = %path.display(), bytes = cut, "the file ended in the middle of a record (wsbridge was killed while writing it); cut that part off")
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot check that the file ends with a whole record")
        }
    }
    let writer = FileWriter::spawn(
        binding,
        rotate,
        fsync,
        ctx.stats.clone(),
        ctx.reopen.clone(),
    )
    .map_err(failed)?;
    run_single(ctx.input, ctx.shutdown, driver, writer)
        .await
        .map_err(failed)
}

/// A kill -9 or a power loss that lands inside a write can leave the file's last record
/// cut (the kernel may stop a large write between pages). Before appending, that part is
/// cut off, so that the file holds whole lines only; a file without any newline is left
/// alone (it is not one of ours). How many bytes were cut.
fn cut_torn_line(binding: &FileBinding) -> io::Result<u64> {
    let len = binding.file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let reader = File::open(&binding.path)?;
    let mut chunk = vec![0; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.read_exact_at(buf, start)?;
        if let Some(at) = buf.iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < len {
                binding.file.set_len(keep)?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    Ok(0)
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
        fsync: Option<Duration>,
        stats: Arc<SinkStats>,
        reopen: Arc<Notify>,
    ) -> io::Result<FileWriter> {
        let output = Output::new(binding.path, binding.file, rotate, Fsync::new(fsync), stats)?;
        // One round waits while the thread writes the previous one, and room for a tick.
        let (tx, rx) = mpsc::channel(2);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("wsbridge-file".into())
            .spawn(move || {
                let _ = done_tx.send(serve(output, rx));
            })?;
        // `fsync` syncs what waited half of it, so it is checked at least that often.
        let every = fsync.map_or(TICK, |f| TICK.min(f / 2));
        let ticker = tokio::spawn(tick(tx.clone(), reopen, every));
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
async fn tick(commands: mpsc::Sender<Command>, reopen: Arc<Notify>, every: Duration) {
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(1)));
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
