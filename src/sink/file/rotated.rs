//! A file sink's rotated files: their names (`<path>.<UTC time>[-N][.gz]`), keeping the
//! newest `keep`, and gzipping them on a thread of their own so that writing never waits
//! for compression.
//!
//! Pruning (on the writer's thread, right after each rename, so there are never more than
//! `keep`) and compression (on this module's thread) both delete files; one lock orders
//! them, so a file pruned while it was being compressed does not come back as its `.gz`.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use flate2::write::GzEncoder;
use flate2::Compression;
use tracing::{debug, warn};

/// Rotated files waiting for compression, at most; beyond that the writer compresses later
/// (at the next start), rather than waiting.
const WAITING: usize = 64;

/// The rotated files of one file sink.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The live file.
    path: PathBuf,
    keep: usize,
    compress: bool,
    /// Held while deleting files, and while a compressed file replaces its original.
    lock: Arc<Mutex<()>>,
}

/// The thread that compresses rotated files.
pub struct Compressor {
    files: Option<SyncSender<PathBuf>>,
    thread: Option<JoinHandle<()>>,
}

impl Rotated {
    /// The rotated files of `path`.
    pub fn new(path: &Path, keep: usize, compress: bool) -> Rotated {
        Rotated {
            path: path.to_path_buf(),
            keep,
            compress,
            lock: Arc::default(),
        }
    }

    /// The name for a file rotated at `now`: `<path>.20261202T010000Z`, with `-1`, `-2`, …
    /// after the files already rotated in that second (so names sort by age even when
    /// older ones of that second were pruned).
    pub fn name_for(&self, now: SystemTime) -> PathBuf {
        let stamp: String = humantime::format_rfc3339_seconds(now)
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let last = self
            .list()
            .into_iter()
            .filter(|((s, _), _)| *s == stamp)
            .map(|((_, n), _)| n)
            .max();
        let suffix = match last {
            None => stamp,
            Some(n) => format!("{stamp}-{}", n + 1),
        };
        let mut name = self.path.clone().into_os_string();
        name.push(".");
        name.push(&suffix);
        PathBuf::from(name)
    }

    /// Deletes all but the newest `keep` rotated files (a file and its `.gz` count once).
    pub fn prune(&self) {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut files = self.list();
        if files.len() <= self.keep {
            return;
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let excess = files.len() - self.keep;
        for (_, base) in files.into_iter().take(excess) {
            for path in [base.clone(), gz(&base), tmp(&base)] {
                match fs::remove_file(&path) {
                    Ok(()) => debug!(file = %path.display(), "deleted a rotated file (keep)"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot delete a rotated file")
                    }
                }
            }
        }
    }

    /// Rotated files (without `.gz`), each with its sort key (time, then number).
    fn list(&self) -> Vec<((String, u64), PathBuf)> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Some(live) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(live).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let rest = rest.strip_suffix(".gz").unwrap_or(rest);
            if let Some(key) = sort_key(rest) {
                let base = dir.join(format!("{live}.{rest}"));
                if !files.iter().any(|(_, b)| *b == base) {
                    files.push((key, base));
                }
            }
        }
        files
    }

    /// Starts the compressing thread, which first takes the rotated files left uncompressed
    /// (a crash, a full queue) and removes half-written `.gz` files; `None` without compress.
    pub fn start(&self) -> io::Result<Option<Compressor>> {
        if !self.compress {
            return Ok(None);
        }
        let (files, queue) = sync_channel(WAITING);
        let rotated = self.clone();
        let thread = std::thread::Builder::new()
            .name("wsbridge-gzip".into())
            .spawn(move || rotated.compress_all(queue))?;
        Ok(Some(Compressor {
            files: Some(files),
            thread: Some(thread),
        }))
    }

    fn compress_all(&self, queue: Receiver<PathBuf>) {
        let mut left: Vec<_> = self.list();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, base) in left {
            let _ = fs::remove_file(tmp(&base));
            if base.exists() {
                self.compress_one(&base);
            }
        }
        while let Ok(path) = queue.recv() {
            self.compress_one(&path);
        }
    }

    /// `path` → `path.gz` (written to `path.gz.tmp`, synced, then renamed), then `path`
    /// deleted. A file pruned meanwhile stays deleted.
    fn compress_one(&self, path: &Path) {
        let partial = tmp(path);
        if let Err(e) = gzip(path, &partial) {
            let _ = fs::remove_file(&partial);
            if e.kind() != io::ErrorKind::NotFound {
                warn!(file = %path.display(), error = %e, "cannot compress a rotated file; it stays uncompressed");
            }
            return;
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !path.exists() {
            let _ = fs::remove_file(&partial);
            return;
        }
        let done = fs::rename(&partial, gz(path)).and_then(|()| fs::remove_file(path));
        match done {
            Ok(()) => debug!(file = %path.display(), "compressed a rotated file"),
            Err(e) => {
                let _ = fs::remove_file(&partial);
                warn!(file = %path.display(), error = %e, "cannot compress a rotated file; it stays uncompressed");
            }
        }
    }
}

