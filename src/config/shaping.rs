//! What an upstream does beyond the bare connection, as written and as resolved:
//! `before_connect` (a program that fetches fresh credentials before every attempt),
//! `app_ping` (keepalive in the application's own messages) and `decompress` (binary
//! payloads inflated before the sinks).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// How binary messages are inflated before the sinks see them (`decompress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decompress {
    /// Binary messages pass as they came.
    #[default]
    None,
    /// gzip (RFC 1952), one or more members.
    Gzip,
    /// zlib (RFC 1950).
    Zlib,
    /// Raw deflate (RFC 1951), as `permessage-deflate`-less feeds send it.
    Deflate,
    /// gzip when the message starts with its magic bytes, zlib when it starts with a valid
    /// zlib header, else raw deflate.
    Auto,
}

impl Decompress {
    /// The name as written in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Decompress::None => "none",
            Decompress::Gzip => "gzip",
            Decompress::Zlib => "zlib",
            Decompress::Deflate => "deflate",
            Decompress::Auto => "auto",
        }
    }
}

/// `app_ping`, resolved: an application-level Ping for servers that ignore WebSocket Pings
/// or want their own JSON ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPing {
    /// The text message sent after `interval` without any data message.
    pub message: String,
    /// How long without a data message before `message` is sent.
    pub interval: Duration,
    /// A text message containing this is the answer: counted, not forwarded.
    pub expect: String,
    /// No answer within this long after `message`: the connection is dead.
    pub timeout: Duration,
}

/// `app_ping`'s default `interval`.
pub const DEFAULT_APP_PING_INTERVAL: Duration = Duration::from_secs(15);
/// `app_ping`'s default `timeout`.
pub const DEFAULT_APP_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// `app_ping = { … }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppPing {
    pub message: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub expect: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
}
