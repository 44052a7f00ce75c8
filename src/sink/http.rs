//! `type = "http"`: records POSTed in batches to a URL as NDJSON
//! (`Content-Type: application/x-ndjson`), one request in flight, at least once.
//!
//! The shared [`super::Driver`] encodes, applies `on_slow` and bounds the queue (`buffer`
//! bytes, like the brokers); [`deliver`] is the queue's consumer. It takes what is queued,
//! waits up to `linger` for a batch to fill to `max_batch` records, and POSTs it. A batch
//! gives its room back to the queue only once the server has answered it, so `buffer` bounds
//! what waits in wsbridge while the server is down or slow; then `on_slow` blocks the
//! upstreams or drops (counted).
//!
//! Answers: 2xx is delivered. A connection error, no answer within `timeout`, 429 and 5xx are
//! retried, the same batch, after a pause from [`Backoff`], or as long as the server's
//! `Retry-After` says (seconds or an HTTP date, at most an hour). Any other status (4xx, a
//! redirect) refuses the batch: its records are counted dropped (`rejected`) with the status
//! and the start of the server's answer in the log, and the next batch goes. A server that
//! stored a batch whose answer was lost or late gets it again: deliveries are at least once.

pub mod settings;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tracing::{info, warn};

use super::queue::records;
use super::{DropReason, Encoded, QueueReader, SinkContext, SinkError, SinkStats};
use crate::backoff::Backoff;
use crate::sink::broker::settings::broker_reconnect;
pub use settings::HttpSettings;

/// The longest pause a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of a refusing server's answer goes into the log line.
const SNIPPET: usize = 200;
/// How much of an answer's body is read at most (the rest is left unread).
const MAX_ANSWER: usize = 64 * 1024;

/// Runs an http sink: the shared driver and queue, consumed by [`deliver`].
pub async fn run(ctx: SinkContext, settings: HttpSettings) -> Result<(), SinkError> {
    super::run_consumed(ctx, move |reader, stats, name| {
        deliver(reader, settings, stats, name)
    })
    .await
}

/// What became of one request's records.
enum Outcome {
    /// The server took them (2xx).
    Delivered,
    /// The server refused them for good; why, for the log.
    Rejected(String),
}

/// One request at a time to the sink's URL, retried until answered.
struct Poster {
    sink: String,
    shown: String,
    uri: Uri,
    settings: HttpSettings,
    client: Client<HttpConnector, Full<Bytes>>,
    stats: Arc<SinkStats>,
    backoff: Backoff,
}

