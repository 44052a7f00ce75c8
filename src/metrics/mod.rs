//! What an operator sees of a running bridge: Prometheus text at `/metrics`, JSON at
//! `/status`, and `/healthz` (200 while every required upstream is open, else 503).
//!
//! The counters themselves live next to the code that moves the data ([`UpstreamStats`],
//! [`SinkStats`], plain relaxed atomics); this module only reads them at scrape time. The
//! supervisor publishes the current set of upstreams and sinks after start and each reload.
//! [`Status`] is the `/status` document; `prometheus` renders the same figures for
//! Prometheus, and `server` answers HTTP. The `wsbridge status` client is
//! [`crate::status_client`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterStatus, ClusterView};
use crate::record::unix_millis;
use crate::sink::SinkStats;
use crate::upstream::{Cause, State, UpstreamStats};

mod prometheus;
mod server;

pub use server::{bind, serve, MetricsBindError};

/// The upstreams and sinks the supervisor currently runs, with their counters.
#[derive(Debug, Default)]
pub struct Metrics {
    current: RwLock<Published>,
    /// With `[cluster]`: the leases, as the lease task last saw them.
    cluster: RwLock<Option<Arc<ClusterView>>>,
}

#[derive(Debug, Default, Clone)]
struct Published {
    upstreams: Vec<(String, bool, Arc<UpstreamStats>)>,
    sinks: Vec<(String, Arc<SinkStats>)>,
}

/// `/status`: one entry per upstream and per sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Whether every required upstream is open (what `/healthz` answers).
    pub healthy: bool,
    /// The upstreams, in config order.
    pub upstreams: Vec<UpstreamStatus>,
    /// The sinks, in config order.
    pub sinks: Vec<SinkStatus>,
    /// Tasks alive in the runtime (upstreams, sinks, clients, …): a leak shows here.
    pub tasks: u64,
    /// With `[cluster]`: which instance holds each upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// One upstream in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamStatus {
    /// Its name.
    pub name: String,
    /// `connecting`, `open`, `backoff` or `stopped`.
    pub state: String,
    /// Whether `/healthz` needs it open.
    pub required: bool,
    /// Completed handshakes.
    pub connects: u64,
    /// Ended connections and failed attempts, by cause.
    pub disconnects: BTreeMap<String, u64>,
    /// Data messages received.
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages sent upstream.
    pub messages_sent: u64,
    /// Seconds since the last data message, if any arrived.
    pub last_message_age_seconds: Option<f64>,
    /// The last Ping round trip, if any.
    pub ping_rtt_seconds: Option<f64>,
    /// `app_ping` messages sent.
    #[serde(default)]
    pub app_pings_sent: u64,
    /// Answers to `app_ping` received (not forwarded).
    #[serde(default)]
    pub app_pings_answered: u64,
    /// Binary messages dropped because they could not be inflated (`decompress`).
    #[serde(default)]
    pub decompress_errors: u64,
    /// Answers sent by `reply` (not in `messages_sent`).
    #[serde(default)]
    pub replies_sent: u64,
    /// Text messages `reply` failed on (forwarded unanswered), and replies dropped because
    /// the peer was not reading them.
    #[serde(default)]
    pub reply_errors: u64,
    /// Gaps in the feed's own sequence numbers (`sequence`).
    #[serde(default)]
    pub gaps: u64,
    /// Messages whose sequence number was not above the previous one (still delivered).
    #[serde(default)]
    pub repeats: u64,
    /// Messages `sequence` could not read a number from.
    #[serde(default)]
    pub sequence_errors: u64,
    /// Messages `event_time` could not read a time from.
    #[serde(default)]
    pub event_time_errors: u64,
    /// Receive time minus event time (`event_time`), once a message had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagStatus>,
}

/// An upstream's lag behind its source (`event_time`) in [`UpstreamStatus`], since it
/// started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LagStatus {
    /// The median, in seconds (interpolated inside its bucket).
    pub p50_seconds: f64,
    /// The 99th percentile, in seconds.
    pub p99_seconds: f64,
    /// Messages with a lag.
    pub count: u64,
    /// The sum of their lags, in seconds.
    pub sum_seconds: f64,
    /// Messages per bucket (not cumulative): the bounds of
    /// [`crate::upstream::lag::LAG_BOUNDS`], then +Inf. `wsbridge top` takes the difference
    /// between two readings for the lag of the last second.
    pub buckets: Vec<u64>,
}

impl LagStatus {
    fn read(histogram: &crate::upstream::lag::LagHistogram) -> Option<LagStatus> {
        use crate::upstream::lag::quantile;
        let snap = histogram.snapshot();
        Some(LagStatus {
            p50_seconds: quantile(&snap.buckets, 0.5)?,
            p99_seconds: quantile(&snap.buckets, 0.99)?,
            count: snap.buckets.iter().sum(),
            sum_seconds: snap.sum_seconds,
            buckets: snap.buckets,
        })
    }
}

/// One sink in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    /// `stdout`, `unix:PATH` or `tcp:ADDR`.
    pub name: String,
    /// Connected clients.
    pub clients: u64,
    /// Records handed to a destination's queue (once per client).
    #[serde(default)]
    pub records_routed: u64,
    /// Records written (to a client, a file, a program; a broker: acknowledged).
    pub records_written: u64,
    /// Records dropped, for any reason.
    pub records_dropped: u64,
    /// Records dropped, by reason (`slow`, `io`, …; reasons with none are left out).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dropped_by_reason: std::collections::BTreeMap<String, u64>,
    /// Bytes queued for clients, not yet written (a broker sink: or not yet acknowledged).
    pub bytes_buffered: u64,
    /// Records the sink's `filter` failed on (each dropped).
    #[serde(default)]
    pub filter_errors: u64,
    /// A nats or redis sink's delivery; absent for the other sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
}

