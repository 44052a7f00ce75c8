//! The sinks' families of `/metrics`: clients, routed, written and dropped (by reason)
//! records, what is buffered, and the broker and filter counters.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{family, Counter};
use crate::metrics::SinkStatus;

/// Encodes every sink family.
pub(super) fn sink_families(
    e: &mut DescriptorEncoder<'_>,
    sinks: &[SinkStatus],
) -> Result<(), std::fmt::Error> {
    let sink = |s: &SinkStatus| vec![("sink", s.name.clone())];
    family(
        e,
        "wsbridge_sink_clients",
        "Connected clients",
        MetricType::Gauge,
        sinks
            .iter()
            .map(|s| (sink(s), ConstGauge::new(s.clients as i64))),
    )?;
    family(
        e,
        "wsbridge_sink_records_routed",
        "Records handed to a destination of the sink (once per client)",
        MetricType::Counter,
        sinks
            .iter()
            .map(|s| (sink(s), ConstCounter::new(s.records_routed))),
    )?;
    family(
        e,
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
        e,
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
        e,
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
        e,
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
            e,
            name,
            help,
            MetricType::Counter,
            brokers
                .iter()
                .map(|(l, b)| (l.clone(), ConstCounter::new(value(b)))),
        )?;
    }
    family(
        e,
        "wsbridge_sink_filter_errors",
        "Records the sink's filter failed on (each dropped)",
        MetricType::Counter,
        sinks
            .iter()
            .map(|s| (sink(s), ConstCounter::new(s.filter_errors))),
    )?;
    Ok(())
}
