//! What an upstream task reports: its [`State`], its counters ([`UpstreamStats`], shared
//! with the supervisor and the metrics), why a connection ended ([`SessionEnd`], counted by
//! [`Cause`]) and why the task returned ([`UpstreamExit`]).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use super::connect::ConnectError;

/// The connection state, as the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Connecting (TCP, TLS, handshake).
    Connecting = 0,
    /// Open.
    Open = 1,
    /// Waiting before the next attempt.
    Backoff = 2,
    /// Gave up or shut down.
    Stopped = 3,
}

/// Counters shared between an upstream task and the supervisor. They outlive a task that is
/// restarted on reload; `seq` outlives even these (see [`UpstreamStats::with_seq`]).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// The last `seq` given to a data message. Shared with the supervisor's counter of this
    /// upstream's name, which is never dropped: an upstream removed and added back by reloads
    /// goes on from where it was, so its `Nats-Msg-Id`s never repeat.
    pub seq: Arc<AtomicU64>,
    /// [`State`] as a number.
    pub state: AtomicU8,
    /// Completed handshakes.
    pub connects: AtomicU64,
    /// Connections that ended or attempts that failed, by [`Cause`].
    pub disconnects: [AtomicU64; Cause::ALL.len()],
    /// Data messages received.
    pub messages_received: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Messages sent (on_connect and inbound).
    pub messages_sent: AtomicU64,
    /// Unix milliseconds of the last data message, 0 if none.
    pub last_message_ms: AtomicU64,
    /// Last Ping round trip, microseconds.
    pub ping_rtt_us: AtomicU64,
    /// `app_ping` messages sent.
    pub app_pings_sent: AtomicU64,
    /// Answers to `app_ping` received (not forwarded).
    pub app_pings_answered: AtomicU64,
    /// Binary messages dropped because they could not be inflated (`decompress`): corrupt,
    /// or larger than max_message_size once inflated.
    pub decompress_errors: AtomicU64,
    /// Answers sent by `reply` (not counted in `messages_sent`, which counts what
    /// `on_connect` and the sinks' clients send).
    pub replies_sent: AtomicU64,
    /// Text messages `reply` failed on (forwarded unanswered), and replies dropped because
    /// the peer was not reading them.
    pub reply_errors: AtomicU64,
    /// Gaps in the feed's own sequence numbers (`sequence`).
    pub gaps: AtomicU64,
    /// Messages whose sequence number was not above the previous one (still delivered).
    pub repeats: AtomicU64,
    /// Messages `sequence` could not read a number from (not checked).
    pub sequence_errors: AtomicU64,
    /// Messages `event_time` could not read a time from (no `lag_ms`).
    pub event_time_errors: AtomicU64,
    /// Receive time minus event time (`event_time`).
    pub lag: super::lag::LagHistogram,
}

/// Why a connection ended or an attempt failed, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// TCP, DNS, TLS or the handshake failed, or connect_timeout passed.
    ConnectFailed,
    /// The server answered the handshake with an HTTP status (401, 429, …).
    HandshakeRefused,
    /// The `before_connect` program failed, timed out or printed something unusable.
    BeforeConnectFailed,
    /// The peer sent Close.
    PeerClosed,
    /// Our Ping went unanswered for ping_timeout.
    PingTimeout,
    /// No data message for receive_timeout.
    ReceiveTimeout,
    /// No answer to our `app_ping` message within its timeout.
    AppPingTimeout,
    /// The peer sent a message larger than max_message_size.
    MessageTooBig,
    /// Reset, EOF without Close, protocol error, failed write.
    ConnectionLost,
    /// A gap in the feed's sequence numbers with `on_gap = "reconnect"`: we closed to
    /// subscribe again.
    SequenceGap,
    /// We closed (shutdown, reload, `connect` at stdin EOF).
    Closed,
}

impl Cause {
    /// Every cause, in the order of [`UpstreamStats::disconnects`].
    pub const ALL: [Cause; 11] = [
        Cause::ConnectFailed,
        Cause::HandshakeRefused,
        Cause::BeforeConnectFailed,
        Cause::PeerClosed,
        Cause::PingTimeout,
        Cause::ReceiveTimeout,
        Cause::AppPingTimeout,
        Cause::MessageTooBig,
        Cause::ConnectionLost,
        Cause::SequenceGap,
        Cause::Closed,
    ];

    /// The `cause` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ConnectFailed => "connect_failed",
            Cause::HandshakeRefused => "handshake_refused",
            Cause::BeforeConnectFailed => "before_connect_failed",
            Cause::AppPingTimeout => "app_ping_timeout",
            Cause::PeerClosed => "peer_closed",
            Cause::PingTimeout => "ping_timeout",
            Cause::ReceiveTimeout => "receive_timeout",
            Cause::MessageTooBig => "message_too_big",
            Cause::ConnectionLost => "connection_lost",
            Cause::SequenceGap => "sequence_gap",
            Cause::Closed => "closed",
        }
    }
}

impl SessionEnd {
    /// The cause to count.
    pub fn cause(&self) -> Cause {
        match self {
            SessionEnd::Closed { .. } => Cause::Closed,
            SessionEnd::PeerClosed { .. } => Cause::PeerClosed,
            SessionEnd::Failed(cause, _) => *cause,
        }
    }
}

impl UpstreamStats {
    /// Fresh counters whose `seq` goes on from `seq`.
    pub fn with_seq(seq: Arc<AtomicU64>) -> UpstreamStats {
        UpstreamStats {
            seq,
            ..UpstreamStats::default()
        }
    }

    pub(super) fn count_disconnect(&self, cause: Cause) {
        self.disconnects[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Connecting,
            1 => State::Open,
            2 => State::Backoff,
            _ => State::Stopped,
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEnd {
    /// We closed: cancelled (Close with [`super::Upstream::goodbye`]) or a Close frame from the
    /// send queue (`connect` at stdin EOF). Never followed by a reconnect.
    Closed {
        /// The code we sent.
        code: u16,
        /// The reason we sent.
        reason: String,
    },
    /// The peer sent Close.
    PeerClosed {
        /// Its code (1005 if none).
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// The connection failed: reset, dead, protocol error, oversized message, ….
    Failed(Cause, String),
}

/// Why the task returned.
#[derive(Debug)]
pub enum UpstreamExit {
    /// Cancelled.
    Shutdown,
    /// `max_attempts` failures in a row.
    GaveUp,
    /// [`super::RunMode::Once`]: the attempt failed.
    ConnectFailed(ConnectError),
    /// [`super::RunMode::Once`]: the connection ended.
    Ended(SessionEnd),
}

/// A one-line description of how a connection ended.
pub fn describe(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Closed { code, .. } => format!("closed by us with code {code}"),
        SessionEnd::PeerClosed { code, reason } if reason.is_empty() => {
            format!("peer closed the connection with code {code}")
        }
        SessionEnd::PeerClosed { code, reason } => {
            format!("peer closed the connection with code {code}: {reason}")
        }
        SessionEnd::Failed(_, reason) => reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_index_their_counters_in_order() {
        for (i, cause) in Cause::ALL.iter().enumerate() {
            assert_eq!(*cause as usize, i, "{cause:?}");
        }
    }
}
