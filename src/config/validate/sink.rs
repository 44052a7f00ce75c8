//! Validation of each `[[sink]]`: the keys every type shares (`upstreams`, `filter`, the
//! queue and listener keys), as the type's [`Shared`] declares them, then the type's own keys
//! through its registry entry, given a [`SinkCheck`]; and the places sinks claim.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::expand::expand_env;
use crate::config::raw::{RawSink, RawSinkShared, RawSize};
use crate::config::sink::{Buffer, Claim, Inbound, Settings, SinkCatalog};
use crate::config::{
    Format, ListenerOptions, OnSlow, SinkConfig, DEFAULT_BROKER_BUFFER, DEFAULT_BUFFER,
    DEFAULT_BUFFER_BYTES, DEFAULT_MAX_CLIENTS, MAX_BUFFER_BYTES, MAX_QUEUE,
};
use crate::jq::Program;

/// What a sink type's validation works with: where to report (file, line, column and key),
/// the shared keys it may depend on, and the helpers every type's keys need.
pub struct SinkCheck<'c, 'a> {
    v: &'c mut Validator<'a>,
    key: &'c str,
    type_span: Range<usize>,
    format: Option<Format>,
    routed: Vec<String>,
    claims: Vec<Claim>,
}

impl SinkCheck<'_, '_> {
    /// `sink[N]`: the key of the table, for errors about it as a whole.
    pub fn sink_key(&self) -> &str {
        self.key
    }

    /// `sink[N].name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.key)
    }

    /// Where `type` was written: where a missing key is reported.
    pub fn type_span(&self) -> Range<usize> {
        self.type_span.clone()
    }

    /// `format` as written (`None`: not written, ndjson).
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// The names of the upstreams routed to this sink, sorted.
    pub fn routed(&self) -> &[String] {
        &self.routed
    }

    /// Reports a problem at `span` (a value's place in the file), under `key`.
    pub fn error(&mut self, span: Option<Range<usize>>, key: Option<String>, message: String) {
        self.v.error(span, key, message);
    }

    /// Problems reported so far: a type compares it before and after to know whether its
    /// own keys had any.
    pub fn error_count(&self) -> usize {
        self.v.errors.len()
    }

    /// Records that this sink holds a place (an address, a file): a second sink on it is
    /// refused.
    pub fn claim(&mut self, resource: String, shown: String, span: Range<usize>) {
        self.claims.push(Claim {
            resource,
            shown,
            span,
        });
    }

    /// A duration such as "5s".
    pub fn duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        self.v.duration(s, key)
    }

    /// A duration longer than zero.
    pub fn nonzero_duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        self.v.nonzero_duration(s, key)
    }

    /// A count from 1 to `max`.
    pub fn count(&mut self, n: &Spanned<i64>, key: &str, max: usize) -> Option<usize> {
        self.v.count(n, key, max)
    }

    /// A size ("16MiB" or bytes) from 1 byte to `max`.
    pub fn byte_size(&mut self, s: &Spanned<RawSize>, key: &str, max: usize) -> Option<usize> {
        self.v.byte_size(s, key, max)
    }

    /// An IP address and port.
    pub fn socket_addr(&mut self, s: &Spanned<String>, key: &str) -> Option<std::net::SocketAddr> {
        self.v.socket_addr(s, key)
    }

    /// The value with `${VAR}`, `${file:…}` and `${credential:…}` expanded.
    pub fn expanded(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        match expand_env(value.get_ref(), self.v.env) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(Some(value.span()), Some(key.into()), message);
                None
            }
        }
    }

    /// The `url` key (expanded; `default` when absent): a URL of one of `schemes` with a host.
    pub fn url(
        &mut self,
        url: Option<&Spanned<String>>,
        default: &str,
        schemes: &[&str],
    ) -> Option<Url> {
        let ukey = self.key("url");
        let text = match url {
            Some(u) => self.expanded(u, &ukey)?,
            None => default.to_string(),
        };
        let span = url.map(Spanned::span);
        match Url::parse(&text) {
            Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => Some(url),
            // The text may hold a password: it is not repeated.
            Ok(url) => {
                self.error(span, Some(ukey), format!("a {}:// URL was given; this sink takes {} URLs with a host, such as {default}", url.scheme(), schemes.join(":// or ")));
                None
            }
            Err(e) => {
                self.error(
                    span,
                    Some(ukey),
                    format!("not a URL ({e}); write it like {default}"),
                );
                None
            }
        }
    }
}

impl Validator<'_> {
    /// One sink and the places it claims; `None` if any of its keys is wrong.
    pub(super) fn sink(
        &mut self,
        s: RawSink,
        key: &str,
        upstream_names: &HashSet<String>,
        catalog: &dyn SinkCatalog,
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
        let mut check = SinkCheck {
            v: self,
            key,
            type_span: s.kind.span(),
            format: sh.format,
            routed,
            claims: Vec::new(),
        };
        let settings = (entry.validate)(s.own, &mut check);
        let claims = check.claims;
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
