//! The serde mirror of the TOML file: exactly what the user wrote, before validation.
//!
//! Every struct denies unknown keys, so a misspelt key is an error rather than a silently
//! ignored setting. Values that need parsing (durations, sizes, URLs, addresses) are kept as
//! [`Spanned`] strings so that validation can point at their line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[daemon]`: process-wide settings.
    #[serde(default)]
    pub daemon: RawDaemon,
    /// `[metrics]`: optional HTTP endpoint.
    pub metrics: Option<RawMetrics>,
    /// `[defaults]`: inherited by every `[[upstream]]`.
    #[serde(default)]
    pub defaults: RawConnectionSettings,
    /// `[[upstream]]` tables, in file order.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// `[[sink]]` tables, in file order.
    #[serde(default)]
    pub sink: Vec<RawSink>,
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

    pub connect_timeout: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub ping_timeout: Option<Spanned<String>>,
    pub receive_timeout: Option<Spanned<String>>,
    pub reconnect: Option<RawReconnect>,
    pub max_message_size: Option<Spanned<String>>,
    pub send_queue: Option<Spanned<i64>>,
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
        }
    }
}

/// Which kind of sink a `[[sink]]` table describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    Unix,
    Tcp,
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

/// What a unix or tcp sink does when a client's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSlow {
    /// Close that client's connection; the others carry on.
    #[default]
    Disconnect,
    /// Drop the newest record for that client, count it and tell the client when it resumes.
    Drop,
    /// Wait for the client: backpressure reaches the upstream's TCP connection.
    Block,
}

/// `[[sink]]`: one flat table for every type, because serde's internally tagged enums lose
/// the spans we need for error locations. Validation rejects keys that the type does not use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(rename = "type")]
    pub kind: Spanned<SinkType>,
    pub upstreams: Option<Spanned<Vec<Spanned<String>>>>,
    pub format: Option<Format>,
    pub events: Option<bool>,
    pub parse_json: Option<bool>,
    pub buffer: Option<Spanned<i64>>,
    pub on_slow: Option<Spanned<OnSlow>>,
    pub inbound: Option<Spanned<bool>>,
    // unix
    pub path: Option<Spanned<PathBuf>>,
    pub mode: Option<Spanned<String>>,
    // tcp
    pub listen: Option<Spanned<String>>,
    pub max_clients: Option<Spanned<i64>>,
    pub allow_remote: Option<Spanned<bool>>,
}
