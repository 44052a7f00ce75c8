//! `type = "redis"`: its keys (server with `${VAR}`, stream key per upstream, `maxlen`),
//! their validation, its `check` lines and its binding.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, Format, SinkCheck, SinkConfig};
use crate::sink::broker::settings::{plan_buffer, RawStream, BROKER};
use crate::sink::nats::settings::host;
use crate::sink::registry::SinkComponent;
use crate::sink::{run_broker, BoundSink, SinkError};

/// The redis sink type.
pub struct Redis;

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_REDIS_STREAM: &str = "wsbridge:{upstream}";
const DEFAULT_MAXLEN: u64 = 1_000_000;

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisKeys {
    pub url: Option<Spanned<String>>,
    pub stream: Option<Spanned<RawStream>>,
    pub maxlen: Option<Spanned<i64>>,
}

/// A `type = "redis"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// The server (`redis://host:6379/0`); may hold a password: print it with
    /// [`RedisConfig::display_url`].
    pub url: Url,
    /// The stream key, with `{upstream}` replaced per record.
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

impl SinkSettings for RedisConfig {
    fn name(&self) -> String {
        // The host, never the user or password.
        format!("redis:{}@{}", self.stream, host(&self.url))
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RedisConfig::plan(self, f)
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        plan_buffer(sink, f)
    }
}

impl SinkType for Redis {
    const NAME: &'static str = "redis";
    const SHARED: Shared = BROKER;
    type Keys = RedisKeys;
    type Settings = RedisConfig;

    /// A redis sink's settings.
    fn validate(s: RedisKeys, check: &mut SinkCheck<'_, '_>) -> Option<RedisConfig> {
        let key = &check.sink_key().to_string();
        let before = check.error_count();
        let url = check.url(s.url.as_ref(), DEFAULT_REDIS_URL, &["redis"]);
        if check.format() == Some(Format::Raw) {
            check.error(
                Some(check.type_span()),
                Some(format!("{key}.format")),
                "a redis entry has the fields upstream, seq, ts, type and data, so format = \"raw\" means nothing here; remove it".into(),
            );
        }
        let stream = match s.stream.as_ref().map(|t| (t.span(), t.get_ref())) {
            None => DEFAULT_REDIS_STREAM.to_string(),
            Some((_, RawStream::Name(name))) if !name.is_empty() => name.clone(),
            Some((span, _)) => {
                check.error(
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
                    check.error(
                        Some(n.span()),
                        Some(format!("{key}.maxlen")),
                        "must be 0 (unbounded) or more".into(),
                    );
                    None
                }
            },
        };
        if check.error_count() > before {
            return None;
        }
        Some(RedisConfig {
            url: url?,
            stream,
            maxlen: maxlen?,
        })
    }
}

impl SinkComponent for Redis {
    fn bind(_: &SinkConfig, redis: &RedisConfig) -> Result<BoundSink, SinkError> {
        let publisher = super::RedisPublisher::new(Arc::new(redis.clone()))?;
        Ok(BoundSink::new(move |ctx| run_broker(ctx, publisher)))
    }
}
