//! `connect`'s options for shaping the feed: the same as the config's `decompress`,
//! `before_connect`, `app_ping` and `reply`, and the feed checks `sequence`, `on_gap` and
//! `event_time`.

use std::time::Duration;

use clap::Args;

use wsbridge::config::{AppPing, Decompress, FeedChecks, OnGap, UpstreamConfig};
use wsbridge::jq::Program;

/// What `connect` does beyond the bare connection.
#[derive(Debug, Args)]
pub struct ShapingArgs {
    /// Inflate binary messages compressed by the application: none, gzip, zlib, deflate or
    /// auto (by their first bytes); UTF-8 results are printed as text. Bounded by
    /// --max-message-size while inflating.
    #[arg(long, value_name = "KIND", default_value = "none", value_parser = parse_decompress)]
    decompress: Decompress,
    /// Run this program (split like a shell would, but run without one) before every
    /// attempt, within --connect-timeout; it prints one JSON object whose url, headers,
    /// cookies and on_connect override the options for that attempt. Its output is never logged.
    #[arg(long, value_name = "PROG ARGS…")]
    before_connect: Option<String>,
    /// Send this text message after --app-ping-interval without a data message; an answer
    /// must contain --app-ping-expect within --app-ping-timeout (answers are not printed).
    #[arg(long, value_name = "MSG", requires = "app_ping_expect")]
    app_ping: Option<String>,
    /// What the answer to --app-ping contains.
    #[arg(long, value_name = "TEXT", requires = "app_ping")]
    app_ping_expect: Option<String>,
    /// Silence before --app-ping is sent.
    #[arg(long, default_value = "15s", value_parser = wsbridge::config::parse_duration)]
    app_ping_interval: Duration,
    /// How long the answer to --app-ping may take before the connection counts as dead.
    #[arg(long, default_value = "10s", value_parser = wsbridge::config::parse_duration)]
    app_ping_timeout: Duration,
    /// Answer the server's own pings: a jq program run on every text message holding JSON;
    /// each output is sent back (a string as its text, other values as compact JSON) and a
    /// message that produced any is not printed. A message it fails on is printed as usual.
    #[arg(long, value_name = "JQ", value_parser = parse_reply)]
    reply: Option<Program>,
    /// Check the feed's own sequence numbers: a jq program giving each message's number
    /// (such as '.u'). A gap is logged on stderr; with --ndjson a gap record comes before
    /// the message that showed it.
    #[arg(long, value_name = "JQ", value_parser = parse_program)]
    sequence: Option<Program>,
    /// What a gap in --sequence does besides being reported: record, or reconnect (with
    /// --reconnect: subscribe again at once).
    #[arg(long, value_name = "WHAT", default_value = "record", value_parser = parse_on_gap, requires = "sequence")]
    on_gap: OnGap,
    /// When the source made each message: a jq program giving Unix ms, seconds or an RFC 3339
    /// time (such as '.E'); with --ndjson each data record carries lag_ms.
    #[arg(long, value_name = "JQ", value_parser = parse_program)]
    event_time: Option<Program>,
}

fn parse_decompress(s: &str) -> Result<Decompress, String> {
    [
        Decompress::None,
        Decompress::Gzip,
        Decompress::Zlib,
        Decompress::Deflate,
        Decompress::Auto,
    ]
    .into_iter()
    .find(|d| d.as_str() == s)
    .ok_or_else(|| "use none, gzip, zlib, deflate or auto".into())
}

fn parse_argv(s: &str) -> Result<Vec<String>, String> {
    match shlex::split(s) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        _ => Err(format!(
            "--before-connect {s:?}: give a program and its arguments, quoted as in a shell"
        )),
    }
}

fn parse_program(s: &str) -> Result<Program, String> {
    if s.trim().is_empty() {
        return Err("give a jq program, such as '.u'".into());
    }
    Program::compile(s).map_err(|e| format!("the jq program does not compile: {e}"))
}

fn parse_on_gap(s: &str) -> Result<OnGap, String> {
    [OnGap::Record, OnGap::Reconnect]
        .into_iter()
        .find(|g| g.as_str() == s)
        .ok_or_else(|| "use record or reconnect".into())
}

fn parse_reply(s: &str) -> Result<Program, String> {
    if s.trim().is_empty() {
        return Err("give a jq program, such as 'select(has(\"ping\")) | {pong: .ping}'".into());
    }
    Program::compile(s).map_err(|e| format!("the jq program does not compile: {e}"))
}

impl ShapingArgs {
    /// Sets the upstream's shaping keys.
    pub fn apply(self, upstream: &mut UpstreamConfig) -> Result<(), String> {
        upstream.decompress = self.decompress;
        upstream.before_connect = self.before_connect.as_deref().map(parse_argv).transpose()?;
        if let (Some(message), Some(expect)) = (self.app_ping, self.app_ping_expect) {
            upstream.app_ping = Some(AppPing {
                message,
                interval: self.app_ping_interval,
                expect,
                timeout: self.app_ping_timeout,
            });
        }
        upstream.reply = self.reply;
        upstream.feed = FeedChecks {
            sequence: self.sequence,
            on_gap: self.on_gap,
            event_time: self.event_time,
        };
        Ok(())
    }
}
