//! `sequence`, `on_gap` and `event_time`: what an upstream checks of its feed's own messages
//! (resolved here; run by the upstream task, in `upstream::checks`).

use serde::Deserialize;

use crate::jq::Program;

/// The feed checks of one upstream, all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedChecks {
    /// A jq program giving a message's own sequence number; gaps and repeats are counted
    /// per connection. Off when `None`.
    pub sequence: Option<Program>,
    /// What a gap in `sequence` does besides its `gap` record.
    pub on_gap: OnGap,
    /// A jq program giving when the source made a message (Unix ms, s, or RFC 3339); each
    /// data record then carries `lag_ms`. Off when `None`.
    pub event_time: Option<Program>,
}

impl FeedChecks {
    /// Whether any program runs on the messages.
    pub fn any(&self) -> bool {
        self.sequence.is_some() || self.event_time.is_some()
    }
}

/// `on_gap`: what a gap in the feed's sequence numbers does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnGap {
    /// A `gap` record in the stream and a count; the connection stays.
    #[default]
    Record,
    /// The `gap` record, then the connection is closed and opened again at once, so
    /// `on_connect` subscribes again (and the server sends a fresh snapshot).
    Reconnect,
}

impl OnGap {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OnGap::Record => "record",
            OnGap::Reconnect => "reconnect",
        }
    }
}
