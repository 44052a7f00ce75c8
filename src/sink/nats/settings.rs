//! `type = "nats"`: its keys (server, credentials with `${VAR}`, subject per upstream, the
//! JetStream stream, `msg_id`), their validation, its `check` lines and its binding.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, Format, Secret, SinkCheck, SinkConfig};
use crate::sink::broker::settings::{
    plan_buffer, render, RawJetStream, RawStream, BROKER, UPSTREAM_PLACEHOLDER,
};
use crate::sink::registry::SinkComponent;
use crate::sink::{run_broker, BoundSink, SinkError};

/// The nats sink type.
pub struct Nats;

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_SUBJECT: &str = "wsbridge.{upstream}";
const DEFAULT_STREAM_NAME: &str = "WSBRIDGE";
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsKeys {
    pub url: Option<Spanned<String>>,
    pub stream: Option<Spanned<RawStream>>,
    pub subject: Option<Spanned<String>>,
    pub jetstream: Option<Spanned<bool>>,
    pub msg_id: Option<Spanned<MsgId>>,
    pub creds_file: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

/// What a nats sink puts in `Nats-Msg-Id`, the key JetStream deduplicates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MsgId {
    /// `{upstream}:{run}:{seq}`: a retry of this daemon is stored once.
    #[default]
    Seq,
    /// `{upstream}:{hash of the payload}`: several daemons on one feed are stored once.
    Content,
}

/// A `type = "nats"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// The server (`nats://host:4222`); may hold a user and password: print it with
    /// [`NatsConfig::display_url`].
    pub url: Url,
    /// The subject, with `{upstream}` replaced per record.
    pub subject: String,
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
                let msg_id = match self.msg_id {
                    MsgId::Seq => "{upstream}:{run}:{seq}",
                    MsgId::Content => "{upstream}:{hash of the payload}",
                };
                let age = js.max_age.map_or("unlimited".into(), |d| {
                    crate::duration::human(d).to_string()
                });
                let bytes = js.max_bytes.map_or("unlimited".into(), |b| {
                    crate::config::plan::size(b as usize)
                });
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

impl fmt::Display for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("none"),
            NatsAuth::CredsFile(path) => write!(f, "creds_file {}", path.display()),
            NatsAuth::Token(_) => f.write_str("token <redacted>"),
        }
    }
}

impl SinkSettings for NatsConfig {
    fn name(&self) -> String {
        // The host, never the user or password.
        format!("nats:{}@{}", self.subject, host(&self.url))
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        NatsConfig::plan(self, f)
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        plan_buffer(sink, f)
    }
}

/// `host:port` of a broker URL, for a sink's name.
pub(in crate::sink) fn host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

impl SinkType for Nats {
    const NAME: &'static str = "nats";
    const SHARED: Shared = BROKER;
    type Keys = NatsKeys;
    type Settings = NatsConfig;

    /// A nats sink's settings; `routed` is its `upstreams` (`None` = every upstream).
    fn validate(s: NatsKeys, check: &mut SinkCheck<'_, '_>) -> Option<NatsConfig> {
        let key = &check.sink_key().to_string();
        let s = &s;
        let before = check.error_count();
        let url = check.url(s.url.as_ref(), DEFAULT_NATS_URL, &["nats", "tls"]);
        let subject = s
            .subject
            .as_ref()
            .map_or(DEFAULT_SUBJECT.to_string(), |t| t.get_ref().clone());
        let subject_span = s
            .subject
            .as_ref()
            .map(Spanned::span)
            .or(Some(check.type_span()));
        let routed: Vec<String> = check.routed().to_vec();
        let routed: Vec<&str> = routed.iter().map(String::as_str).collect();
        for upstream in &routed {
            let rendered = render(&subject, upstream);
            if let Some(why) = invalid_subject(&rendered) {
                check.error(
                    subject_span.clone(),
                    Some(format!("{key}.subject")),
                    format!("the subject for upstream {upstream:?} is {rendered:?}, which {why}; NATS subjects are tokens of letters, digits, - and _ joined by dots"),
                );
            }
        }
        let jetstream_on = s.jetstream.as_ref().is_some_and(|j| *j.get_ref());
        if !jetstream_on {
            for (name, span) in [
                ("stream", s.stream.as_ref().map(Spanned::span)),
                ("msg_id", s.msg_id.as_ref().map(Spanned::span)),
            ] {
                if span.is_some() {
                    check.error(
                        span,
                        Some(format!("{key}.{name}")),
                        format!(
                            "`{name}` applies to JetStream only; set jetstream = true or remove it"
                        ),
                    );
                }
            }
        }
        let jetstream = if jetstream_on {
            jetstream(check, s, key, &subject, &routed)
        } else {
            None
        };
        let auth = nats_auth(check, s, key, url.as_ref());
        if check.error_count() > before {
            return None;
        }
        Some(NatsConfig {
            url: url?,
            subject,
            jetstream: if jetstream_on { Some(jetstream?) } else { None },
            msg_id: s.msg_id.as_ref().map(|m| *m.get_ref()).unwrap_or_default(),
            auth: auth?,
        })
    }
}

