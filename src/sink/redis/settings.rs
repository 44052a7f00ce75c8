//! `type = "redis"`: its keys (server with `${VAR}`, stream key per upstream, `maxlen`),
//! their validation, its `check` lines and its binding.
//!
//! One writer per key: a redis sink's entry IDs are only safe from a single writer (another
//! one's entries make its records refused), so `{instance}` in `stream` names the `[cluster]`
//! instance, and a config is refused where two writers could add to one key: two redis sinks
//! whose keys meet on one server and database, or an upstream with `replicas > 1` into a key
//! that does not name the instance.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::cluster::INSTANCE_PLACEHOLDER;
use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{redact_url, Format, SinkCheck, SinkConfig};
use crate::sink::broker::settings::{plan_buffer, render, RawStream, BROKER};
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
        let skey = format!("{key}.stream");
        // Where the key is, or `type` when it is not written.
        let span = s.stream.as_ref().map_or(check.type_span(), Spanned::span);
        let template = match s.stream.as_ref().map(|t| (t.span(), t.get_ref())) {
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
        let stream = check.instance(&template, span.clone(), &skey);
        if check.error_count() > before {
            return None;
        }
        let (url, stream) = (url?, stream?);
        one_writer(check, &url, &stream, &template, span, skey);
        Some(RedisConfig {
            url,
            stream,
            maxlen: maxlen?,
        })
    }
}

/// Refuses a second writer on one key: an upstream run by several instances into a key that
/// does not name the instance, and (through claims) another redis sink's key.
fn one_writer(
    check: &mut SinkCheck<'_, '_>,
    url: &Url,
    stream: &str,
    template: &str,
    span: std::ops::Range<usize>,
    skey: String,
) {
    let routed = check.routed().to_vec();
    if !template.contains(INSTANCE_PLACEHOLDER) {
        if let Some((name, n)) = routed
            .iter()
            .map(|u| (u, check.replicas(u)))
            .find(|(_, n)| *n > 1)
        {
            check.error(
                Some(span.clone()),
                Some(skey.clone()),
                format!("upstream {name:?} runs on {n} instances at once (replicas), and each would add its records to the same stream key; put {INSTANCE_PLACEHOLDER} in the key (such as \"wsbridge:{{instance}}:{{upstream}}\") or set replicas = 1"),
            );
        }
    }
    let server = server_identity(url);
    let mut rendered: Vec<String> = routed.iter().map(|u| render(stream, u)).collect();
    rendered.sort();
    rendered.dedup();
    for key in rendered {
        check.claim_one_writer(
            format!("redis stream {server} {key}"),
            format!("stream key {key:?} on {server}"),
            span.clone(),
            skey.clone(),
            "a key takes one writer (its entry IDs would refuse each other's records): give each sink its own key",
        );
    }
}

/// The server and database a redis URL names, however it is spelt: `host:port/db`.
fn server_identity(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port().unwrap_or(6379);
    let db: u64 = url.path().trim_matches('/').parse().unwrap_or(0);
    format!("{host}:{port}/{db}")
}

impl SinkComponent for Redis {
    fn bind(_: &SinkConfig, redis: &RedisConfig) -> Result<BoundSink, SinkError> {
        let publisher = super::RedisPublisher::new(Arc::new(redis.clone()))?;
        Ok(BoundSink::new(move |ctx| run_broker(ctx, publisher)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_its_host_port_and_database() {
        let id = |u: &str| server_identity(&Url::parse(u).unwrap());
        assert_eq!(id("redis://LocalHost"), "localhost:6379/0");
        assert_eq!(id("redis://:pw@h:6379/0"), id("redis://h/"));
        assert_ne!(id("redis://h/1"), id("redis://h/0"));
    }
}
