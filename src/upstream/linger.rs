//! The wait between `connect`'s stdin EOF and its Close: until the peer is done.
//!
//! Servers such as Python `websockets` answer a Close at once and drop the replies they had
//! not sent, so the Close waits. It goes out at the first of:
//!
//! - the peer has answered a Ping sent behind our last message (so it has read everything we
//!   sent) and has then been quiet for [`QUIET_RTTS`] of that Ping's round trips, at least
//!   [`MIN_QUIET`]: a peer that answers nothing lets `connect` exit at once, one that is still
//!   working through our messages answers the Ping late and gets a longer wait;
//! - the peer has sent no data message for `--linger` (the longest quiet wait; a peer that
//!   never answers Pings gets only this one).
//!
//! The peer's own Close ends the session before either. A peer that never goes quiet (a live
//! feed) keeps the connection open until it closes.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Round trips of the probe the peer must then stay quiet for.
pub(super) const QUIET_RTTS: u32 = 8;
/// The shortest quiet wait after the probe is answered: a peer answers a Ping from its
/// protocol layer, possibly before its application has sent the replies to the messages
/// read just before it; they follow within its own scheduling delay.
pub(super) const MIN_QUIET: Duration = Duration::from_millis(50);
/// The payload of the probe Ping, to tell its Pong from a keepalive one.
const PROBE: &[u8] = b"wsbridge: end of input";

/// The Close held back after stdin EOF, and when it may go.
#[derive(Debug)]
pub(super) struct Linger {
    /// The Close to send.
    pub(super) frame: Option<CloseFrame>,
    /// `--linger`: the longest quiet wait.
    max: Duration,
    /// When the probe went out (written with our last messages); `None` until then.
    probe_sent: Option<Instant>,
    /// The probe's round trip, once answered.
    rtt: Option<Duration>,
    /// The last sign of the peer working for us: its last data message, the probe's answer,
    /// or our last write.
    last: Instant,
}

impl Linger {
    /// Starts waiting at `now` (stdin EOF) to send `frame`, for at most `max` of quiet.
    pub(super) fn new(frame: Option<CloseFrame>, max: Duration, now: Instant) -> Linger {
        Linger {
            frame,
            max,
            probe_sent: None,
            rtt: None,
            last: now,
        }
    }

    /// The Ping to send behind our last message.
    pub(super) fn probe() -> Bytes {
        Bytes::from_static(PROBE)
    }

    /// Our messages and the probe are written (at `now`): the peer's work starts now.
    pub(super) fn flushed(&mut self, now: Instant) {
        self.probe_sent.get_or_insert(now);
        self.last = self.last.max(now);
    }

    /// Data messages arrived at `now`.
    pub(super) fn data(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// A Pong with this payload arrived at `now`.
    pub(super) fn pong(&mut self, payload: &[u8], now: Instant) {
        if payload != PROBE || self.rtt.is_some() {
            return;
        }
        if let Some(sent) = self.probe_sent {
            self.rtt = Some(now.saturating_duration_since(sent));
            self.last = self.last.max(now);
        }
    }

    /// When the Close may go, if nothing more arrives.
    pub(super) fn deadline(&self) -> Instant {
        let quiet = match self.rtt {
            Some(rtt) => (rtt * QUIET_RTTS).max(MIN_QUIET).min(self.max),
            None => self.max,
        };
        self.last + quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn a_silent_peer_that_answers_the_probe_gets_the_shortest_wait() {
        let eof = Instant::now();
        let mut linger = Linger::new(None, MAX, eof);
        assert_eq!(linger.deadline(), eof + MAX, "unanswered: the longest wait");
        let written = eof + Duration::from_millis(1);
        linger.flushed(written);
        let answered = written + Duration::from_micros(200);
        linger.pong(PROBE, answered);
        assert_eq!(linger.deadline(), answered + MIN_QUIET);
    }

    #[test]
    fn a_busy_peer_answers_late_and_gets_longer_and_replies_extend_it() {
        let eof = Instant::now();
        let mut linger = Linger::new(None, MAX, eof);
        linger.flushed(eof);
        // A keepalive's Pong is not the probe's.
        linger.pong(b"", eof + Duration::from_millis(5));
        assert_eq!(linger.deadline(), eof + MAX);
        let rtt = Duration::from_millis(300);
        linger.pong(PROBE, eof + rtt);
        assert_eq!(linger.deadline(), eof + rtt + rtt * QUIET_RTTS);
        let reply = eof + Duration::from_secs(2);
        linger.data(reply);
        assert_eq!(linger.deadline(), reply + rtt * QUIET_RTTS);
    }

    #[test]
    fn the_quiet_wait_never_exceeds_linger() {
        let eof = Instant::now();
        let max = Duration::from_millis(20);
        let mut linger = Linger::new(None, max, eof);
        linger.flushed(eof);
        linger.pong(PROBE, eof + Duration::from_millis(1));
        assert_eq!(linger.deadline(), eof + Duration::from_millis(1) + max);
        let mut slow = Linger::new(None, max, eof);
        slow.flushed(eof);
        slow.pong(PROBE, eof + Duration::from_secs(1));
        assert_eq!(slow.deadline(), eof + Duration::from_secs(1) + max);
    }
}
