//! The serde mirror of the TOML file: exactly what the user wrote, before validation.
//!
//! Every struct denies unknown keys, so a misspelt key is an error rather than a silently
//! ignored setting. Values that need parsing (durations, sizes, URLs, addresses) are kept as
//! [`Spanned`] strings so that validation can point at their line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The whole file, read table by table (`parse.rs`): a table that could not be read is `None`,
/// so the others keep their index in error keys.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// `[daemon]`: process-wide settings.
    pub daemon: RawDaemon,
    /// `[metrics]`: optional HTTP endpoint.
    pub metrics: Option<RawMetrics>,
    /// `[defaults]`: inherited by every `[[upstream]]`.
    pub defaults: RawConnectionSettings,
    /// `[[upstream]]` tables, in file order.
    pub upstream: Vec<Option<RawUpstream>>,
    /// `[[sink]]` tables, in file order.
    pub sink: Vec<Option<RawSink>>,
    /// `[cluster]`: leases shared with other instances.
    pub cluster: Option<super::cluster::RawCluster>,
    /// The names of `[[upstream]]` tables that could not be read: a sink may still name them.
    pub unread_upstream_names: Vec<String>,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<LogFormat>,
    pub shutdown_timeout: Option<Spanned<String>>,
}

/// How log lines on stderr are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
    pub allow_remote: Option<bool>,
}

/// The per-connection settings that `[defaults]` sets and each `[[upstream]]` may override.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnectionSettings {
    pub connect_timeout: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub ping_timeout: Option<Spanned<String>>,
    pub receive_timeout: Option<Spanned<String>>,
    pub reconnect: Option<RawReconnect>,
    pub max_message_size: Option<Spanned<String>>,
    pub send_queue: Option<Spanned<i64>>,
    // How the host is reached, and the TLS client settings.
    pub proxy: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<PathBuf>>,
    pub client_key: Option<Spanned<PathBuf>>,
    pub server_name: Option<Spanned<String>>,
    pub insecure: Option<Spanned<bool>>,
    // What each attempt is prepared with, and what the session does with messages.
    pub before_connect: Option<Spanned<Vec<Spanned<String>>>>,
    pub app_ping: Option<Spanned<super::shaping::RawAppPing>>,
    pub decompress: Option<Spanned<super::Decompress>>,
    pub reply: Option<Spanned<String>>,
    // What is checked of the feed's own messages.
    pub sequence: Option<Spanned<String>>,
    pub on_gap: Option<Spanned<super::OnGap>>,
    pub event_time: Option<Spanned<String>>,
}

/// `reconnect = { ... }`: any subset of the keys; the others keep their defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReconnect {
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
    pub multiplier: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub reset_after: Option<Spanned<String>>,
}

/// `[[upstream]]`. The connection settings are repeated here (not flattened) because serde
/// cannot combine `flatten` with `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub cookies: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub subprotocols: Vec<Spanned<String>>,
    pub origin: Option<Spanned<String>>,
    #[serde(default)]
    pub on_connect: Vec<String>,
    pub ca_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub required: bool,
    pub before_connect: Option<Spanned<Vec<Spanned<String>>>>,
    pub app_ping: Option<Spanned<super::shaping::RawAppPing>>,
    pub decompress: Option<Spanned<super::Decompress>>,
    pub replicas: Option<Spanned<i64>>,
    /// A jq program answering the server's own application pings.
    pub reply: Option<Spanned<String>>,
    /// A jq program giving the message's own sequence number.
    pub sequence: Option<Spanned<String>>,
    /// What a gap in `sequence` does.
    pub on_gap: Option<Spanned<super::OnGap>>,
    /// A jq program giving when the source made the message.
    pub event_time: Option<Spanned<String>>,

    pub connect_timeout: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub ping_timeout: Option<Spanned<String>>,
    pub receive_timeout: Option<Spanned<String>>,
    pub reconnect: Option<RawReconnect>,
    pub max_message_size: Option<Spanned<String>>,
    pub send_queue: Option<Spanned<i64>>,
    pub proxy: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<PathBuf>>,
    pub client_key: Option<Spanned<PathBuf>>,
    pub server_name: Option<Spanned<String>>,
    pub insecure: Option<Spanned<bool>>,
}

impl RawUpstream {
    /// The connection settings written in this table, to be layered over `[defaults]`.
    pub fn overrides(&self) -> RawConnectionSettings {
        RawConnectionSettings {
            connect_timeout: self.connect_timeout.clone(),
            ping_interval: self.ping_interval.clone(),
            ping_timeout: self.ping_timeout.clone(),
            receive_timeout: self.receive_timeout.clone(),
            reconnect: self.reconnect.clone(),
            max_message_size: self.max_message_size.clone(),
            send_queue: self.send_queue.clone(),
            proxy: self.proxy.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.server_name.clone(),
            insecure: self.insecure.clone(),
            before_connect: self.before_connect.clone(),
            app_ping: self.app_ping.clone(),
            decompress: self.decompress.clone(),
            reply: self.reply.clone(),
            sequence: self.sequence.clone(),
            on_gap: self.on_gap.clone(),
            event_time: self.event_time.clone(),
        }
    }
}

/// How a sink writes each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The JSON envelope of `record.rs`, one per line.
    #[default]
    Ndjson,
    /// The payload alone, one message per line.
    Raw,
}

/// What a sink does when a destination's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSlow {
    /// Close that client's connection; the others carry on (unix, tcp).
    #[default]
    Disconnect,
    /// Drop the newest record for that client, count it and tell the client when it resumes.
    Drop,
    /// Wait for the client: backpressure reaches the upstream's TCP connection.
    Block,
}

/// `[[sink]]`, read in two parts (`parse.rs`): the keys every type shares, here, and the
/// type's own, in its module's struct.
pub struct RawSink {
    /// `type`, with where it was written.
    pub kind: Spanned<&'static str>,
    /// The shared keys.
    pub shared: RawSinkShared,
    /// The type's own keys (its `SinkType::Keys`).
    pub own: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for RawSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSink")
            .field("kind", &self.kind)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// The keys several sink types share (`sink::Shared` says which type takes which);
/// validated once, in `validate/sink.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinkShared {
    pub upstreams: Option<Spanned<Vec<Spanned<String>>>>,
    pub format: Option<Format>,
    pub events: Option<bool>,
    pub parse_json: Option<bool>,
    /// A jq program run on every record (any type).
    pub filter: Option<Spanned<String>>,
    pub inbound: Option<Spanned<bool>>,
    /// Records, or bytes ("64MiB") for the types that say so.
    pub buffer: Option<Spanned<RawSize>>,
    pub buffer_bytes: Option<Spanned<RawSize>>,
    pub on_slow: Option<Spanned<OnSlow>>,
    /// How long `on_slow = "block"` waits on a sink that takes nothing.
    pub max_block: Option<Spanned<String>>,
    // listeners (unix and tcp)
    pub max_clients: Option<Spanned<i64>>,
    pub replay: Option<Spanned<i64>>,
    pub fd_name: Option<Spanned<String>>,
}

/// A size as the user wrote it: a string with a unit ("16MiB") or a number of bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSize {
    /// `"16MiB"`, parsed during validation.
    Text(String),
    /// `16777216`.
    Bytes(i64),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"16MiB\" or a number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
