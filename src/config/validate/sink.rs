//! Validation of each `[[sink]]`: the keys its type takes, its listener and client bounds
//! (the nats and redis settings are in `broker`; the file and exec sinks' own keys, and
//! `filter`, are in `file_exec`).

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawSink, SinkType};
use crate::config::{
    ListenerOptions, OnSlow, SinkConfig, SinkKind, DEFAULT_BROKER_BUFFER, DEFAULT_BUFFER,
    DEFAULT_BUFFER_BYTES, DEFAULT_MAX_CLIENTS, MAX_BUFFER_BYTES, MAX_QUEUE,
};

impl Validator<'_> {
    pub(super) fn sink(
        &mut self,
        s: &RawSink,
        key: &str,
        upstream_names: &HashSet<String>,
    ) -> Option<SinkConfig> {
        let before = self.errors.len();
        let kind = *s.kind.get_ref();
        // Keys that only some types use: name the ones that do not belong.
        let misplaced: [KeyRule<'_>; 22] = [
            (
                "path",
                s.path.as_ref().map(Spanned::span),
                &[SinkType::Unix, SinkType::File],
            ),
            (
                "mode",
                s.mode.as_ref().map(Spanned::span),
                &[SinkType::Unix],
            ),
            (
                "listen",
                s.listen.as_ref().map(Spanned::span),
                &[SinkType::Tcp],
            ),
            (
                "max_clients",
                s.max_clients.as_ref().map(Spanned::span),
                &[SinkType::Unix, SinkType::Tcp],
            ),
            (
                "buffer_bytes",
                s.buffer_bytes.as_ref().map(Spanned::span),
                &[
                    SinkType::Unix,
                    SinkType::Tcp,
                    SinkType::File,
                    SinkType::Exec,
                ],
            ),
            (
                "allow_remote",
                s.allow_remote.as_ref().map(Spanned::span),
                &[SinkType::Tcp],
            ),
            (
                "replay",
                s.replay.as_ref().map(Spanned::span),
                &[SinkType::Unix, SinkType::Tcp],
            ),
            (
                "fd_name",
                s.fd_name.as_ref().map(Spanned::span),
                &[SinkType::Unix, SinkType::Tcp],
            ),
            (
                "on_slow",
                s.on_slow.as_ref().map(Spanned::span),
                &[
                    SinkType::Unix,
                    SinkType::Tcp,
                    SinkType::Exec,
                    SinkType::Nats,
                    SinkType::Redis,
                ],
            ),
            (
                "max_block",
                s.max_block.as_ref().map(Spanned::span),
                &[
                    SinkType::Unix,
                    SinkType::Tcp,
                    SinkType::File,
                    SinkType::Exec,
                    SinkType::Nats,
                    SinkType::Redis,
                ],
            ),
            ("url", s.url.as_ref().map(Spanned::span), BROKERS),
            ("stream", s.stream.as_ref().map(Spanned::span), BROKERS),
            ("subject", s.subject.as_ref().map(Spanned::span), NATS),
            ("jetstream", s.jetstream.as_ref().map(Spanned::span), NATS),
            ("msg_id", s.msg_id.as_ref().map(Spanned::span), NATS),
            ("creds_file", s.creds_file.as_ref().map(Spanned::span), NATS),
            ("token", s.token.as_ref().map(Spanned::span), NATS),
            (
                "maxlen",
                s.maxlen.as_ref().map(Spanned::span),
                &[SinkType::Redis],
            ),
            (
                "rotate",
                s.rotate.as_ref().map(Spanned::span),
                &[SinkType::File],
            ),
            (
                "fsync",
                s.fsync.as_ref().map(Spanned::span),
                &[SinkType::File],
            ),
            (
                "command",
                s.command.as_ref().map(Spanned::span),
                &[SinkType::Exec],
            ),
            (
                "restart",
                s.restart.as_ref().map(Spanned::span),
                &[SinkType::Exec],
            ),
        ];
        for (name, span, types) in misplaced {
            if span.is_some() && !types.contains(&kind) {
                self.error(
                    span,
                    Some(format!("{key}.{name}")),
                    format!(
                        "{} {} sink has no `{name}` key; remove it or change `type`",
                        if kind == SinkType::Exec { "an" } else { "a" },
                        type_name(kind)
                    ),
                );
            }
        }
        let clientless = matches!(
            kind,
            SinkType::Stdout | SinkType::File | SinkType::Nats | SinkType::Redis
        );
        if clientless {
            if let Some(inbound) = &s.inbound {
                if *inbound.get_ref() {
                    self.error(Some(inbound.span()), Some(format!("{key}.inbound")), format!("{} has no clients to read lines from; use a unix, tcp or exec sink for inbound", type_name(kind)));
                }
            }
        }
        if kind == SinkType::Exec {
            if let Some(on_slow) = &s.on_slow {
                if *on_slow.get_ref() == OnSlow::Disconnect {
                    self.error(Some(on_slow.span()), Some(format!("{key}.on_slow")), "an exec sink has one program to write to, not clients to disconnect: use \"block\" or \"drop\"".into());
                }
            }
        }
        let filter = self.filter(s, key);
        let upstreams = s.upstreams.as_ref().map(|list| {
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
        let is_broker = BROKERS.contains(&kind);
        let (buffer, buffer_bytes) = if is_broker {
            // A broker sink's `buffer` is bytes: records vary from a few bytes to megabytes.
            let bytes = match &s.buffer {
                Some(b) => self.byte_size(b, &format!("{key}.buffer"), MAX_BUFFER_BYTES),
                None => Some(DEFAULT_BROKER_BUFFER),
            };
            (Some(MAX_QUEUE), bytes)
        } else {
            let buffer = match &s.buffer {
                Some(b) => self.record_count(b, &format!("{key}.buffer")),
                None => Some(DEFAULT_BUFFER),
            };
            let bytes = match &s.buffer_bytes {
                Some(b) => self.byte_size(b, &format!("{key}.buffer_bytes"), MAX_BUFFER_BYTES),
                None => Some(DEFAULT_BUFFER_BYTES),
            };
            (buffer, bytes)
        };
        let max_clients = match &s.max_clients {
            Some(n) => self.count(n, &format!("{key}.max_clients"), MAX_QUEUE),
            None => Some(DEFAULT_MAX_CLIENTS),
        };
        let listener = self.listener_options(s, key);
        let sink_kind = match kind {
            SinkType::Stdout => Some(SinkKind::Stdout),
            SinkType::Unix => {
                let mode = match &s.mode {
                    Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                        Ok(mode) if mode <= 0o777 => Some(mode),
                        _ => {
                            self.error(
                                Some(m.span()),
                                Some(format!("{key}.mode")),
                                format!(
                                    "{:?} is not an octal file mode; write it like \"0660\"",
                                    m.get_ref()
                                ),
                            );
                            None
                        }
                    },
                    None => Some(0o660),
                };
                if let Some(p) = &s.path {
                    let length = p.get_ref().as_os_str().len();
                    if length > MAX_SOCKET_PATH {
                        self.error(
                            Some(p.span()),
                            Some(format!("{key}.path")),
                            format!("is {length} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH} (sun_path), so use a shorter one such as /run/wsbridge/NAME.sock"),
                        );
                    }
                }
                match &s.path {
                    Some(p) if !p.get_ref().as_os_str().is_empty() => match (mode, max_clients) {
                        (Some(mode), Some(max_clients)) => Some(SinkKind::Unix {
                            path: p.get_ref().clone(),
                            mode,
                            max_clients,
                        }),
                        _ => None,
                    },
                    _ => {
                        self.error(
                            Some(s.kind.span()),
                            Some(format!("{key}.path")),
                            "a unix sink needs `path`, the socket file to create".into(),
                        );
                        None
                    }
                }
            }
            SinkType::Tcp => {
                let listen = match &s.listen {
                    Some(l) => self.socket_addr(l, &format!("{key}.listen")),
                    None => {
                        self.error(
                            Some(s.kind.span()),
                            Some(format!("{key}.listen")),
                            "a tcp sink needs `listen`, such as \"127.0.0.1:7001\"".into(),
                        );
                        None
                    }
                };
                if let (Some(addr), Some(l)) = (listen, &s.listen) {
                    let allowed = s.allow_remote.as_ref().is_some_and(|a| *a.get_ref());
                    if !addr.ip().is_loopback() && !allowed {
                        self.error(Some(l.span()), Some(format!("{key}.listen")), format!("{addr} is not a loopback address: anyone who can reach it could read the feed and write upstream; set allow_remote = true if that is intended"));
                    }
                }
                match (listen, max_clients) {
                    (Some(listen), Some(max_clients)) => Some(SinkKind::Tcp {
                        listen,
                        max_clients,
                    }),
                    _ => None,
                }
            }
            SinkType::Nats => self.nats(s, key, upstreams.as_deref(), upstream_names),
            SinkType::Redis => self.redis(s, key),
            SinkType::File => self.file_kind(s, key),
            SinkType::Exec => self.exec_kind(s, key),
        };
        let on_slow = match kind {
            // One reader, the pipe or the disk: it is always backpressure.
            SinkType::Stdout | SinkType::File => OnSlow::Block,
            SinkType::Exec => s.on_slow.as_ref().map_or(OnSlow::Block, |o| *o.get_ref()),
            SinkType::Nats | SinkType::Redis => self.broker_on_slow(s, key),
            SinkType::Unix | SinkType::Tcp => {
                s.on_slow.as_ref().map(|o| *o.get_ref()).unwrap_or_default()
            }
        };
        let max_block = match &s.max_block {
            None => Some(DEFAULT_MAX_BLOCK),
            Some(text) => self
                .duration(text, &format!("{key}.max_block"))
                .filter(|d| !d.is_zero()),
        };
        if self.errors.len() > before {
            return None;
        }
        Some(SinkConfig {
            kind: sink_kind?,
            upstreams,
            format: s.format.unwrap_or_default(),
            events: s.events.unwrap_or(true),
            parse_json: s.parse_json.unwrap_or(false),
            buffer: buffer?,
            buffer_bytes: buffer_bytes?,
            on_slow,
            max_block,
            // A program's output is sent upstream only when asked for: a legacy tool's
            // chatter is logged instead.
            inbound: match kind {
                SinkType::Stdout | SinkType::File | SinkType::Nats | SinkType::Redis => false,
                SinkType::Exec => s.inbound.as_ref().is_some_and(|i| *i.get_ref()),
                SinkType::Unix | SinkType::Tcp => s.inbound.as_ref().is_none_or(|i| *i.get_ref()),
            },
            filter: filter.ok()?,
            listener: listener?,
        })
    }

    /// `replay` and `fd_name` (whether the type takes them is checked with the other keys).
    fn listener_options(&mut self, s: &RawSink, key: &str) -> Option<ListenerOptions> {
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
            replay: replay?,
            fd_name,
        })
    }
}

