//! Validation of each `[[sink]]`: the keys every type shares (`upstreams`, `filter`, the
//! queue and listener keys), as the type's [`Shared`] declares them, then the type's own keys
//! through its registry entry, given a [`SinkCheck`]; and the places sinks claim.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::SinkContext;
use super::{SinkCheck, Validator};
use crate::config::raw::{RawSink, RawSinkShared, RawSize};
use crate::config::sink::{Buffer, Claim, Inbound, Settings, SinkCatalog};
use crate::config::{
    ListenerOptions, OnSlow, SinkConfig, DEFAULT_BROKER_BUFFER, DEFAULT_BUFFER,
    DEFAULT_BUFFER_BYTES, DEFAULT_MAX_CLIENTS, MAX_BUFFER_BYTES, MAX_QUEUE,
};
use crate::jq::Program;

impl Validator<'_> {
    /// One sink and the places it claims; `None` if any of its keys is wrong.
    pub(super) fn sink(
        &mut self,
        s: RawSink,
        key: &str,
        upstream_names: &HashSet<String>,
        catalog: &dyn SinkCatalog,
        context: &SinkContext,
    ) -> Option<(SinkConfig, Vec<Claim>)> {
        let before = self.errors.len();
        let entry = catalog.get(s.kind.get_ref())?;
        let rules = entry.shared;
        let sh = &s.shared;
        if rules.inbound == Inbound::Never {
            if let Some(inbound) = &sh.inbound {
                if *inbound.get_ref() {
                    self.error(Some(inbound.span()), Some(format!("{key}.inbound")), format!("{} has no clients to read lines from; use a unix, tcp or exec sink for inbound", entry.name));
                }
            }
        }
        let on_slow = match (rules.on_slow, &sh.on_slow) {
            // One reader, the pipe or the disk: it is always backpressure.
            (None, _) => OnSlow::Block,
            (Some(rule), None) => rule.default,
            (Some(rule), Some(o)) => match rule.no_disconnect {
                Some(why) if *o.get_ref() == OnSlow::Disconnect => {
                    self.error(Some(o.span()), Some(format!("{key}.on_slow")), why.into());
                    rule.default
                }
                _ => *o.get_ref(),
            },
        };
        let filter = self.filter(sh, key);
        let upstreams = sh.upstreams.as_ref().map(|list| {
            let mut names = Vec::new();
            for n in list.get_ref() {
                if !upstream_names.contains(n.get_ref()) {
                    self.error(
                        Some(n.span()),
                        Some(format!("{key}.upstreams")),
                        format!(
                            "no upstream is named {:?}; the names are: {}",
                            n.get_ref(),
                            join_sorted(upstream_names)
                        ),
                    );
                }
                names.push(n.get_ref().clone());
            }
            names
        });
        let (buffer, buffer_bytes) = match rules.buffer {
            Buffer::Bytes => {
                let bytes = match &sh.buffer {
                    Some(b) => self.byte_size(b, &format!("{key}.buffer"), MAX_BUFFER_BYTES),
                    None => Some(DEFAULT_BROKER_BUFFER),
                };
                (Some(MAX_QUEUE), bytes)
            }
            Buffer::Records => {
                let buffer = match &sh.buffer {
                    Some(b) => self.record_count(b, &format!("{key}.buffer")),
                    None => Some(DEFAULT_BUFFER),
                };
                let bytes = match &sh.buffer_bytes {
                    Some(b) => self.byte_size(b, &format!("{key}.buffer_bytes"), MAX_BUFFER_BYTES),
                    None => Some(DEFAULT_BUFFER_BYTES),
                };
                (buffer, bytes)
            }
        };
        // A type without clients keeps the defaults (`check` shows no listener lines).
        let listener = if rules.listener {
            self.listener_options(sh, key)
        } else {
            Some(ListenerOptions::default())
        };
        let max_block = match &sh.max_block {
            None => Some(DEFAULT_MAX_BLOCK),
            Some(text) => self
                .duration(text, &format!("{key}.max_block"))
                .filter(|d| !d.is_zero()),
        };
        let mut routed: Vec<String> = match &upstreams {
            Some(list) => list.clone(),
            None => upstream_names.iter().cloned().collect(),
        };
        routed.sort_unstable();
        let mut check = SinkCheck::new(self, key, s.kind.span(), sh.format, routed, context);
        let settings = (entry.validate)(s.own, &mut check);
        let claims = check.into_claims();
        if self.errors.len() > before {
            return None;
        }
        let sh = s.shared;
        let config = SinkConfig {
            sink_type: entry.name,
            takes: rules,
            settings: Settings(settings?),
            upstreams,
            format: sh.format.unwrap_or_default(),
            events: sh.events.unwrap_or(true),
            parse_json: sh.parse_json.unwrap_or(false),
            buffer: buffer?,
            buffer_bytes: buffer_bytes?,
            on_slow,
            max_block,
            inbound: match rules.inbound {
                Inbound::Never => false,
                Inbound::Off => sh.inbound.as_ref().is_some_and(|i| *i.get_ref()),
                Inbound::On => sh.inbound.as_ref().is_none_or(|i| *i.get_ref()),
            },
            filter: filter.ok()?,
            listener: listener?,
        };
        Some((config, claims))
    }

    /// `filter`: the jq program, compiled.
    fn filter(&mut self, s: &RawSinkShared, key: &str) -> Result<Option<Program>, ()> {
        let Some(filter) = &s.filter else {
            return Ok(None);
        };
        self.jq_program(filter, format!("{key}.filter")).map(Some)
    }

    /// A records `buffer`: a number of records.
    fn record_count(&mut self, b: &Spanned<RawSize>, key: &str) -> Option<usize> {
        match b.get_ref() {
            RawSize::Bytes(n) => self.count(&Spanned::new(b.span(), *n), key, MAX_QUEUE),
            RawSize::Text(_) => {
                self.error(
                    Some(b.span()),
                    Some(key.into()),
                    format!("is a number of records here (from 1 to {MAX_QUEUE}); bound bytes with buffer_bytes"),
                );
                None
            }
        }
    }

    /// `max_clients`, `replay` and `fd_name` (whether the type takes them is checked when
    /// the table is read).
    fn listener_options(&mut self, s: &RawSinkShared, key: &str) -> Option<ListenerOptions> {
        let max_clients = match &s.max_clients {
            Some(n) => self.count(n, &format!("{key}.max_clients"), MAX_QUEUE),
            None => Some(DEFAULT_MAX_CLIENTS),
        };
        let replay = match &s.replay {
            // 0 is the default written out: no history.
            Some(n) if *n.get_ref() == 0 => Some(0),
            Some(n) => self.count(n, &format!("{key}.replay"), MAX_QUEUE),
            None => Some(0),
        };
        let fd_name = match &s.fd_name {
            Some(name) => {
                let text = name.get_ref();
                // sd_listen_fds_with_names(3): what FileDescriptorName= accepts.
                let valid = !text.is_empty()
                    && text.len() <= 255
                    && text.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                if !valid {
                    self.error(
                        Some(name.span()),
                        Some(format!("{key}.fd_name")),
                        format!("{text:?} cannot be a FileDescriptorName=: use 1 to 255 printable ASCII characters without spaces or ':'"),
                    );
                }
                Some(text.clone())
            }
            None => None,
        };
        Some(ListenerOptions {
            max_clients: max_clients?,
            replay: replay?,
            fd_name,
        })
    }
}

/// `max_block` when the config does not say.
const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(1);

/// What identifies a socket file, so two spellings of one path (`/x/d.sock`, `/x/./d.sock`,
/// `/x/../x/d.sock`, a symlinked directory) clash: the parent directory resolved by the file
/// system when it exists, else the path with `.` and `..` removed as written.
pub fn socket_file_identity(path: &Path) -> PathBuf {
    let lexical = lexically_normal(path);
    let resolved = match (lexical.parent(), lexical.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent).ok().map(|p| p.join(name))
        }
        _ => None,
    };
    resolved.unwrap_or(lexical)
}

/// `path` without `.` components, with `..` taking away the component before it.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn join_sorted(names: &HashSet<String>) -> String {
    let mut v: Vec<_> = names.iter().map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() {
        "(none defined)".into()
    } else {
        v.join(", ")
    }
}
