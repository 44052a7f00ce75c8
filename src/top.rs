//! `wsbridge top`'s figures: two readings of a daemon's `/status` turned into rows of rates
//! (messages, bytes and records per second, the lag of the last interval), and those rows as
//! plain text for a stdout that is not a terminal. The terminal view draws the same rows
//! (`src/cli/top.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::metrics::{Status, UpstreamStatus};
use crate::status_client::lag_ms;
use crate::upstream::lag::quantile;

/// One upstream's row.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    /// The upstream's name.
    pub name: String,
    /// `connecting`, `open`, `backoff` or `stopped`.
    pub state: String,
    /// Data messages per second over the last interval (`None` on the first reading).
    pub msgs_per_sec: Option<f64>,
    /// Payload bytes per second over the last interval.
    pub bytes_per_sec: Option<f64>,
    /// Lag percentiles of the messages of the last interval, else since the daemon started.
    pub lag_p50: Option<f64>,
    /// See `lag_p50`.
    pub lag_p99: Option<f64>,
    /// Gaps in the feed's sequence numbers, since start.
    pub gaps: u64,
    /// Connections after the first, since start.
    pub reconnects: u64,
}

/// One sink's row.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRow {
    /// The sink's name.
    pub name: String,
    /// Connected clients.
    pub clients: u64,
    /// Bytes queued, not yet written (a broker: not yet acknowledged).
    pub queued: u64,
    /// Records written per second over the last interval.
    pub written_per_sec: Option<f64>,
    /// Records dropped since start, by reason (`slow=3 io=1`), or `-`.
    pub dropped: String,
}

/// What one refresh shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// One per upstream, in config order.
    pub upstreams: Vec<UpstreamRow>,
    /// One per sink, in config order.
    pub sinks: Vec<SinkRow>,
}

/// The rows of `now`, with rates against `before` taken `elapsed` earlier (matched by name:
/// a reload may add or remove some).
pub fn rows(before: Option<&Status>, now: &Status, elapsed: Duration) -> Rows {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |then: Option<u64>, now: u64| then.map(|t| now.saturating_sub(t) as f64 / secs);
    let upstreams = now
        .upstreams
        .iter()
        .map(|u| {
            let prev = before.and_then(|b| b.upstreams.iter().find(|p| p.name == u.name));
            let (lag_p50, lag_p99) = lag(prev, u);
            UpstreamRow {
                name: u.name.clone(),
                state: u.state.clone(),
                msgs_per_sec: rate(prev.map(|p| p.messages_received), u.messages_received),
                bytes_per_sec: rate(prev.map(|p| p.bytes_received), u.bytes_received),
                lag_p50,
                lag_p99,
                gaps: u.gaps,
                reconnects: u.connects.saturating_sub(1),
            }
        })
        .collect();
    let sinks = now
        .sinks
        .iter()
        .map(|s| {
            let prev = before.and_then(|b| b.sinks.iter().find(|p| p.name == s.name));
            let dropped = s
                .dropped_by_reason
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            SinkRow {
                name: s.name.clone(),
                clients: s.clients,
                queued: s.bytes_buffered,
                written_per_sec: rate(prev.map(|p| p.records_written), s.records_written),
                dropped: if dropped.is_empty() {
                    "-".into()
                } else {
                    dropped
                },
            }
        })
        .collect();
    Rows { upstreams, sinks }
}

/// p50 and p99 of the lags observed between the two readings; since start when none were.
fn lag(prev: Option<&UpstreamStatus>, now: &UpstreamStatus) -> (Option<f64>, Option<f64>) {
    let Some(lag) = &now.lag else {
        return (None, None);
    };
    let before = prev.and_then(|p| p.lag.as_ref());
    if let Some(before) = before.filter(|b| b.buckets.len() == lag.buckets.len()) {
        let recent: Vec<u64> = lag
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|(n, b)| n.saturating_sub(*b))
            .collect();
        if let (Some(p50), Some(p99)) = (quantile(&recent, 0.5), quantile(&recent, 0.99)) {
            return (Some(p50), Some(p99));
        }
    }
    (Some(lag.p50_seconds), Some(lag.p99_seconds))
}

/// A rate for people: `1234`, `12.3k`, `4.5M`, or `-`.
pub fn human_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r >= 1e6 => format!("{:.1}M", r / 1e6),
        Some(r) if r >= 1e4 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

