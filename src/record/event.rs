//! The event model: what an upstream task hands to the sinks, before any encoding.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::Text;

/// Something that happened on an upstream connection, as handed from the upstream task to the
/// sinks. The upstream's name travels once per batch ([`crate::hub::Batch`]), not per event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Receive time, Unix milliseconds.
    pub ts: u64,
    /// What happened.
    pub kind: EventKind,
    /// A data message's lag behind its source (`event_time`): receive time minus event time,
    /// in milliseconds; `None` when not checked or not found.
    pub lag_ms: Option<i64>,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A text message.
    Text {
        /// Per-upstream data message counter.
        seq: u64,
        /// The payload.
        data: Text,
    },
    /// A binary message.
    Binary {
        /// Per-upstream data message counter.
        seq: u64,
        /// The payload.
        data: Bytes,
    },
    /// The handshake completed.
    Open {
        /// The URL, without credentials.
        url: String,
        /// The subprotocol the server chose.
        protocol: Option<String>,
    },
    /// The connection ended with a Close frame from the peer (or ours, on shutdown).
    Close {
        /// Close code (1005 when the frame had none).
        code: u16,
        /// Close reason.
        reason: String,
        /// Delay before the next attempt, when one follows.
        retry_in_ms: Option<u64>,
    },
    /// A connection attempt failed or a connection broke.
    Error {
        /// What went wrong.
        error: String,
        /// The HTTP status of a refused handshake (401, 429, …).
        status: Option<u16>,
        /// Delay before the next attempt, when one follows.
        retry_in_ms: Option<u64>,
    },
    /// The feed's own sequence numbers (`sequence`) skipped: written just before the message
    /// that showed it.
    Gap {
        /// The number that should have come.
        expected: i64,
        /// The number that came.
        got: i64,
    },
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(kind: EventKind) -> Event {
        Event {
            ts: unix_millis(),
            kind,
            lag_ms: None,
        }
    }

    /// The size of a data message's payload (0 for other events).
    pub fn payload_len(&self) -> usize {
        match &self.kind {
            EventKind::Text { data, .. } => data.len(),
            EventKind::Binary { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Payload bytes plus the event itself: what holding it costs in memory, roughly.
    pub fn cost(&self) -> usize {
        self.payload_len() + std::mem::size_of::<Event>()
    }

    /// Whether this is a data message (not open/close/error/gap).
    pub fn is_data(&self) -> bool {
        matches!(self.kind, EventKind::Text { .. } | EventKind::Binary { .. })
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
