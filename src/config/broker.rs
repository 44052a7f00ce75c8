//! The validated settings of the sinks that publish to a broker another host reads: `nats`
//! (core NATS or JetStream) and `redis` (Redis Streams).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::redact::{redact_url, Secret};
use super::ReconnectPolicy;
use crate::jq::Program;

/// What `{upstream}` in a subject or stream name stands for.
pub const UPSTREAM_PLACEHOLDER: &str = "{upstream}";

/// What `{instance}` in a redis sink's stream stands for: `[cluster] instance`, replaced
/// when the config is validated.
pub const INSTANCE_PLACEHOLDER: &str = "{instance}";

/// A `type = "nats"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// The server (`nats://host:4222`); may hold a user and password: print it with
    /// [`NatsConfig::display_url`].
    pub url: Url,
    /// The subject, with `{upstream}` replaced per record (`{instance}` is replaced at load).
    pub subject: String,
    /// The subject as written, `{instance}` included: what the sink's identity in message
    /// ids hashes, so that instances of one config make the same ids.
    pub subject_template: String,
    /// `Some`: publish into this JetStream stream and wait for acknowledgements; `None`:
    /// core NATS publish (no acknowledgement, no deduplication).
    pub jetstream: Option<JetStreamConfig>,
    /// How `Nats-Msg-Id` is made.
    pub msg_id: MsgId,
    /// How wsbridge proves who it is, besides a user and password in the URL.
    pub auth: NatsAuth,
}

impl NatsConfig {
    /// The URL without its password, for logs and `check`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// What a nats sink puts in `Nats-Msg-Id`, the key JetStream deduplicates on within the
/// stream's `duplicate_window`. Every form starts with the upstream and the sink's identity
/// (a hash of what makes its messages, see `crate::sink::nats`), so two sinks writing into
/// one stream never share an id.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MsgId {
    /// `{upstream}:{sink}:{run}:{seq}`: unique per record of this daemon (the run is random
    /// per process, seq never restarts within it); a retry of this daemon is stored once.
    #[default]
    Seq,
    /// `{upstream}:{sink}:{hash of the record without seq and ts}`: several daemons on one feed
    /// are stored once; so is an identical payload repeated within the window.
    Content,
    /// `{upstream}:{sink}:{the program's output}`: the id the message carries (a trade id),
    /// the same in every daemon; `seq`'s form when the program gives nothing.
    Jq(Program),
}

/// A nats sink's credentials (a user and password come with the URL).
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    /// None, or the URL's user and password.
    None,
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    CredsFile(PathBuf),
    /// A token.
    Token(Secret),
}

/// The JetStream stream a nats sink publishes into, created when missing.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamConfig {
    /// Its name.
    pub name: String,
    /// The subjects it stores.
    pub subjects: Vec<String>,
    /// Messages older than this are removed; `None` = kept.
    pub max_age: Option<Duration>,
    /// The oldest messages go once the stream holds more; `None` = unbounded.
    pub max_bytes: Option<u64>,
    /// How long the server remembers a `Nats-Msg-Id` to drop a repeat of it.
    pub duplicate_window: Duration,
}

/// A `type = "redis"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// The server (`redis://host:6379/0`); may hold a password: print it with
    /// [`RedisConfig::display_url`].
    pub url: Url,
    /// The stream key, with `{upstream}` replaced per record (`{instance}` is replaced
    /// already).
    pub stream: String,
    /// `XADD … MAXLEN ~ maxlen`; 0 = unbounded.
    pub maxlen: u64,
}

impl RedisConfig {
    /// The URL without its password, for logs and `check`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// The backoff between attempts to reach a broker: the upstreams' kind, shorter, never
/// giving up (a broker that is down for a while is waited for, under `on_slow`).
pub fn broker_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
        max_attempts: 0,
        reset_after: Duration::ZERO,
    }
}

/// `template` with `{upstream}` replaced by `upstream`.
pub fn render(template: &str, upstream: &str) -> String {
    template.replace(UPSTREAM_PLACEHOLDER, upstream)
}

/// Whether NATS subject `subject` is matched by `filter` (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in filter.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(token)) if want == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Why `subject` is not a subject a message can be published to, if it is not.
pub fn invalid_subject(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        return Some("is empty");
    }
    if subject.chars().any(char::is_whitespace) {
        return Some("holds white space");
    }
    if subject.split('.').any(str::is_empty) {
        return Some("has an empty token (two dots, or a dot at an end)");
    }
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Some("holds a wildcard (* or >), which only streams and readers may use");
    }
    None
}

impl NatsConfig {
    /// Its lines in `check`'s plan (no secret: the URL's password and the token are hidden).
    pub fn plan(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  url            {}", self.display_url())?;
        writeln!(f, "  subject        {}", self.subject)?;
        match (&self.auth, self.url.username().is_empty()) {
            (NatsAuth::None, false) => {
                writeln!(f, "  auth           user and password from the URL")?
            }
            (auth, _) => writeln!(f, "  auth           {auth}")?,
        }
        match &self.jetstream {
            None => writeln!(f, "  publish        core NATS (no acknowledgement)"),
            Some(js) => {
                let msg_id = match &self.msg_id {
                    MsgId::Seq => "{upstream}:{sink}:{run}:{seq}".to_string(),
                    MsgId::Content => "{upstream}:{sink}:{hash of the payload}".to_string(),
                    MsgId::Jq(program) => format!(
                        "{{upstream}}:{{sink}}:{{jq {:?}}} (else {{upstream}}:{{sink}}:{{run}}:{{seq}})",
                        program.source()
                    ),
                };
                let age = js.max_age.map_or("unlimited".into(), |d| {
                    crate::duration::human(d).to_string()
                });
                let bytes = js
                    .max_bytes
                    .map_or("unlimited".into(), |b| super::plan::size(b as usize));
                writeln!(
                    f,
                    "  publish        JetStream with acknowledgements, Nats-Msg-Id {msg_id}"
                )?;
                writeln!(
                    f,
                    "  stream         {} (created when missing), subjects {}, max_age {age}, max_bytes {bytes}, duplicate_window {}",
                    js.name,
                    js.subjects.join(", "),
                    crate::duration::human(js.duplicate_window)
                )
            }
        }
    }
}

impl RedisConfig {
    /// Its lines in `check`'s plan (the URL's password hidden).
    pub fn plan(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  url            {}", self.display_url())?;
        let maxlen = if self.maxlen == 0 {
            "unbounded".to_string()
        } else {
            format!("MAXLEN ~ {}", self.maxlen)
        };
        writeln!(f, "  stream         {} (XADD, {maxlen})", self.stream)
    }
}

impl fmt::Display for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("none"),
            NatsAuth::CredsFile(path) => write!(f, "creds_file {}", path.display()),
            NatsAuth::Token(_) => f.write_str("token <redacted>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_as_nats_does() {
        assert!(subject_matches("wsbridge.>", "wsbridge.trades"));
        assert!(subject_matches("wsbridge.>", "wsbridge.a.b"));
        assert!(!subject_matches("wsbridge.>", "wsbridge"));
        assert!(subject_matches("wsbridge.*", "wsbridge.trades"));
        assert!(!subject_matches("wsbridge.*", "wsbridge.a.b"));
        assert!(subject_matches("x.y", "x.y"));
        assert!(!subject_matches("x.y", "x.y.z"));
        assert_eq!(
            invalid_subject("a..b"),
            Some("has an empty token (two dots, or a dot at an end)")
        );
        assert!(invalid_subject("wsbridge.trades").is_none());
    }
}