/// The column titles of the upstream table.
pub const UPSTREAM_COLUMNS: [&str; 8] = [
    "UPSTREAM",
    "STATE",
    "MSGS/S",
    "BYTES/S",
    "LAG P50",
    "LAG P99",
    "GAPS",
    "RECONNECTS",
];

/// The column titles of the sink table.
pub const SINK_COLUMNS: [&str; 5] = ["SINK", "CLIENTS", "QUEUED", "WRITTEN/S", "DROPPED"];

impl UpstreamRow {
    /// The cells, in [`UPSTREAM_COLUMNS`] order.
    pub fn cells(&self) -> [String; 8] {
        [
            self.name.clone(),
            self.state.clone(),
            human_rate(self.msgs_per_sec),
            human_rate(self.bytes_per_sec),
            lag_ms(self.lag_p50),
            lag_ms(self.lag_p99),
            self.gaps.to_string(),
            self.reconnects.to_string(),
        ]
    }
}

impl SinkRow {
    /// The cells, in [`SINK_COLUMNS`] order.
    pub fn cells(&self) -> [String; 5] {
        [
            self.name.clone(),
            self.clients.to_string(),
            self.queued.to_string(),
            human_rate(self.written_per_sec),
            self.dropped.clone(),
        ]
    }
}

/// The rows as plain text, one line per upstream and per sink, for a stdout that is not a
/// terminal.
pub fn render_plain(rows: &Rows) -> String {
    let mut out = String::new();
    let up = |c: &[String]| {
        format!(
            "{:<20} {:<10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        )
    };
    let titles = UPSTREAM_COLUMNS.map(String::from);
    let _ = writeln!(out, "{}", up(&titles));
    for row in &rows.upstreams {
        let _ = writeln!(out, "{}", up(&row.cells()));
    }
    let sink = |c: &[String]| format!("{:<32} {:>7} {:>10} {:>9} {}", c[0], c[1], c[2], c[3], c[4]);
    let titles = SINK_COLUMNS.map(String::from);
    let _ = writeln!(out, "{}", sink(&titles));
    for row in &rows.sinks {
        let _ = writeln!(out, "{}", sink(&row.cells()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(received: u64, written: u64, lag_buckets: Option<Vec<u64>>) -> Status {
        let lag = lag_buckets.map(|b| {
            serde_json::json!({"p50_seconds": 9.0, "p99_seconds": 9.0, "count": b.iter().sum::<u64>(),
                               "sum_seconds": 0.0, "buckets": b})
        });
        serde_json::from_value(serde_json::json!({
            "healthy": true, "tasks": 1,
            "upstreams": [{"name": "book", "state": "open", "required": false, "connects": 3,
                "disconnects": {}, "messages_received": received, "bytes_received": received * 10,
                "messages_sent": 0, "last_message_age_seconds": null, "ping_rtt_seconds": null,
                "gaps": 2, "lag": lag}],
            "sinks": [{"name": "tcp:127.0.0.1:9000", "clients": 1, "records_written": written,
                "records_dropped": 4, "dropped_by_reason": {"slow": 3, "io": 1},
                "bytes_buffered": 10}]
        }))
        .unwrap()
    }

    #[test]
    fn rates_come_from_two_readings_and_lag_from_the_interval() {
        let mut early = vec![0u64; 17];
        early[10] = 100; // (1, 2.5] s
        let mut late = early.clone();
        late[5] += 10; // (25, 50] ms
        let first = rows(
            None,
            &status(100, 50, Some(early.clone())),
            Duration::from_secs(1),
        );
        assert_eq!(first.upstreams[0].msgs_per_sec, None);
        assert_eq!(first.upstreams[0].lag_p50, Some(9.0), "since start");
        let before = status(100, 50, Some(early));
        let now = status(2_100, 1_050, Some(late));
        let r = rows(Some(&before), &now, Duration::from_secs(2));
        let u = &r.upstreams[0];
        assert_eq!(
            (u.msgs_per_sec, u.bytes_per_sec),
            (Some(1000.0), Some(10_000.0))
        );
        assert!(
            u.lag_p50.unwrap() > 0.025 && u.lag_p50.unwrap() <= 0.05,
            "{u:?}"
        );
        assert_eq!((u.gaps, u.reconnects), (2, 2));
        let s = &r.sinks[0];
        assert_eq!(s.written_per_sec, Some(500.0));
        assert_eq!(s.dropped, "io=1 slow=3");
        let text = render_plain(&r);
        assert!(
            text.lines()
                .any(|l| l.starts_with("book ") && l.contains("10.0k")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("tcp:127.0.0.1:9000")),
            "{text}"
        );
    }
}
