//! The HTTP endpoint: `/metrics`, `/status` and `/healthz` over HTTP/1.1 (hyper), one task
//! per connection, until shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Metrics;

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
///
/// The OS error is part of the message and deliberately not a `source`: a report that prints
/// the chain (`{:#}`) would say it twice.
#[error(
    "cannot listen on {addr} for [metrics]: {error}; pick a free port or stop what is using it"
)]
pub struct MetricsBindError {
    addr: SocketAddr,
    error: std::io::Error,
}

/// Binds the endpoint; [`serve`] answers on it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| MetricsBindError { addr, error })
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
    // HEAD is answered as GET: hyper sends the head (Content-Length included) and leaves the
    // body out, as HTTP wants, so probes that use HEAD see the real status.
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET or HEAD\n".into(),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
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
