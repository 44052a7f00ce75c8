//! `reply`: a jq program that answers the server's own application pings. It runs on every
//! text message that holds JSON; each output goes back upstream as a text message (a string
//! as its text, so `"pong"` sends `pong`; any other value as compact JSON), and a message
//! that produced any output is not forwarded to the sinks.
//!
//! A message that is not JSON, or gives no output, is forwarded as usual. A runtime error
//! forwards the message too (any outputs before the error are discarded), counts into
//! `reply_errors` and is logged at a bounded rate: a program that fails on some messages
//! must not lose them.
//!
//! Replies wait here only until the session hands them to its writing side, and there only
//! while the peer reads: a peer that sends pings but does not read our answers would
//! otherwise grow them without limit, so beyond [`MAX_WAITING`] they are dropped and counted
//! as errors.

use tokio_tungstenite::tungstenite::Message;
use tracing::warn;

use super::outgoing::Outgoing;
use crate::jq::{self, Program};
use crate::throttle::Throttled;

/// Replies waiting to be written, at most (here, and again in the session's writing side).
pub const MAX_WAITING: usize = jq::MAX_OUTPUTS;

/// The `reply` state of one connection.
#[derive(Debug)]
pub struct Replier {
    program: Program,
    /// Replies made since the session last took them, in order.
    waiting: Vec<Message>,
    /// Replies handed to the writing side since the last publish.
    pub(super) sent: u64,
    /// Messages the program failed on, and replies dropped, since the last publish.
    pub(super) errors: u64,
    /// Failures not yet in a warning.
    failures: Throttled,
}

impl Replier {
    /// State for a connection answering with `program`.
    pub fn new(program: Program) -> Replier {
        Replier {
            program,
            waiting: Vec::new(),
            sent: 0,
            errors: 0,
            failures: Throttled::default(),
        }
    }

    /// Runs the program on a text message; true if it answered (do not forward it).
    pub fn answer(&mut self, text: &str) -> bool {
        let Some(input) = jq::parse_json(text.as_bytes()) else {
            return false;
        };
        let start = self.waiting.len();
        let mut outputs = 0usize;
        let mut dropped = 0u64;
        let waiting = &mut self.waiting;
        let result = self.program.run(input, |value| {
            outputs += 1;
            if waiting.len() >= MAX_WAITING {
                dropped += 1;
                return;
            }
            // Servers that want a bare `pong` cannot be answered with JSON's `"pong"`.
            let text = match jq::as_text(&value) {
                Some(text) => text.to_vec(),
                None => {
                    let mut json = Vec::new();
                    jq::write_compact(&value, &mut json);
                    json
                }
            };
            let text = String::from_utf8(text)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            waiting.push(Message::text(text));
        });
        match result {
            Ok(()) => {
                if dropped > 0 {
                    self.failed(
                        dropped,
                        "the peer is not reading our replies; replies dropped",
                    );
                }
                outputs > 0
            }
            Err(e) => {
                self.waiting.truncate(start);
                self.failed(1, &e.0);
                false
            }
        }
    }

    /// Hands the waiting replies to the writing side, unless it still holds
    /// [`MAX_WAITING`] frames (the peer is not reading): then they are dropped and counted.
    pub(super) fn send_into(&mut self, outgoing: &mut Outgoing) {
        if self.waiting.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.waiting);
        if outgoing.held() >= MAX_WAITING {
            self.failed(
                replies.len() as u64,
                "the peer is not reading our replies; replies dropped",
            );
            return;
        }
        self.sent += replies.len() as u64;
        for reply in replies {
            outgoing.send(reply);
        }
    }

    /// Counts `n` failures and warns at a bounded rate ([`crate::throttle`]).
    fn failed(&mut self, n: u64, error: &str) {
        self.errors += n;
        let Some(failed) = self.failures.due_n(n) else {
            return;
        };
        warn!(
            error,
            failed, "reply failed on a message; the message is forwarded unanswered"
        );
    }

    /// The replies waiting to be handed over, for tests.
    #[cfg(test)]
    fn waiting(&self) -> Vec<String> {
        self.waiting
            .iter()
            .map(|m| m.to_text().unwrap_or_default().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replier(program: &str) -> Replier {
        Replier::new(Program::compile(program).expect("compiles"))
    }

    #[tokio::test]
    async fn answers_pings_and_lets_everything_else_through() {
        let mut r = replier(r#"select(type == "object" and has("ping")) | {pong: .ping}"#);
        assert!(r.answer(r#"{"ping":1700000000000}"#));
        assert!(!r.answer(r#"{"price":1.5}"#), "data is forwarded");
        assert!(!r.answer("not json"), "text that is not JSON is forwarded");
        assert!(!r.answer(r#"[1,2]"#));
        assert!(r.answer(r#" {"ping": 2} "#));
        assert_eq!(r.waiting(), [r#"{"pong":1700000000000}"#, r#"{"pong":2}"#]);
        let mut bare = replier(r#"select(.op? == "ping") | "pong", 5, "a\nb""#);
        assert!(bare.answer(r#"{"op":"ping"}"#));
        assert_eq!(
            bare.waiting(),
            ["pong", "5", "a\nb"],
            "strings as their text"
        );
        assert_eq!(r.errors, 0);
        let mut outgoing = Outgoing::default();
        r.send_into(&mut outgoing);
        assert_eq!((r.sent, outgoing.held()), (2, 2));
        assert!(r.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_runtime_error_counts_and_forwards_the_message() {
        let mut r = replier(r#"{pong: .ping}, {late: (.ping + "x")}"#);
        assert!(!r.answer(r#"{"ping":1}"#), "forwarded");
        assert_eq!(r.errors, 1);
        assert!(
            r.waiting().is_empty(),
            "the output before the error is discarded"
        );
    }

    #[tokio::test]
    async fn replies_are_dropped_while_the_peer_does_not_read() {
        let mut r = replier("{pong: .ping}");
        let mut outgoing = Outgoing::default();
        for round in 0..3 {
            for n in 0..MAX_WAITING {
                assert!(r.answer(&format!(r#"{{"ping":{n}}}"#)), "round {round}");
            }
            assert!(r.answer(r#"{"ping":"over"}"#), "answered, though dropped");
            r.send_into(&mut outgoing);
        }
        // The first round was handed over; the writing side never drained, so the rest
        // (and one reply over the limit each round) were dropped.
        assert_eq!(outgoing.held(), MAX_WAITING);
        assert_eq!(r.sent, MAX_WAITING as u64);
        assert_eq!(r.errors, 3 + 2 * MAX_WAITING as u64);
    }
}
