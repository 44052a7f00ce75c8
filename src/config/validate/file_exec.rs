//! Validation of what the file and exec sinks add, and of `filter` (every sink): the file's
//! directory and `rotate`, the program's `command` and `restart`, and the jq program
//! (compiled by [`Validator::jq_program`]).

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawRestart, RawRotate, RawSink};
use crate::config::{RestartPolicy, RotatePolicy, SinkKind};
use crate::jq::Program;

/// The most rotated files a file sink keeps.
const MAX_KEEP: usize = 100_000;
/// The largest `rotate.size`.
const MAX_ROTATE_SIZE: usize = 1 << 40;
/// The shortest `rotate.every`: rotated files are named by the second.
const MIN_ROTATE_EVERY: Duration = Duration::from_secs(1);

impl Validator<'_> {
    /// `filter`: the jq program, compiled.
    pub(super) fn filter(&mut self, s: &RawSink, key: &str) -> Result<Option<Program>, ()> {
        let Some(filter) = &s.filter else {
            return Ok(None);
        };
        self.jq_program(filter, format!("{key}.filter")).map(Some)
    }

    /// A file sink: its `path` (in a directory that exists and is writable) and `rotate`.
    pub(super) fn file_kind(&mut self, s: &RawSink, key: &str) -> Option<SinkKind> {
        let rotate = match &s.rotate {
            Some(r) => self.rotate(r, &format!("{key}.rotate")).map(Some),
            None => Some(None),
        };
        let fsync = match &s.fsync {
            Some(f) => self.nonzero_duration(f, &format!("{key}.fsync")).map(Some),
            None => Some(None),
        };
        let Some(path) = s
            .path
            .as_ref()
            .filter(|p| !p.get_ref().as_os_str().is_empty())
        else {
            self.error(
                Some(s.kind.span()),
                Some(format!("{key}.path")),
                "a file sink needs `path`, the file to append records to".into(),
            );
            return None;
        };
        if let Err(problem) = writable_place(path.get_ref()) {
            self.error(Some(path.span()), Some(format!("{key}.path")), problem);
            return None;
        }
        Some(SinkKind::File {
            path: path.get_ref().clone(),
            rotate: rotate?,
            fsync: fsync?,
        })
    }

    fn rotate(&mut self, r: &Spanned<RawRotate>, key: &str) -> Option<RotatePolicy> {
        let raw = r.get_ref();
        let before = self.errors.len();
        let size = raw
            .size
            .as_ref()
            .and_then(|s| self.byte_size(s, &format!("{key}.size"), MAX_ROTATE_SIZE));
        let every = raw
            .every
            .as_ref()
            .and_then(|e| Some((e, self.nonzero_duration(e, &format!("{key}.every"))?)));
        if let Some((e, every)) = every {
            if every < MIN_ROTATE_EVERY {
                self.error(
                    Some(e.span()),
                    Some(format!("{key}.every")),
                    "must be at least 1s: rotated files are named by the second".into(),
                );
            }
        }
        let keep = match &raw.keep {
            Some(k) => self.count(k, &format!("{key}.keep"), MAX_KEEP),
            None => Some(DEFAULT_KEEP),
        };
        if raw.size.is_none() && raw.every.is_none() {
            self.error(
                Some(r.span()),
                Some(key.into()),
                "says neither `size` nor `every`: write when to rotate, such as rotate = { size = \"256MiB\" }, or remove `rotate` to never rotate".into(),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        Some(RotatePolicy {
            size: size.map(|s| s as u64),
            every: every.map(|(_, e)| e),
            keep: keep?,
            compress: raw.compress.unwrap_or(false),
        })
    }

    /// An exec sink: its `command` and `restart`.
    pub(super) fn exec_kind(&mut self, s: &RawSink, key: &str) -> Option<SinkKind> {
        let restart = match &s.restart {
            Some(r) => self.restart(r, &format!("{key}.restart")),
            None => Some(RestartPolicy::default()),
        };
        let command: Vec<String> = match &s.command {
            Some(c) => c.get_ref().iter().map(|a| a.get_ref().clone()).collect(),
            None => Vec::new(),
        };
        if command.first().is_none_or(|program| program.is_empty()) {
            let span = s.command.as_ref().map_or(s.kind.span(), Spanned::span);
            self.error(
                Some(span),
                Some(format!("{key}.command")),
                "an exec sink needs `command`, the program and its arguments, such as [\"/usr/local/bin/tool\", \"--stdin\"]".into(),
            );
            return None;
        }
        Some(SinkKind::Exec {
            command,
            restart: restart?,
        })
    }

    fn restart(&mut self, r: &Spanned<RawRestart>, key: &str) -> Option<RestartPolicy> {
        let raw = r.get_ref();
        let mut policy = RestartPolicy::default();
        let before = self.errors.len();
        if let Some(initial) = &raw.initial {
            policy.initial = self
                .nonzero_duration(initial, &format!("{key}.initial"))
                .unwrap_or_default();
        }
        if let Some(max) = &raw.max {
            policy.max = self
                .nonzero_duration(max, &format!("{key}.max"))
                .unwrap_or_default();
        }
        if self.errors.len() > before {
            return None;
        }
        if policy.initial > policy.max {
            let span = raw.max.as_ref().or(raw.initial.as_ref()).map(Spanned::span);
            self.error(
                span,
                Some(format!("{key}.max")),
                format!(
                    "is shorter than initial ({}); the delay grows from initial up to max",
                    crate::duration::human(policy.initial)
                ),
            );
            return None;
        }
        Some(policy)
    }
}

/// `rotate.keep` when not written.
pub(crate) const DEFAULT_KEEP: usize = 10;

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
