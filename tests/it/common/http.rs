//! The daemon's metrics listener read over plain HTTP, as a scraper or `curl` would: the body
//! of a GET (the Prometheus text of `/metrics`, `/status` as the JSON users read). The typed
//! `/status`, retried until it answers, is [`super::status_of`].

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect_tcp;

/// `GET path` on the metrics listener at `port`: the body.
pub async fn http_get(port: u16, path: &str) -> String {
    let mut stream = connect_tcp(([127, 0, 0, 1], port).into()).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    match out.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("not an HTTP response: {out}"),
    }
}

/// The first upstream's row in `/status`, as JSON.
pub async fn upstream_status(port: u16) -> Value {
    let body = http_get(port, "/status").await;
    let status: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    status["upstreams"][0].clone()
}