/// Feeds the server from `queue` until the queue closes and every batch taken from it has
/// been answered. While the server is away it keeps trying: the sink is aborted at the end
/// of `shutdown_timeout`, and what it still held is counted dropped (`shutdown`).
pub async fn deliver(
    mut queue: QueueReader,
    settings: HttpSettings,
    stats: Arc<SinkStats>,
    sink: String,
) -> io::Result<()> {
    stats.broker.active.store(true, Ordering::Relaxed);
    let uri: Uri = settings.url.as_str().parse().map_err(|e| {
        io::Error::other(format!("sink {sink}: the url is not one hyper takes: {e}"))
    })?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.timeout));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let mut poster = Poster {
        shown: settings.display_url(),
        sink,
        uri,
        settings,
        client,
        stats,
        backoff: Backoff::new(broker_reconnect()),
    };
    let max_batch = poster.settings.max_batch as u64;
    while let Some(mut runs) = queue.next_round().await {
        // Wait up to `linger` for the batch to fill.
        let deadline = Instant::now() + poster.settings.linger;
        while runs.iter().map(records).sum::<u64>() < max_batch {
            match tokio::time::timeout_at(deadline, queue.next_round()).await {
                Ok(Some(more)) => runs.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        // A lapsed lease's records are not posted (counted `fenced`).
        let runs = queue.drop_fenced(runs);
        if !runs.is_empty() {
            poster.post_runs(&mut queue, runs).await;
        }
    }
    info!(
        sink = %poster.sink,
        delivered = poster.stats.broker.acknowledged.load(Ordering::Relaxed),
        "every batch was answered"
    );
    poster
        .stats
        .broker
        .connected
        .store(false, Ordering::Relaxed);
    Ok(())
}

impl Poster {
    /// POSTs the records of `runs`, `max_batch` a request, then settles every run with the
    /// queue: written, or as many dropped as the server refused.
    async fn post_runs(&mut self, queue: &mut QueueReader, runs: Vec<Encoded>) {
        let max_batch = self.settings.max_batch;
        let mut rejected = vec![0u64; runs.len()];
        let mut why = String::new();
        // The records of the request being filled, per run.
        let mut members: Vec<(usize, u64)> = Vec::new();
        let mut body = Vec::new();
        let mut count = 0;
        for (i, run) in runs.iter().enumerate() {
            // A notice of the driver's (a drop report) is meant for a socket's reader.
            if records(run) == 0 {
                continue;
            }
            for record in run.records() {
                body.extend_from_slice(record.line);
                count += 1;
                match members.last_mut() {
                    Some((at, n)) if *at == i => *n += 1,
                    _ => members.push((i, 1)),
                }
                if count == max_batch {
                    self.post_one(&mut body, &mut members, &mut rejected, &mut why)
                        .await;
                    count = 0;
                }
            }
        }
        if count > 0 {
            self.post_one(&mut body, &mut members, &mut rejected, &mut why)
                .await;
        }
        for (run, dropped) in runs.iter().zip(rejected) {
            queue.settled_run(run, dropped, DropReason::Rejected, &why);
        }
    }

    async fn post_one(
        &mut self,
        body: &mut Vec<u8>,
        members: &mut Vec<(usize, u64)>,
        rejected: &mut [u64],
        why: &mut String,
    ) {
        let n: u64 = members.iter().map(|(_, n)| n).sum();
        let body = Bytes::from(std::mem::take(body));
        if let Outcome::Rejected(reason) = self.post(body, n).await {
            for (i, n) in members.iter() {
                rejected[*i] += n;
            }
            *why = reason;
        }
        members.clear();
    }

    /// POSTs `body` (`records` records) until the server answers other than 429 or 5xx.
    async fn post(&mut self, body: Bytes, records: u64) -> Outcome {
        let broker = &self.stats.broker;
        broker.published.fetch_add(records, Ordering::Relaxed);
        loop {
            let failure = match tokio::time::timeout(self.settings.timeout, self.attempt(&body))
                .await
            {
                Err(_) => {
                    broker.connected.store(false, Ordering::Relaxed);
                    (
                        format!(
                            "no answer within timeout = \"{}\"",
                            humantime::format_duration(self.settings.timeout)
                        ),
                        None,
                    )
                }
                Ok(Err(e)) => {
                    broker.connected.store(false, Ordering::Relaxed);
                    (
                        format!("cannot reach the server: {}", error_chain(&e)),
                        None,
                    )
                }
                Ok(Ok((status, retry_after, answer))) => {
                    broker.connected.store(true, Ordering::Relaxed);
                    if status.is_success() {
                        broker.acknowledged.fetch_add(records, Ordering::Relaxed);
                        self.backoff.reset();
                        return Outcome::Delivered;
                    }
                    let said = format!("HTTP {status}{}", answer_text(&answer));
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        (said, retry_after)
                    } else {
                        let hint = if status.is_redirection() {
                            "; redirects are not followed: set url to the final address"
                        } else {
                            ""
                        };
                        let reason =
                            format!("{} refused a batch of {records}: {said}{hint}", self.shown);
                        warn!(sink = %self.sink, records, "{reason}");
                        return Outcome::Rejected(reason);
                    }
                }
            };
            let (reason, retry_after) = failure;
            // `max_attempts` is 0: there is always a next delay.
            let backoff = self.backoff.next_delay().unwrap_or_default();
            let delay = retry_after.unwrap_or(backoff).min(MAX_RETRY_AFTER);
            warn!(
                sink = %self.sink,
                url = %self.shown,
                records,
                retry_in_ms = delay.as_millis() as u64,
                "{reason}; sending the batch again"
            );
            tokio::time::sleep(delay).await;
            broker.retried.fetch_add(records, Ordering::Relaxed);
        }
    }

    /// One request: the status, the pause `Retry-After` asks for, and the start of the body.
    async fn attempt(
        &self,
        body: &Bytes,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), hyper_util::client::legacy::Error> {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        for (name, value) in &self.settings.headers {
            headers.append(name.clone(), value.0.clone());
        }
        let response = self.client.request(request).await?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        // Read the answer (so the connection can be used again), keeping its start.
        let mut answer = Vec::new();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if answer.len() < SNIPPET {
                    let take = (SNIPPET - answer.len()).min(data.len());
                    answer.extend_from_slice(&data[..take]);
                }
                if answer.len() >= MAX_ANSWER {
                    break;
                }
            }
        }
        Ok((status, retry_after, answer))
    }
}

/// `: <the start of the answer>` when the server said something, on one line.
fn answer_text(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// An error and its causes, joined: hyper's "client error (Connect)" alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The pause `Retry-After` asks for (seconds, or an HTTP date after `now`), at most an hour.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(text).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_a_date_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(1)));
        h.insert(RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, date.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, past.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn answers_go_into_one_line() {
        assert_eq!(answer_text(b""), "");
        assert_eq!(answer_text(b"bad\r\nline\n"), ": bad  line");
    }
}
