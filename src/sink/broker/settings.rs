//! What the broker sink types (`nats`, `redis`) share in their settings: the shared keys
//! they take, `{upstream}` in a subject or stream name, the `stream` key's two shapes, the
//! backoff between attempts, and their queue line in `check`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::plan::{on_slow, size};
use crate::config::sink::{Buffer, Inbound, Shared, SlowRule};
use crate::config::{OnSlow, RawSize, ReconnectPolicy, SinkConfig};

/// The shared keys of a broker sink: `buffer` in bytes, `on_slow` block (the default) or drop.
pub(in crate::sink) const BROKER: Shared = Shared {
    buffer: Buffer::Bytes,
    buffer_bytes: false,
    on_slow: Some(SlowRule {
        default: OnSlow::Block,
        no_disconnect: Some("a broker sink has no clients to disconnect; use \"block\" (backpressure) or \"drop\" (count)"),
    }),
    max_block: true,
    listener: false,
    inbound: Inbound::Never,
};

/// What `{upstream}` in a subject or stream name stands for.
pub const UPSTREAM_PLACEHOLDER: &str = "{upstream}";

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

/// The queue line of a broker sink in `check`'s plan.
pub(in crate::sink) fn plan_buffer(s: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "  buffer         {} while the server is down or slow, then on_slow {}",
        size(s.buffer_bytes),
        on_slow(s.on_slow)
    )
}

/// `stream`: a table for nats (the JetStream stream), a name for redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStream {
    /// Redis: the stream key, with `{upstream}`.
    Name(String),
    /// NATS: the JetStream stream to create or check.
    JetStream(RawJetStream),
}

/// `stream = { name, subjects, max_age, max_bytes, duplicate_window }` of a nats sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJetStream {
    pub name: Option<String>,
    pub subjects: Option<Vec<String>>,
    pub max_age: Option<String>,
    pub max_bytes: Option<RawSize>,
    pub duplicate_window: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::config::plan::Plan;

    use crate::sink::registry::parse_one_sink as parse;

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
