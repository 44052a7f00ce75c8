//! `wsbridge status`: reads `/status` from a running daemon over HTTP and renders it as
//! the table the command prints.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::metrics::Status;

/// Why `wsbridge status` could not read the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No connection or no answer.
    #[error("cannot reach the daemon's metrics endpoint at {addr}: {reason}; is `wsbridge run` running with this config?")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An answer that is not a status document.
    #[error("unexpected answer from {addr}/status: {reason}")]
    BadAnswer {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// The largest `/status` document read; a daemon's is a few KiB per upstream and sink.
const MAX_STATUS_BYTES: usize = 16 << 20;

/// How long the daemon has to answer: it answers from counters, at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `/status` from a running daemon.
pub async fn fetch_status(addr: SocketAddr) -> Result<Status, StatusError> {
    let unreachable = |reason: String| StatusError::Unreachable { addr, reason };
    let bad = |reason: String| StatusError::BadAnswer { addr, reason };
    let (status, body) = tokio::time::timeout(ANSWER_TIMEOUT, get_status(addr))
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {}",
                crate::duration::human(ANSWER_TIMEOUT)
            ))
        })?
        .map_err(|e| match e {
            Exchange::Connect(e) => unreachable(e.to_string()),
            Exchange::Http(e) => unreachable(e.to_string()),
            Exchange::Body(e) => bad(e),
        })?;
    if status != StatusCode::OK {
        return Err(bad(format!("HTTP {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))
}

/// How one request for `/status` failed.
enum Exchange {
    Connect(std::io::Error),
    Http(hyper::Error),
    Body(String),
}

/// One `GET /status` on a fresh connection: the answer's status and body.
async fn get_status(addr: SocketAddr) -> Result<(StatusCode, Bytes), Exchange> {
    let stream = TcpStream::connect(addr).await.map_err(Exchange::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Exchange::Http)?;
    let request = Request::get("/status")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| Exchange::Body(e.to_string()))?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(Exchange::Http)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| Exchange::Body(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    // The connection is driven beside the exchange; it ends only once the sender is gone, or
    // with an error the exchange sees too.
    tokio::select! {
        answer = exchange => answer,
        ended = connection => Err(match ended {
            Err(e) => Exchange::Http(e),
            Ok(()) => Exchange::Body("the connection closed before the answer".into()),
        }),
    }
}

/// `0.3s ago`, or `never`.
fn ago(seconds: Option<f64>) -> String {
    seconds.map_or("never".to_string(), |s| format!("{s:.1}s ago"))
}

/// The table `wsbridge status` prints: one row per upstream and per sink.
pub fn render_table(status: &Status) -> String {
    use std::fmt::Write as _;
    let age = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}s"));
    let rtt = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.1}ms", s * 1000.0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:>8} {:>11} {:>12} {:>12} {:>8} {:>9} {:>9}",
        "UPSTREAM",
        "STATE",
        "CONNECTS",
        "DISCONNECTS",
        "RECEIVED",
        "BYTES",
        "SENT",
        "LAST MSG",
        "PING RTT"
    );
    for u in &status.upstreams {
        let name = if u.required {
            format!("{}*", u.name)
        } else {
            u.name.clone()
        };
        let disconnects: u64 = u.disconnects.values().sum();
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>8} {:>11} {:>12} {:>12} {:>8} {:>9} {:>9}",
            name,
            u.state,
            u.connects,
            disconnects,
            u.messages_received,
            u.bytes_received,
            u.messages_sent,
            age(u.last_message_age_seconds),
            rtt(u.ping_rtt_seconds)
        );
    }
    render_feeds(status, &mut out);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>12} {:>10} {:>12}  BROKER (LAST ANSWER)",
        "SINK", "CLIENTS", "WRITTEN", "DROPPED", "BUFFERED"
    );
    for s in &status.sinks {
        // A client can say "connected" for a while after the server is gone: the age of
        // the server's last answer says whether a round trip works.
        let broker = s.broker.as_ref().map_or("-".to_string(), |b| {
            let state = if b.connected { "up" } else { "down" };
            format!("{state} ({})", ago(b.last_round_trip_age_seconds))
        });
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>12} {:>10} {:>12}  {}",
            s.name, s.clients, s.records_written, s.records_dropped, s.bytes_buffered, broker
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "health: {}{}",
        if status.healthy {
            "ok"
        } else {
            "DEGRADED (a required upstream is not open)"
        },
        if status.upstreams.iter().any(|u| u.required) {
            "  (* = required)"
        } else {
            ""
        }
    );
    if let Some(c) = &status.cluster {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "cluster: instance {}, {} member(s): {}; last round trip {}{}",
            c.instance,
            c.members.len(),
            c.members.join(", "),
            ago(c.last_round_trip_age_seconds),
            if c.connected {
                ""
            } else {
                "  (lease bucket UNREACHABLE)"
            }
        );
        let _ = writeln!(
            out,
            "{:<20} {:>4} {:<24} {:>9} {:>9}",
            "LEASE", "SLOT", "HOLDER", "AGE", "HANDOVERS"
        );
        for l in &c.leases {
            let _ = writeln!(
                out,
                "{:<20} {:>4} {:<24} {:>9} {:>9}",
                l.upstream,
                l.slot,
                l.holder.as_deref().unwrap_or("-"),
                age(l.age_seconds),
                l.handovers
            );
        }
    }
    out
}