impl SinkComponent for Nats {
    fn bind(config: &SinkConfig, nats: &NatsConfig) -> Result<BoundSink, SinkError> {
        let publisher =
            super::NatsPublisher::new(Arc::new(nats.clone()), config.format == Format::Ndjson);
        Ok(BoundSink::new(move |ctx| run_broker(ctx, publisher)))
    }
}

fn jetstream(
    check: &mut SinkCheck<'_, '_>,
    s: &NatsKeys,
    key: &str,
    subject: &str,
    routed: &[&str],
) -> Option<JetStreamConfig> {
    let skey = format!("{key}.stream");
    let span = s
        .stream
        .as_ref()
        .map(Spanned::span)
        .or(Some(check.type_span()));
    let empty = RawJetStream {
        name: None,
        subjects: None,
        max_age: None,
        max_bytes: None,
        duplicate_window: None,
    };
    let raw = match s.stream.as_ref().map(Spanned::get_ref) {
        None => &empty,
        Some(RawStream::JetStream(t)) => t,
        Some(RawStream::Name(_)) => {
            check.error(span, Some(skey), "a nats sink's stream is a table such as { name = \"WSBRIDGE\", subjects = [\"wsbridge.>\"] }".into());
            return None;
        }
    };
    let before = check.error_count();
    let name = raw.name.clone().unwrap_or(DEFAULT_STREAM_NAME.into());
    if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
        check.error(
            span.clone(),
            Some(format!("{skey}.name")),
            format!("{name:?} is not a JetStream stream name; use letters, digits, - and _"),
        );
    }
    // By default the stream takes every upstream's subject: `{upstream}` as one token.
    let subjects = raw
        .subjects
        .clone()
        .unwrap_or_else(|| vec![subject.replace(UPSTREAM_PLACEHOLDER, "*")]);
    for upstream in routed {
        let rendered = render(subject, upstream);
        if !subjects.iter().any(|f| subject_matches(f, &rendered)) {
            check.error(
                span.clone(),
                Some(format!("{skey}.subjects")),
                format!("the stream's subjects ({}) do not take {rendered:?}, the subject of upstream {upstream:?}; add it (or a wildcard such as \"wsbridge.>\")", subjects.join(", ")),
            );
        }
    }
    let duration = |v: &mut SinkCheck<'_, '_>, text: &Option<String>, field: &str| {
        let text = text.as_ref()?;
        match crate::config::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(Some(d)),
            Ok(_) => {
                v.error(
                    span.clone(),
                    Some(format!("{skey}.{field}")),
                    "must be longer than zero".into(),
                );
                None
            }
            Err(message) => {
                v.error(span.clone(), Some(format!("{skey}.{field}")), message);
                None
            }
        }
    };
    let max_age = duration(check, &raw.max_age, "max_age");
    let window = duration(check, &raw.duplicate_window, "duplicate_window");
    let max_bytes = match &raw.max_bytes {
        None => None,
        Some(size) => {
            let spanned = Spanned::new(span.clone().unwrap_or(0..0), size.clone());
            check
                .byte_size(&spanned, &format!("{skey}.max_bytes"), usize::MAX)
                .map(|b| b as u64)
        }
    };
    if check.error_count() > before {
        return None;
    }
    Some(JetStreamConfig {
        name,
        subjects,
        max_age: max_age.flatten(),
        max_bytes,
        duplicate_window: window.flatten().unwrap_or(DEFAULT_DUPLICATE_WINDOW),
    })
}

fn nats_auth(
    check: &mut SinkCheck<'_, '_>,
    s: &NatsKeys,
    key: &str,
    url: Option<&Url>,
) -> Option<NatsAuth> {
    let in_url = url.is_some_and(|u| !u.username().is_empty());
    let given = [s.creds_file.is_some(), s.token.is_some(), in_url];
    if given.iter().filter(|g| **g).count() > 1 {
        let span = s
            .token
            .as_ref()
            .or(s.creds_file.as_ref())
            .map(Spanned::span);
        check.error(
            span,
            Some(key.into()),
            "give one way to authenticate: creds_file, token, or a user and password in the URL"
                .into(),
        );
        return None;
    }
    if let Some(path) = &s.creds_file {
        let expanded = check.expanded(path, &format!("{key}.creds_file"))?;
        if let Err(e) = std::fs::metadata(&expanded) {
            check.error(
                Some(path.span()),
                Some(format!("{key}.creds_file")),
                format!("cannot read {expanded}: {e}; give the .creds file that nsc wrote for this user"),
            );
            return None;
        }
        return Some(NatsAuth::CredsFile(expanded.into()));
    }
    if let Some(token) = &s.token {
        let expanded = check.expanded(token, &format!("{key}.token"))?;
        return Some(NatsAuth::Token(Secret::new(expanded)));
    }
    Some(NatsAuth::None)
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