/// The delivery of a nats or redis sink in [`SinkStatus`] (its drops are `records_dropped`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerStatus {
    /// Whether a connection to the server is up (the client's view).
    pub connected: bool,
    /// Seconds since the server last answered (a connect or an acknowledgement): whether
    /// a round trip works, which `connected` alone does not say. Absent: never.
    #[serde(default)]
    pub last_round_trip_age_seconds: Option<f64>,
    /// Records sent for the first time.
    pub published: u64,
    /// Records the server acknowledged.
    pub acknowledged: u64,
    /// Records sent again after a failure.
    pub retried: u64,
    /// Records whose `msg_id = { jq = … }` program gave no id (nats): published with the
    /// `seq` form of id instead.
    #[serde(default)]
    pub msg_id_fallbacks: u64,
}

/// Seconds from `then` (Unix ms; 0 = never) to `now`.
fn age_seconds(now: u64, then: u64) -> Option<f64> {
    (then > 0).then(|| now.saturating_sub(then) as f64 / 1000.0)
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Connecting => "connecting",
        State::Open => "open",
        State::Backoff => "backoff",
        State::Stopped => "stopped",
    }
}

impl Metrics {
    /// Replaces the published upstreams (name, required, stats) and sinks (name, stats).
    pub fn publish(
        &self,
        upstreams: Vec<(String, bool, Arc<UpstreamStats>)>,
        sinks: Vec<(String, Arc<SinkStats>)>,
    ) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Published { upstreams, sinks };
    }

    /// Shows the cluster's leases in `/status` and the metrics.
    pub fn set_cluster(&self, view: Arc<ClusterView>) {
        *self.cluster.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    fn published(&self) -> Published {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The figures now.
    pub fn status(&self) -> Status {
        let published = self.published();
        let now = unix_millis();
        let upstreams: Vec<UpstreamStatus> = published
            .upstreams
            .iter()
            .map(|(name, required, s)| {
                let last = s.last_message_ms.load(Ordering::Relaxed);
                let rtt = s.ping_rtt_us.load(Ordering::Relaxed);
                UpstreamStatus {
                    name: name.clone(),
                    state: state_name(s.state()).into(),
                    required: *required,
                    connects: s.connects.load(Ordering::Relaxed),
                    disconnects: Cause::ALL
                        .iter()
                        .map(|c| {
                            (
                                c.as_str().to_string(),
                                s.disconnects[*c as usize].load(Ordering::Relaxed),
                            )
                        })
                        .collect(),
                    messages_received: s.messages_received.load(Ordering::Relaxed),
                    bytes_received: s.bytes_received.load(Ordering::Relaxed),
                    messages_sent: s.messages_sent.load(Ordering::Relaxed),
                    last_message_age_seconds: (last > 0)
                        .then(|| now.saturating_sub(last) as f64 / 1000.0),
                    ping_rtt_seconds: (rtt > 0).then(|| rtt as f64 / 1e6),
                    app_pings_sent: s.app_pings_sent.load(Ordering::Relaxed),
                    app_pings_answered: s.app_pings_answered.load(Ordering::Relaxed),
                    decompress_errors: s.decompress_errors.load(Ordering::Relaxed),
                    replies_sent: s.replies_sent.load(Ordering::Relaxed),
                    reply_errors: s.reply_errors.load(Ordering::Relaxed),
                    gaps: s.gaps.load(Ordering::Relaxed),
                    repeats: s.repeats.load(Ordering::Relaxed),
                    sequence_errors: s.sequence_errors.load(Ordering::Relaxed),
                    event_time_errors: s.event_time_errors.load(Ordering::Relaxed),
                    lag: LagStatus::read(&s.lag),
                }
            })
            .collect();
        let sinks = published
            .sinks
            .iter()
            .map(|(name, s)| SinkStatus {
                name: name.clone(),
                clients: s.clients.load(Ordering::Relaxed),
                records_routed: s.records_routed.load(Ordering::Relaxed),
                records_written: s.records_written.load(Ordering::Relaxed),
                records_dropped: s.records_dropped(),
                dropped_by_reason: s
                    .dropped
                    .by_reason()
                    .into_iter()
                    .map(|(reason, n)| (reason.to_string(), n))
                    .collect(),
                bytes_buffered: s.bytes_buffered.load(Ordering::Relaxed),
                broker: s
                    .broker
                    .active
                    .load(Ordering::Relaxed)
                    .then(|| BrokerStatus {
                        connected: s.broker.connected.load(Ordering::Relaxed),
                        last_round_trip_age_seconds: age_seconds(
                            now,
                            s.broker.last_ok_ms.load(Ordering::Relaxed),
                        ),
                        published: s.broker.published.load(Ordering::Relaxed),
                        acknowledged: s.broker.acknowledged.load(Ordering::Relaxed),
                        retried: s.broker.retried.load(Ordering::Relaxed),
                        msg_id_fallbacks: s.broker.msg_id_fallbacks.load(Ordering::Relaxed),
                    }),
                filter_errors: s.filter_errors.load(Ordering::Relaxed),
            })
            .collect();
        let healthy = upstreams.iter().all(|u| !u.required || u.state == "open");
        let tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_alive_tasks() as u64);
        let cluster = self
            .cluster
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.get());
        Status {
            healthy,
            upstreams,
            sinks,
            tasks,
            cluster,
        }
    }
}
