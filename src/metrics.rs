//! What an operator sees of a running bridge: Prometheus text at `/metrics`, JSON at
//! `/status`, and `/healthz` (200 while every required upstream is open, else 503).
//!
//! The counters themselves live next to the code that moves the data ([`UpstreamStats`],
//! [`SinkStats`], plain relaxed atomics); this module only reads them at scrape time. The
//! supervisor publishes the current set of upstreams and sinks after start and each reload.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::record::unix_millis;
use crate::sink::SinkStats;
use crate::upstream::{Cause, State, UpstreamStats};

/// The upstreams and sinks the supervisor currently runs, with their counters.
#[derive(Debug, Default)]
pub struct Metrics {
    current: RwLock<Published>,
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
}

/// One sink in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    /// `stdout`, `unix:PATH` or `tcp:ADDR`.
    pub name: String,
    /// Connected clients.
    pub clients: u64,
    /// Records handed to clients (or written to stdout).
    pub records_written: u64,
    /// Records dropped for slow clients.
    pub records_dropped: u64,
    /// Bytes queued for clients, not yet written.
    pub bytes_buffered: u64,
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
                }
            })
            .collect();
        let sinks = published
            .sinks
            .iter()
            .map(|(name, s)| SinkStatus {
                name: name.clone(),
                clients: s.clients.load(Ordering::Relaxed),
                records_written: s.records_written.load(Ordering::Relaxed),
                records_dropped: s.records_dropped.load(Ordering::Relaxed),
                bytes_buffered: s.bytes_buffered.load(Ordering::Relaxed),
            })
            .collect();
        let healthy = upstreams.iter().all(|u| !u.required || u.state == "open");
        let tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_alive_tasks() as u64);
        Status {
            healthy,
            upstreams,
            sinks,
            tasks,
        }
    }

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
            "wsbridge_sink_records_written",
            "Records handed to clients or written to stdout",
            MetricType::Counter,
            sinks
                .iter()
                .map(|s| (sink(s), ConstCounter::new(s.records_written))),
        )?;
        family(
            &mut e,
            "wsbridge_sink_records_dropped",
            "Records dropped for slow clients",
            MetricType::Counter,
            sinks
                .iter()
                .map(|s| (sink(s), ConstCounter::new(s.records_dropped))),
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
        Ok(())
    }
}

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for [metrics]: {source}; pick a free port or stop what is using it"
)]
pub struct MetricsBindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the endpoint; [`serve`] answers on it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError { addr, source })
}

/// Answers `/metrics`, `/status` and `/healthz` until cancelled; one task per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(e) = result { debug!(%peer, error = %e, "metrics connection ended") },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn respond(metrics: &Arc<Metrics>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.prometheus(),
        ),
        "/status" => {
            let body = serde_json::to_string_pretty(&metrics.status()).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        "/healthz" => {
            let status = metrics.status();
            let down: Vec<_> = status
                .upstreams
                .iter()
                .filter(|u| u.required && u.state != "open")
                .map(|u| u.name.as_str())
                .collect();
            if down.is_empty() {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("required upstreams not open: {}\n", down.join(", ")),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /status or /healthz\n".into(),
        ),
    }
}

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

/// Reads `/status` from a running daemon (a plain HTTP/1.0 GET: one request, then EOF).
pub async fn fetch_status(addr: SocketAddr) -> Result<Status, StatusError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let unreachable = |reason: String| StatusError::Unreachable { addr, reason };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        stream.take(16 << 20).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let bad = |reason: String| StatusError::BadAnswer { addr, reason };
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        return Err(bad(status_line.to_string()));
    }
    serde_json::from_str(body).map_err(|e| bad(e.to_string()))
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
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>12} {:>10} {:>12}",
        "SINK", "CLIENTS", "WRITTEN", "DROPPED", "BUFFERED"
    );
    for s in &status.sinks {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>12} {:>10} {:>12}",
            s.name, s.clients, s.records_written, s.records_dropped, s.bytes_buffered
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
    out
}
