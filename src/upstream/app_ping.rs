//! `app_ping`: keepalive in the application's own messages, for servers that ignore
//! WebSocket Pings or drop clients that do not send their JSON ping. Pure logic over
//! instants, like [`super::keepalive`], so the timing is tested without sockets.
//!
//! - After `interval` without any data message, `message` is due.
//! - Then a text message containing `expect` within `timeout` is the answer: it is counted
//!   and not forwarded. Other data messages meanwhile do not answer it.
//! - No answer within `timeout`: the connection is dead.

use tokio::time::Instant;

use crate::config::AppPing;

/// What the session should do when the app-ping deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppDue {
    /// Nothing yet.
    Wait,
    /// Send `message` now.
    Send,
    /// No answer in time: reconnect, giving this reason.
    Dead(String),
}

/// The app-ping state of one connection.
#[derive(Debug)]
pub struct AppPinger {
    config: AppPing,
    last_data: Instant,
    sent: Option<Instant>,
}

impl AppPinger {
    /// State for a connection opened at `now`.
    pub fn new(config: AppPing, now: Instant) -> Self {
        AppPinger {
            config,
            last_data: now,
            sent: None,
        }
    }

    /// The message to send.
    pub fn message(&self) -> &str {
        &self.config.message
    }

    /// A text message arrived at `now`; true if it is the answer (count it, do not forward it).
    pub fn text_received(&mut self, text: &str, now: Instant) -> bool {
        self.last_data = now;
        if self.sent.is_some() && text.contains(self.config.expect.as_str()) {
            self.sent = None;
            return true;
        }
        false
    }

    /// A binary message arrived at `now`.
    pub fn binary_received(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// Records that `message` went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.sent = Some(now);
    }

    /// The next instant at which [`AppPinger::check`] may have something to do.
    pub fn deadline(&self) -> Instant {
        match self.sent {
            Some(sent) => sent + self.config.timeout,
            None => self.last_data + self.config.interval,
        }
    }

    /// What to do at `now`.
    pub fn check(&self, now: Instant) -> AppDue {
        match self.sent {
            Some(sent) if now >= sent + self.config.timeout => AppDue::Dead(format!(
                "no answer containing {:?} to our app_ping within {} (app_ping.timeout): connection dead",
                self.config.expect,
                crate::duration::human(self.config.timeout)
            )),
            None if now >= self.last_data + self.config.interval => AppDue::Send,
            _ => AppDue::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pinger(now: Instant) -> AppPinger {
        let config = AppPing {
            message: r#"{"op":"ping"}"#.into(),
            interval: ms(100),
            expect: "pong".into(),
            timeout: ms(50),
        };
        AppPinger::new(config, now)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_after_silence_and_an_answer_keeps_it_alive() {
        let t0 = Instant::now();
        let mut p = pinger(t0);
        tokio::time::advance(ms(99)).await;
        assert_eq!(p.check(Instant::now()), AppDue::Wait);
        assert_eq!(p.deadline(), t0 + ms(100));
        tokio::time::advance(ms(1)).await;
        assert_eq!(p.check(Instant::now()), AppDue::Send);
        p.sent(Instant::now());
        assert_eq!(p.deadline(), t0 + ms(150));
        tokio::time::advance(ms(20)).await;
        assert!(
            p.text_received(r#"{"op":"pong"}"#, Instant::now()),
            "the answer"
        );
        assert_eq!(p.check(t0 + ms(200)), AppDue::Wait);
        assert_eq!(p.deadline(), t0 + ms(220), "next one after a new interval");
        assert!(
            !p.text_received("pong again", t0 + ms(130)),
            "nothing outstanding: forwarded"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn data_delays_the_ping_but_does_not_answer_it() {
        let t0 = Instant::now();
        let mut p = pinger(t0);
        p.binary_received(t0 + ms(80));
        assert_eq!(p.check(t0 + ms(150)), AppDue::Wait);
        assert_eq!(p.check(t0 + ms(180)), AppDue::Send);
        p.sent(t0 + ms(180));
        assert!(!p.text_received(r#"{"trade":1}"#, t0 + ms(200)));
        p.binary_received(t0 + ms(210));
        let due = p.check(t0 + ms(230));
        assert!(
            matches!(&due, AppDue::Dead(reason) if reason.contains("app_ping.timeout")),
            "{due:?}"
        );
    }
}