/// The sink types that publish to a broker.
const BROKERS: &[SinkType] = &[SinkType::Nats, SinkType::Redis];
/// `max_block` when the config does not say.
const DEFAULT_MAX_BLOCK: std::time::Duration = std::time::Duration::from_secs(1);
const NATS: &[SinkType] = &[SinkType::Nats];

/// The longest unix socket path: `sun_path` holds 108 bytes, one of them the closing NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What identifies a socket file, so two spellings of one path (`/x/d.sock`, `/x/./d.sock`,
/// `/x/../x/d.sock`, a symlinked directory) clash: the parent directory resolved by the file
/// system when it exists, else the path with `.` and `..` removed as written.
pub(super) fn socket_file_identity(path: &Path) -> PathBuf {
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

/// A type-specific sink key: its name, where it was written (if it was) and the types that use it.
type KeyRule<'a> = (&'a str, Option<Range<usize>>, &'a [SinkType]);

pub(super) fn type_name(kind: SinkType) -> &'static str {
    match kind {
        SinkType::Stdout => "stdout",
        SinkType::Unix => "unix",
        SinkType::Tcp => "tcp",
        SinkType::Nats => "nats",
        SinkType::Redis => "redis",
        SinkType::File => "file",
        SinkType::Exec => "exec",
    }
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
