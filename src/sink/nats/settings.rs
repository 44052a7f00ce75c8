//! `type = "nats"`: its keys (server, credentials with `${VAR}`, subject per upstream, the
//! JetStream stream, `msg_id`), their validation, its `check` lines and its binding.

use std::fmt;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::auth::NatsAuth;
use super::msg_id::{MsgId, RawMsgId};
use crate::config::cluster::INSTANCE_PLACEHOLDER;
use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, SinkCheck, SinkConfig};
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
    pub msg_id: Option<Spanned<RawMsgId>>,
    pub creds_file: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

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
                let msg_id = self.msg_id.shown();
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
        let template = s
            .subject
            .as_ref()
            .map_or(DEFAULT_SUBJECT.to_string(), |t| t.get_ref().clone());
        let subject_span = s
            .subject
            .as_ref()
            .map(Spanned::span)
            .unwrap_or(check.type_span());
        let subject = check.instance(&template, subject_span.clone(), &format!("{key}.subject"));
        let subject_span = Some(subject_span);
        let routed: Vec<String> = check.routed().to_vec();
        let routed: Vec<&str> = routed.iter().map(String::as_str).collect();
        // `None`: `{instance}` without `[cluster]`, already reported.
        if let Some(subject) = &subject {
            for upstream in &routed {
                let rendered = render(subject, upstream);
                if let Some(why) = invalid_subject(&rendered) {
                    check.error(
                        subject_span.clone(),
                        Some(format!("{key}.subject")),
                        format!("the subject for upstream {upstream:?} is {rendered:?}, which {why}; NATS subjects are tokens of letters, digits, - and _ joined by dots"),
                    );
                }
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
        let subject = subject?;
        let jetstream = if jetstream_on {
            jetstream(check, s, key, (&template, &subject), &routed)
        } else {
            None
        };
        let auth = super::auth::validate(check, s, key, url.as_ref());
        let msg_id = super::msg_id::validate(s.msg_id.as_ref(), check);
        if check.error_count() > before {
            return None;
        }
        Some(NatsConfig {
            url: url?,
            subject,
            subject_template: template,
            jetstream: if jetstream_on { Some(jetstream?) } else { None },
            msg_id: msg_id?,
            auth: auth?,
        })
    }
}

impl SinkComponent for Nats {
    fn bind(config: &SinkConfig, nats: &NatsConfig) -> Result<BoundSink, SinkError> {
        let mut publisher = super::NatsPublisher::new(Arc::new(nats.clone()), config);
        Ok(BoundSink::new(move |ctx| {
            publisher.count_into(ctx.stats.clone());
            run_broker(ctx, publisher)
        }))
    }
}

fn jetstream(
    check: &mut SinkCheck<'_, '_>,
    s: &NatsKeys,
    key: &str,
    (template, subject): (&str, &str),
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
    // By default the stream takes every upstream's subject: `{upstream}` as one token, and
    // `{instance}` too, so every instance of one config asks for the same stream.
    let subjects = raw.subjects.clone().unwrap_or_else(|| {
        vec![template
            .replace(UPSTREAM_PLACEHOLDER, "*")
            .replace(INSTANCE_PLACEHOLDER, "*")]
    });
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
