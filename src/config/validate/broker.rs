//! Validation of the keys of `nats` and `redis` sinks: the server URL and credentials (with
//! `${VAR}`), the subject or stream name per upstream, the JetStream stream, `on_slow`.

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::broker::{
    invalid_subject, render, subject_matches, JetStreamConfig, NatsAuth, NatsConfig, RedisConfig,
    UPSTREAM_PLACEHOLDER,
};
use crate::config::expand::expand_env;
use crate::config::raw::{RawJetStream, RawMsgId, RawSink, RawSize, RawStream};
use crate::config::{Format, MsgId, OnSlow, Secret, SinkKind, MAX_QUEUE};

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_SUBJECT: &str = "wsbridge.{upstream}";
const DEFAULT_STREAM_NAME: &str = "WSBRIDGE";
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_REDIS_STREAM: &str = "wsbridge:{upstream}";
const DEFAULT_MAXLEN: u64 = 1_000_000;

impl Validator<'_> {
    /// A nats sink's settings; `routed` is its `upstreams` (`None` = every upstream).
    pub(super) fn nats(
        &mut self,
        s: &RawSink,
        key: &str,
        routed: Option<&[String]>,
        names: &HashSet<String>,
    ) -> Option<SinkKind> {
        let before = self.errors.len();
        let url = self.broker_url(s, key, DEFAULT_NATS_URL, &["nats", "tls"]);
        let subject = s
            .subject
            .as_ref()
            .map_or(DEFAULT_SUBJECT.to_string(), |t| t.get_ref().clone());
        let subject_span = s
            .subject
            .as_ref()
            .map(Spanned::span)
            .or(Some(s.kind.span()));
        let mut routed: Vec<&str> = match routed {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => names.iter().map(String::as_str).collect(),
        };
        routed.sort_unstable();
        for upstream in &routed {
            let rendered = render(&subject, upstream);
            if let Some(why) = invalid_subject(&rendered) {
                self.error(
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
                    self.error(
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
            self.jetstream(s, key, &subject, &routed)
        } else {
            None
        };
        let auth = self.nats_auth(s, key, url.as_ref());
        let msg_id = self.msg_id(s, key);
        if self.errors.len() > before {
            return None;
        }
        Some(SinkKind::Nats(Box::new(NatsConfig {
            url: url?,
            subject_template: subject.clone(),
            subject,
            jetstream: if jetstream_on { Some(jetstream?) } else { None },
            msg_id: msg_id?,
            auth: auth?,
        })))
    }

    /// `msg_id`: a name, or a jq program compiled here so a mistake is reported at its place.
    fn msg_id(&mut self, s: &RawSink, key: &str) -> Option<MsgId> {
        let Some(raw) = &s.msg_id else {
            return Some(MsgId::default());
        };
        let mkey = format!("{key}.msg_id");
        match raw.get_ref() {
            RawMsgId::Name(name) => match name.as_str() {
                "seq" => Some(MsgId::Seq),
                "content" => Some(MsgId::Content),
                other => {
                    self.error(
                        Some(raw.span()),
                        Some(mkey),
                        format!("{other:?} is not a msg_id; use \"seq\", \"content\" or {{ jq = \"PROGRAM\" }}"),
                    );
                    None
                }
            },
            RawMsgId::Jq { jq } => {
                let text = Spanned::new(raw.span(), jq.clone());
                self.jq_program(&text, format!("{mkey}.jq"))
                    .ok()
                    .map(MsgId::Jq)
            }
        }
    }

    fn jetstream(
        &mut self,
        s: &RawSink,
        key: &str,
        subject: &str,
        routed: &[&str],
    ) -> Option<JetStreamConfig> {
        let skey = format!("{key}.stream");
        let span = s.stream.as_ref().map(Spanned::span).or(Some(s.kind.span()));
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
                self.error(span, Some(skey), "a nats sink's stream is a table such as { name = \"WSBRIDGE\", subjects = [\"wsbridge.>\"] }".into());
                return None;
            }
        };
        let before = self.errors.len();
        let name = raw.name.clone().unwrap_or(DEFAULT_STREAM_NAME.into());
        if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
            self.error(
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
                self.error(
                    span.clone(),
                    Some(format!("{skey}.subjects")),
                    format!("the stream's subjects ({}) do not take {rendered:?}, the subject of upstream {upstream:?}; add it (or a wildcard such as \"wsbridge.>\")", subjects.join(", ")),
                );
            }
        }
        let duration = |v: &mut Validator<'_>, text: &Option<String>, field: &str| {
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
        let max_age = duration(self, &raw.max_age, "max_age");
        let window = duration(self, &raw.duplicate_window, "duplicate_window");
        let max_bytes = match &raw.max_bytes {
            None => None,
            Some(size) => {
                let spanned = Spanned::new(span.clone().unwrap_or(0..0), size.clone());
                self.byte_size(&spanned, &format!("{skey}.max_bytes"), usize::MAX)
                    .map(|b| b as u64)
            }
        };
        if self.errors.len() > before {
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

    fn nats_auth(&mut self, s: &RawSink, key: &str, url: Option<&Url>) -> Option<NatsAuth> {
        let in_url = url.is_some_and(|u| !u.username().is_empty());
        let given = [s.creds_file.is_some(), s.token.is_some(), in_url];
        if given.iter().filter(|g| **g).count() > 1 {
            let span = s
                .token
                .as_ref()
                .or(s.creds_file.as_ref())
                .map(Spanned::span);
            self.error(span, Some(key.into()), "give one way to authenticate: creds_file, token, or a user and password in the URL".into());
            return None;
        }
        if let Some(path) = &s.creds_file {
            let expanded = self.expanded(path, &format!("{key}.creds_file"))?;
            if let Err(e) = std::fs::metadata(&expanded) {
                self.error(
                    Some(path.span()),
                    Some(format!("{key}.creds_file")),
                    format!("cannot read {expanded}: {e}; give the .creds file that nsc wrote for this user"),
                );
                return None;
            }
            return Some(NatsAuth::CredsFile(expanded.into()));
        }
        if let Some(token) = &s.token {
            let expanded = self.expanded(token, &format!("{key}.token"))?;
            return Some(NatsAuth::Token(Secret::new(expanded)));
        }
        Some(NatsAuth::None)
    }

    /// A redis sink's settings.
    pub(super) fn redis(&mut self, s: &RawSink, key: &str) -> Option<SinkKind> {
        let before = self.errors.len();
        let url = self.broker_url(s, key, DEFAULT_REDIS_URL, &["redis"]);
        if s.format == Some(Format::Raw) {
            self.error(
                Some(s.kind.span()),
                Some(format!("{key}.format")),
                "a redis entry has the fields upstream, seq, ts, type and data, so format = \"raw\" means nothing here; remove it".into(),
            );
        }
        let stream = match s.stream.as_ref().map(|t| (t.span(), t.get_ref())) {
            None => DEFAULT_REDIS_STREAM.to_string(),
            Some((_, RawStream::Name(name))) if !name.is_empty() => name.clone(),
            Some((span, _)) => {
                self.error(
                    Some(span),
                    Some(format!("{key}.stream")),
                    "a redis sink's stream is a key name such as \"wsbridge:{upstream}\"".into(),
                );
                return None;
            }
        };
        let maxlen = match &s.maxlen {
            None => Some(DEFAULT_MAXLEN),
            Some(n) => match u64::try_from(*n.get_ref()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(
                        Some(n.span()),
                        Some(format!("{key}.maxlen")),
                        "must be 0 (unbounded) or more".into(),
                    );
                    None
                }
            },
        };
        if self.errors.len() > before {
            return None;
        }
        Some(SinkKind::Redis(Box::new(RedisConfig {
            url: url?,
            stream,
            maxlen: maxlen?,
        })))
    }

    /// `on_slow` of a broker sink: `block` (the default) or `drop`.
    pub(super) fn broker_on_slow(&mut self, s: &RawSink, key: &str) -> OnSlow {
        match &s.on_slow {
            None => OnSlow::Block,
            Some(o) if *o.get_ref() == OnSlow::Disconnect => {
                self.error(
                    Some(o.span()),
                    Some(format!("{key}.on_slow")),
                    "a broker sink has no clients to disconnect; use \"block\" (backpressure) or \"drop\" (count)".into(),
                );
                OnSlow::Block
            }
            Some(o) => *o.get_ref(),
        }
    }

    /// A unix or tcp `buffer`: a number of records.
    pub(super) fn record_count(&mut self, b: &Spanned<RawSize>, key: &str) -> Option<usize> {
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

    fn broker_url(
        &mut self,
        s: &RawSink,
        key: &str,
        default: &str,
        schemes: &[&str],
    ) -> Option<Url> {
        let ukey = format!("{key}.url");
        let text = match &s.url {
            Some(u) => self.expanded(u, &ukey)?,
            None => default.to_string(),
        };
        let span = s.url.as_ref().map(Spanned::span);
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

    fn expanded(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        match expand_env(value.get_ref(), self.env) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(Some(value.span()), Some(key.into()), message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::plan::Plan;
    use crate::config::Config;

    const HEAD: &str = "[[upstream]]\nname = \"trades\"\nurl = \"ws://127.0.0.1:1/\"\n";

    fn parse(sink: &str) -> Result<Config, String> {
        let env = |name: &str| (name == "SECRET").then(|| "hunter2".to_string());
        Config::parse_with_env(
            &format!("{HEAD}[[sink]]\n{sink}"),
            Path::new("t.toml"),
            &env,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn check_shows_the_plan_without_secrets() {
        for sink in [
            "type = \"nats\"\nurl = \"nats://bob:${SECRET}@127.0.0.1:4222\"\njetstream = true",
            "type = \"nats\"\ntoken = \"${SECRET}\"",
            "type = \"redis\"\nurl = \"redis://:${SECRET}@127.0.0.1:6379/0\"",
        ] {
            let config = parse(sink).unwrap();
            let plan = Plan(&config).to_string();
            assert!(!plan.contains("hunter2"), "{plan}");
            assert!(plan.contains("on_slow block"), "{plan}");
        }
    }

    #[test]
    fn mistakes_are_named_at_their_key() {
        let cases = [
            ("type = \"nats\"\non_slow = \"disconnect\"", "sink[0].on_slow"),
            ("type = \"nats\"\nstream = { name = \"S\" }", "sink[0].stream"),
            ("type = \"nats\"\njetstream = true\nsubject = \"a.{upstream}\"\nstream = { subjects = [\"b.>\"] }", "sink[0].stream.subjects"),
            ("type = \"nats\"\nsubject = \"a..{upstream}\"", "sink[0].subject"),
            ("type = \"nats\"\ntoken = \"x\"\nurl = \"nats://u:p@h:4222\"", "sink[0]"),
            ("type = \"redis\"\nmaxlen = -1", "sink[0].maxlen"),
            ("type = \"redis\"\nformat = \"raw\"", "sink[0].format"),
            ("type = \"redis\"\nsubject = \"x\"", "sink[0].subject"),
            ("type = \"redis\"\nurl = \"http://h/\"", "sink[0].url"),
            ("type = \"tcp\"\nlisten = \"127.0.0.1:0\"\nbuffer = \"1MiB\"", "sink[0].buffer"),
        ];
        for (sink, key) in cases {
            let error = parse(sink).expect_err(sink);
            assert!(error.contains(&format!("{key}:")), "{sink}: {error}");
        }
    }
}