impl Compressor {
    /// Queues a rotated file; if many are waiting it is left for the next start.
    pub fn queue(&self, path: PathBuf) {
        let Some(files) = &self.files else { return };
        match files.try_send(path) {
            Ok(()) => {}
            Err(TrySendError::Full(path)) => {
                warn!(file = %path.display(), "compression is behind; this rotated file is compressed at the next start")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Lets the thread finish what is queued and waits for it.
    pub fn finish(mut self) {
        self.files = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = BufReader::new(File::open(from)?);
    let output = File::create(to)?;
    let mut encoder = GzEncoder::new(BufWriter::new(output), Compression::default());
    io::copy(&mut input, &mut encoder)?;
    let output = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    output.sync_all()
}

/// `20261202T010000Z` or `20261202T010000Z-3`: (time, number).
fn sort_key(rest: &str) -> Option<(String, u64)> {
    let (stamp, n) = match rest.split_once('-') {
        Some((stamp, n)) => (stamp, n.parse().ok()?),
        None => (rest, 0),
    };
    let bytes = stamp.as_bytes();
    let well_formed = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit);
    well_formed.then(|| (stamp.to_string(), n))
}

fn gz(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

fn tmp(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz.tmp");
    PathBuf::from(name)
}

/// Flushes a directory's entries (a rename, a new file) to disk.
pub fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn names_sort_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("feed.ndjson");
        let rotated = Rotated::new(&live, 2, false);
        let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let first = rotated.name_for(at);
        assert!(
            first
                .to_str()
                .unwrap()
                .ends_with("feed.ndjson.20261130T005320Z"),
            "{first:?}"
        );
        fs::write(&first, "1").unwrap();
        let second = rotated.name_for(at);
        assert!(second.to_str().unwrap().ends_with("Z-1"), "{second:?}");
        fs::write(&second, "2").unwrap();
        fs::write(gz(&rotated.name_for(at + Duration::from_secs(1))), "3").unwrap();
        fs::write(dir.path().join("feed.ndjson.other"), "x").unwrap();
        rotated.prune();
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "feed.ndjson.20261130T005320Z-1",
                "feed.ndjson.20261130T005321Z.gz",
                "feed.ndjson.other"
            ]
        );
    }

    #[test]
    fn compresses_rotated_files_left_from_before() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("feed.ndjson");
        let rotated = Rotated::new(&live, 5, true);
        let old = rotated.name_for(SystemTime::now());
        fs::write(&old, "a line\n").unwrap();
        fs::write(tmp(&old), "half").unwrap();
        rotated.start().unwrap().unwrap().finish();
        assert!(!old.exists() && !tmp(&old).exists());
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(gz(&old)).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a line\n");
    }
}
