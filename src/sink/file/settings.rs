//! `type = "file"`: its keys (`path`, `rotate`, `fsync`), their validation (a directory that exists
//! and is writable), its `check` lines and its binding (the file opened for appending).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::plan::{dur, size, size_u64};
use crate::config::sink::{Buffer, Inbound, Shared, SinkSettings, SinkType};
use crate::config::{socket_file_identity, RawSize, SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::{BoundSink, SinkError};

/// The file sink type.
pub struct File;

/// The most rotated files a file sink keeps.
const MAX_KEEP: usize = 100_000;
/// The largest `rotate.size`.
const MAX_ROTATE_SIZE: usize = 1 << 40;
/// The shortest `rotate.every`: rotated files are named by the second.
const MIN_ROTATE_EVERY: Duration = Duration::from_secs(1);
/// `rotate.keep` when not written.
pub(crate) const DEFAULT_KEEP: usize = 10;

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeys {
    pub path: Option<Spanned<PathBuf>>,
    pub rotate: Option<Spanned<RawRotate>>,
    pub fsync: Option<Spanned<String>>,
}

/// `rotate = { ... }` of a file sink: any subset of the keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotate {
    pub size: Option<Spanned<RawSize>>,
    pub every: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
    pub compress: Option<bool>,
}

/// Records appended to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    /// The file.
    pub path: PathBuf,
    /// When to start a new file; `None`: never.
    pub rotate: Option<RotatePolicy>,
    /// How often what was written is synced to the disk; `None`: on rotation, reload
    /// and shutdown only.
    pub fsync: Option<Duration>,
}

/// `rotate = { ... }` of a file sink: a new file when either limit is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct RotatePolicy {
    /// Bytes a file may hold (a single larger record still goes whole into a file of its own).
    pub size: Option<u64>,
    /// How long a file is written to.
    pub every: Option<Duration>,
    /// Rotated files kept, newest first; older ones are deleted.
    pub keep: usize,
    /// Whether rotated files are gzipped.
    pub compress: bool,
}

impl SinkSettings for FileSettings {
    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rotate = match &self.rotate {
            None => "never".to_string(),
            Some(r) => {
                let mut when = Vec::new();
                if let Some(size) = r.size {
                    when.push(format!("at {}", size_u64(size)));
                }
                if let Some(every) = r.every {
                    when.push(format!("every {}", dur(every)));
                }
                let gzip = if r.compress { ", gzipped" } else { "" };
                format!("{}, keep {}{gzip}", when.join(" or "), r.keep)
            }
        };
        writeln!(f, "  rotate         {rotate}")?;
        match self.fsync {
            Some(every) => writeln!(f, "  fsync          every {}", dur(every)),
            None => writeln!(f, "  fsync          on rotation, reload and shutdown"),
        }
    }

    fn plan_queue(&self, s: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  queue          {} records or {}",
            s.buffer,
            size(s.buffer_bytes)
        )
    }
}

impl SinkType for File {
    const NAME: &'static str = "file";
    // One reader, the disk: it is always backpressure.
    const SHARED: Shared = Shared {
        buffer: Buffer::Records,
        buffer_bytes: true,
        on_slow: None,
        max_block: true,
        listener: false,
        inbound: Inbound::Never,
    };
    type Keys = FileKeys;
    type Settings = FileSettings;

    /// Its `path` (in a directory that exists and is writable), `rotate` and `fsync`.
    fn validate(s: FileKeys, check: &mut SinkCheck<'_, '_>) -> Option<FileSettings> {
        let rotate = match &s.rotate {
            Some(r) => {
                let key = check.key("rotate");
                rotate(check, r, &key).map(Some)
            }
            None => Some(None),
        };
        let fsync = match &s.fsync {
            Some(f) => {
                let key = check.key("fsync");
                check.nonzero_duration(f, &key).map(Some)
            }
            None => Some(None),
        };
        let Some(path) = s
            .path
            .as_ref()
            .filter(|p| !p.get_ref().as_os_str().is_empty())
        else {
            check.error(
                Some(check.type_span()),
                Some(check.key("path")),
                "a file sink needs `path`, the file to append records to".into(),
            );
            return None;
        };
        if let Err(problem) = writable_place(path.get_ref()) {
            check.error(Some(path.span()), Some(check.key("path")), problem);
            return None;
        }
        check.claim(
            format!("file {}", socket_file_identity(path.get_ref()).display()),
            format!("file {}", path.get_ref().display()),
            path.span(),
        );
        Some(FileSettings {
            path: path.get_ref().clone(),
            rotate: rotate?,
            fsync: fsync?,
        })
    }
}

impl SinkComponent for File {
    fn bind(_: &SinkConfig, file: &FileSettings) -> Result<BoundSink, SinkError> {
        let binding = super::bind(&file.path)?;
        Ok(BoundSink::new(move |ctx| super::run(binding, ctx)))
    }
}

fn rotate(
    check: &mut SinkCheck<'_, '_>,
    r: &Spanned<RawRotate>,
    key: &str,
) -> Option<RotatePolicy> {
    let raw = r.get_ref();
    let before = check.error_count();
    let size = raw
        .size
        .as_ref()
        .and_then(|s| check.byte_size(s, &format!("{key}.size"), MAX_ROTATE_SIZE));
    let every = raw
        .every
        .as_ref()
        .and_then(|e| Some((e, check.nonzero_duration(e, &format!("{key}.every"))?)));
    if let Some((e, every)) = every {
        if every < MIN_ROTATE_EVERY {
            check.error(
                Some(e.span()),
                Some(format!("{key}.every")),
                "must be at least 1s: rotated files are named by the second".into(),
            );
        }
    }
    let keep = match &raw.keep {
        Some(k) => check.count(k, &format!("{key}.keep"), MAX_KEEP),
        None => Some(DEFAULT_KEEP),
    };
    if raw.size.is_none() && raw.every.is_none() {
        check.error(
            Some(r.span()),
            Some(key.into()),
            "says neither `size` nor `every`: write when to rotate, such as rotate = { size = \"256MiB\" }, or remove `rotate` to never rotate".into(),
        );
    }
    if check.error_count() > before {
        return None;
    }
    Some(RotatePolicy {
        size: size.map(|s| s as u64),
        every: every.map(|(_, e)| e),
        keep: keep?,
        compress: raw.compress.unwrap_or(false),
    })
}

/// Whether a file can be created or appended at `path`: not a directory, in a directory
/// that exists and that this process may write to. The daemon opens it at start too, so a
/// read-only place is a config error at `check` and a clear error at start.
fn writable_place(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "{} is a directory; name the file to write, such as {}/feed.ndjson",
            path.display(),
            path.display()
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "the directory {} does not exist; create it (wsbridge writes files, not directories)",
            dir.display()
        ));
    }
    if let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        return Err(format!(
            "cannot write in the directory {}: {}; give the daemon's user write access or pick another path",
            dir.display(),
            std::io::Error::from(e)
        ));
    }
    if path.exists() {
        if let Err(e) = rustix::fs::access(path, rustix::fs::Access::WRITE_OK) {
            return Err(format!(
                "cannot append to {}: {}; give the daemon's user write access or pick another path",
                path.display(),
                std::io::Error::from(e)
            ));
        }
    }
    Ok(())
}