/// A lag in seconds as milliseconds, or `-`.
pub fn lag_ms(seconds: Option<f64>) -> String {
    seconds.map_or("-".to_string(), |s| format!("{:.0}ms", s * 1000.0))
}

/// The feed checks (`sequence`, `event_time`) of the upstreams that have something to show.
fn render_feeds(status: &Status, out: &mut String) {
    use std::fmt::Write as _;
    let checked = status.upstreams.iter().filter(|u| {
        u.lag.is_some() || u.gaps + u.repeats + u.sequence_errors + u.event_time_errors > 0
    });
    let mut header = false;
    for u in checked {
        if !header {
            header = true;
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<20} {:>9} {:>9} {:>8} {:>8} {:>10} {:>11}",
                "FEED", "LAG P50", "LAG P99", "GAPS", "REPEATS", "SEQ ERRORS", "TIME ERRORS"
            );
        }
        let lag = u.lag.as_ref();
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>8} {:>8} {:>10} {:>11}",
            u.name,
            lag_ms(lag.map(|l| l.p50_seconds)),
            lag_ms(lag.map(|l| l.p99_seconds)),
            u.gaps,
            u.repeats,
            u.sequence_errors,
            u.event_time_errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_the_cluster_show_when_the_server_last_answered() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "healthy": true,
            "upstreams": [],
            "tasks": 1,
            "sinks": [
                {"name": "nats", "clients": 0, "records_written": 5, "records_dropped": 0,
                 "bytes_buffered": 0,
                 "broker": {"connected": true, "published": 5, "acknowledged": 4, "retried": 0,
                            "last_round_trip_age_seconds": 12.04}},
                // A daemon from before the field: never.
                {"name": "redis", "clients": 0, "records_written": 0, "records_dropped": 0,
                 "bytes_buffered": 0,
                 "broker": {"connected": false, "published": 0, "acknowledged": 0, "retried": 0}},
                {"name": "stdout", "clients": 1, "records_written": 5, "records_dropped": 0,
                 "bytes_buffered": 0}
            ],
            "cluster": {"instance": "a", "connected": true, "members": ["a"], "leases": [],
                        "acquired": 0, "released": 0, "lost": 0,
                        "last_round_trip_age_seconds": 0.5}
        }))
        .unwrap();
        let table = render_table(&status);
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
                .to_string()
        };
        assert!(row("nats ").ends_with("up (12.0s ago)"), "{table}");
        assert!(row("redis ").ends_with("down (never)"), "{table}");
        assert!(row("stdout ").ends_with("  -"), "{table}");
        assert!(
            table.contains("cluster: instance a, 1 member(s): a; last round trip 0.5s ago\n"),
            "{table}"
        );
    }
}
