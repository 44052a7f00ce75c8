//! `/metrics`: the figures of [`Metrics::status`] in the Prometheus/OpenMetrics text format,
//! read from the counters at each scrape.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::warn;

use super::{BrokerStatus, LagStatus, Metrics, SinkStatus, UpstreamStatus};
use crate::cluster::{ClusterStatus, LeaseStatus};
use crate::upstream::lag::LAG_BOUNDS;

impl Metrics {
    /// `/metrics` in the Prometheus/OpenMetrics text format.
    pub fn prometheus(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(self.clone())));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Reads [`Metrics`] into prometheus-client's encoder at each scrape.
#[derive(Debug)]
struct Collect(Arc<Metrics>);

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A broker counter: its name, help and how to read it.
type Counter = (&'static str, &'static str, fn(&BrokerStatus) -> u64);

/// An upstream counter: its name, help and how to read it.
type UpstreamCounter = (&'static str, &'static str, fn(&UpstreamStatus) -> u64);

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = self.0.status();
        let up = |u: &UpstreamStatus| vec![("upstream", u.name.clone())];
        let sink = |s: &SinkStatus| vec![("sink", s.name.clone())];
        let state_number = |s: &str| match s {
            "connecting" => 0,
            "open" => 1,
            "backoff" => 2,
            _ => 3,
        };
        let ups = &status.upstreams;
        family(
            &mut e,
            "wsbridge_upstream_state",
            "0 connecting, 1 open, 2 backoff, 3 stopped",
            MetricType::Gauge,
            ups.iter()
                .map(|u| (up(u), ConstGauge::new(state_number(&u.state) as i64))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_connects",
            "Completed WebSocket handshakes",
            MetricType::Counter,
            ups.iter().map(|u| (up(u), ConstCounter::new(u.connects))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_disconnects",
            "Ended connections and failed attempts, by cause",
            MetricType::Counter,
            ups.iter().flat_map(|u| {
                u.disconnects.iter().map(|(cause, n)| {
                    (
                        vec![("upstream", u.name.clone()), ("cause", cause.clone())],
                        ConstCounter::new(*n),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_messages_received",
            "Data messages received",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.messages_received))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_bytes_received",
            "Payload bytes received",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.bytes_received))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_messages_sent",
            "Messages sent upstream (on_connect and inbound)",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.messages_sent))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_last_message_age_seconds",
            "Seconds since the last data message",
            MetricType::Gauge,
            ups.iter().filter_map(|u| {
                u.last_message_age_seconds
                    .map(|a| (up(u), ConstGauge::new(a)))
            }),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_ping_rtt_seconds",
            "Round trip of the last answered Ping",
            MetricType::Gauge,
            ups.iter()
                .filter_map(|u| u.ping_rtt_seconds.map(|r| (up(u), ConstGauge::new(r)))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_app_pings_sent",
            "app_ping messages sent",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.app_pings_sent))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_app_pings_answered",
            "Answers to app_ping received (not forwarded)",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.app_pings_answered))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_decompress_errors",
            "Binary messages dropped because they could not be inflated (decompress)",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.decompress_errors))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_replies_sent",
            "Answers to the server's own pings sent by reply (not in messages_sent)",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.replies_sent))),
        )?;
        family(
            &mut e,
            "wsbridge_upstream_reply_errors",
            "Text messages reply failed on (forwarded unanswered), and replies dropped because the peer was not reading",
            MetricType::Counter,
            ups.iter()
                .map(|u| (up(u), ConstCounter::new(u.reply_errors))),
        )?;
        let feed: [UpstreamCounter; 4] = [
            (
                "wsbridge_upstream_gaps",
                "Gaps in the feed's own sequence numbers (sequence)",
                |u| u.gaps,
            ),
            (
                "wsbridge_upstream_repeats",
                "Messages whose sequence number was not above the previous one (delivered)",
                |u| u.repeats,
            ),
            (
                "wsbridge_upstream_sequence_errors",
                "Messages sequence could not read a number from",
                |u| u.sequence_errors,
            ),
            (
                "wsbridge_upstream_event_time_errors",
                "Messages event_time could not read a time from",
                |u| u.event_time_errors,
            ),
        ];
        for (name, help, value) in feed {
            family(
                &mut e,
                name,
                help,
                MetricType::Counter,
                ups.iter().map(|u| (up(u), ConstCounter::new(value(u)))),
            )?;
        }
        family(
            &mut e,
            "wsbridge_upstream_lag_seconds",
            "Receive time minus the message's own event time (event_time)",
            MetricType::Histogram,
            ups.iter()
                .filter_map(|u| Some((up(u), ConstHistogram(u.lag.as_ref()?)))),
        )?;
        let sinks = &status.sinks;
        family(
            &mut e,
            "wsbridge_sink_clients",
            "Connected clients",
            MetricType::Gauge,
            sinks
                .iter()
                .map(|s| (sink(s), ConstGauge::new(s.clients as i64))),
        )?;
        family(
            &mut e,
            "wsbridge_sink_records_routed",
            "Records handed to a destination of the sink (once per client)",
            MetricType::Counter,
            sinks
                .iter()
                .map(|s| (sink(s), ConstCounter::new(s.records_routed))),
        )?;
        family(
            &mut e,
            "wsbridge_sink_records_written",
            "Records written (a broker: acknowledged as stored)",
            MetricType::Counter,
            sinks
                .iter()
                .map(|s| (sink(s), ConstCounter::new(s.records_written))),
        )?;
        // Every reason of every sink, zeros included, so a rate() query has a series to
        // start from before the first drop.
        family(
            &mut e,
            "wsbridge_sink_records_dropped",
            "Records dropped, by reason",
            MetricType::Counter,
            sinks.iter().flat_map(|s| {
                crate::sink::DropReason::ALL.iter().map(move |reason| {
                    let reason = reason.label();
                    let n = s.dropped_by_reason.get(reason).copied().unwrap_or(0);
                    (
                        vec![("sink", s.name.clone()), ("reason", reason.to_string())],
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "wsbridge_sink_bytes_buffered",
            "Bytes queued for clients, not yet written",
            MetricType::Gauge,
            sinks
                .iter()
                .map(|s| (sink(s), ConstGauge::new(s.bytes_buffered as i64))),
        )?;
        let brokers: Vec<_> = sinks
            .iter()
            .filter_map(|s| Some((sink(s), s.broker.as_ref()?)))
            .collect();
        family(
            &mut e,
            "wsbridge_sink_broker_connected",
            "1 while a broker sink is connected to its server",
            MetricType::Gauge,
            brokers
                .iter()
                .map(|(l, b)| (l.clone(), ConstGauge::new(i64::from(b.connected)))),
        )?;
        let counters: [Counter; 4] = [
            (
                "wsbridge_sink_broker_published",
                "Records sent to the broker for the first time",
                |b| b.published,
            ),
            (
                "wsbridge_sink_broker_acknowledged",
                "Records the broker acknowledged",
                |b| b.acknowledged,
            ),
            (
                "wsbridge_sink_broker_retried",
                "Records sent to the broker again after a failure",
                |b| b.retried,
            ),
            (
                "wsbridge_sink_broker_msg_id_fallbacks",
                "Records whose msg_id jq program gave no id, published with the seq form of id",
                |b| b.msg_id_fallbacks,
            ),
        ];
        for (name, help, value) in counters {
            family(
                &mut e,
                name,
                help,
                MetricType::Counter,
                brokers
                    .iter()
                    .map(|(l, b)| (l.clone(), ConstCounter::new(value(b)))),
            )?;
        }
        family(
            &mut e,
            "wsbridge_sink_filter_errors",
            "Records the sink's filter failed on (each dropped)",
            MetricType::Counter,
            sinks
                .iter()
                .map(|s| (sink(s), ConstCounter::new(s.filter_errors))),
        )?;
        if let Some(c) = &status.cluster {
            cluster(&mut e, c)?;
        }
        Ok(())
    }
}

/// A histogram read from [`LagStatus`], encoded as Prometheus buckets.
struct ConstHistogram<'a>(&'a LagStatus);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let bounds = LAG_BOUNDS.iter().copied().chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.0.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `[cluster]`: one row per lease slot, labelled with its holder, and this instance's counts.
fn cluster(e: &mut DescriptorEncoder<'_>, c: &ClusterStatus) -> Result<(), std::fmt::Error> {
    let slot = |l: &LeaseStatus| {
        vec![
            ("upstream", l.upstream.clone()),
            ("slot", l.slot.to_string()),
            ("holder", l.holder.clone().unwrap_or_default()),
        ]
    };
    family(
        e,
        "wsbridge_cluster_lease_held_here",
        "1 when this instance holds the lease slot",
        MetricType::Gauge,
        c.leases.iter().map(|l| {
            let here = l.holder.as_deref() == Some(c.instance.as_str());
            (slot(l), ConstGauge::new(i64::from(here)))
        }),
    )?;
    family(
        e,
        "wsbridge_cluster_lease_age_seconds",
        "Seconds since the holder acquired the lease slot",
        MetricType::Gauge,
        c.leases
            .iter()
            .filter_map(|l| Some((slot(l), ConstGauge::new(l.age_seconds?))))
            .collect::<Vec<_>>(),
    )?;
    family(
        e,
        "wsbridge_cluster_lease_handovers",
        "Times the lease slot passed from one instance to another, as seen here",
        MetricType::Counter,
        c.leases.iter().map(|l| {
            let labels = vec![
                ("upstream", l.upstream.clone()),
                ("slot", l.slot.to_string()),
            ];
            (labels, ConstCounter::new(l.handovers))
        }),
    )?;
    family(
        e,
        "wsbridge_cluster_members",
        "Live instances sharing the lease bucket",
        MetricType::Gauge,
        [(Vec::new(), ConstGauge::new(c.members.len() as i64))],
    )?;
    let counts: [(&str, &str, u64); 3] = [
        (
            "wsbridge_cluster_leases_acquired",
            "Lease slots this instance took",
            c.acquired,
        ),
        (
            "wsbridge_cluster_leases_released",
            "Lease slots this instance handed back",
            c.released,
        ),
        (
            "wsbridge_cluster_leases_lost",
            "Lease slots this instance lost (not renewed in time or taken)",
            c.lost,
        ),
    ];
    for (name, help, n) in counts {
        family(
            e,
            name,
            help,
            MetricType::Counter,
            [(Vec::new(), ConstCounter::new(n))],
        )?;
    }
    Ok(())
}
