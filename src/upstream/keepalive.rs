//! Autoping and stale-feed detection for one connection, as pure logic over instants so it
//! can be tested without sockets or real time.
//!
//! - After `ping_interval` without any frame, send a Ping.
//! - After a Ping, if no frame at all arrives within `ping_timeout`, the connection is dead.
//! - After `receive_timeout` without a data message (Pongs do not count), the feed is stale.

use std::time::Duration;

use tokio::time::Instant;

use super::Cause;

/// What the connection loop should do when the keepalive deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet; look again at this instant.
    Wait(Instant),
    /// Send a Ping now.
    Ping,
    /// The connection is dead or stale: reconnect, giving this reason.
    Dead(Cause, String),
}

/// The keepalive state of one connection.
#[derive(Debug)]
pub struct Keepalive {
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    receive_timeout: Option<Duration>,
    last_frame: Instant,
    last_data: Instant,
    ping_sent: Option<Instant>,
}

/// A deadline far enough away to mean "never" without overflowing `Instant`.
const FAR: Duration = Duration::from_secs(86_400 * 365);

impl Keepalive {
    /// State for a connection opened at `now`.
    pub fn new(
        ping_interval: Option<Duration>,
        ping_timeout: Duration,
        receive_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        Keepalive {
            ping_interval,
            ping_timeout,
            receive_timeout,
            last_frame: now,
            last_data: now,
            ping_sent: None,
        }
    }

    /// Any frame (data, Ping, Pong, Close) proves the peer is alive.
    pub fn frame_received(&mut self, now: Instant) {
        self.last_frame = now;
        self.ping_sent = None;
    }

    /// A data message: alive, and the feed is not stale.
    pub fn data_received(&mut self, now: Instant) {
        self.frame_received(now);
        self.last_data = now;
    }

    /// A Pong: alive; returns the round-trip time if it answers our Ping.
    pub fn pong_received(&mut self, now: Instant) -> Option<Duration> {
        let rtt = self
            .ping_sent
            .map(|sent| now.saturating_duration_since(sent));
        self.frame_received(now);
        rtt
    }

    /// Whether a Ping of ours is unanswered. Any frame then moves the deadline earlier (from
    /// the Ping's timeout to the next interval), so the caller must re-arm its timer.
    pub fn awaiting_pong(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// Records that we sent a Ping at `now`.
    pub fn ping_sent(&mut self, now: Instant) {
        self.ping_sent = Some(now);
    }

    /// The next instant at which [`Keepalive::check`] may have something to do.
    pub fn deadline(&self) -> Instant {
        let ping = match (self.ping_sent, self.ping_interval) {
            (Some(sent), _) => sent + self.ping_timeout,
            (None, Some(interval)) => self.last_frame + interval,
            (None, None) => self.last_frame + FAR,
        };
        match self.receive_timeout {
            Some(t) => ping.min(self.last_data + t),
            None => ping,
        }
    }

    /// What to do at `now`.
    pub fn check(&self, now: Instant) -> Due {
        if let Some(t) = self.receive_timeout {
            if now >= self.last_data + t {
                return Due::Dead(
                    Cause::ReceiveTimeout,
                    format!(
                        "no data message for {} (receive_timeout): stale feed",
                        crate::duration::human(t)
                    ),
                );
            }
        }
        if let Some(sent) = self.ping_sent {
            if now >= sent + self.ping_timeout {
                return Due::Dead(
                    Cause::PingTimeout,
                    format!(
                        "no answer to our Ping within {} (ping_timeout): connection dead",
                        crate::duration::human(self.ping_timeout)
                    ),
                );
            }
        } else if let Some(interval) = self.ping_interval {
            if now >= self.last_frame + interval {
                return Due::Ping;
            }
        }
        Due::Wait(self.deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_after_silence_then_declares_dead() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(ms(100)), ms(50), None, t0);
        assert_eq!(k.check(t0 + ms(99)), Due::Wait(t0 + ms(100)));
        assert_eq!(k.check(t0 + ms(100)), Due::Ping);
        k.ping_sent(t0 + ms(100));
        assert_eq!(k.deadline(), t0 + ms(150));
        assert_eq!(k.check(t0 + ms(149)), Due::Wait(t0 + ms(150)));
        assert!(
            matches!(k.check(t0 + ms(150)), Due::Dead(Cause::PingTimeout, reason) if reason.contains("ping_timeout"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn any_frame_answers_the_ping() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(ms(100)), ms(50), None, t0);
        k.ping_sent(t0 + ms(100));
        k.frame_received(t0 + ms(120));
        assert_eq!(k.check(t0 + ms(200)), Due::Wait(t0 + ms(220)));
        assert_eq!(
            k.pong_received(t0 + ms(130)),
            None,
            "no Ping outstanding any more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pong_reports_round_trip() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(ms(100)), ms(50), None, t0);
        k.ping_sent(t0 + ms(100));
        assert_eq!(k.pong_received(t0 + ms(107)), Some(ms(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_do_not_keep_a_stale_feed_alive() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(ms(100)), ms(50), Some(ms(300)), t0);
        for step in 1..=5 {
            k.pong_received(t0 + ms(step * 50));
        }
        assert!(
            matches!(k.check(t0 + ms(300)), Due::Dead(Cause::ReceiveTimeout, reason) if reason.contains("receive_timeout"))
        );
        k.data_received(t0 + ms(300));
        assert!(matches!(k.check(t0 + ms(301)), Due::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn autoping_off_never_pings() {
        let t0 = Instant::now();
        let k = Keepalive::new(None, ms(50), None, t0);
        assert!(matches!(
            k.check(t0 + Duration::from_secs(3600)),
            Due::Wait(_)
        ));
    }
}
