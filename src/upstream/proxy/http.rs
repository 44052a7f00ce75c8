//! An HTTP CONNECT tunnel, through hyper's HTTP/1 client: it writes the request and parses
//! the proxy's answer (status line, headers, any body of a refusal), and on 2xx hands the
//! socket back through its upgrade mechanism, so no HTTP is written by hand here.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderValue, HOST, PROXY_AUTHORIZATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Proxy, ProxyError, Target, CREDENTIALS_HINT};

/// Opens a CONNECT tunnel to `target` through `proxy` (an `http://` proxy). The target is
/// sent by name: the proxy resolves it, as curl lets it.
pub(super) async fn connect(proxy: &Proxy, target: &Target) -> Result<TcpStream, ProxyError> {
    let failed = |reason: String| ProxyError::Protocol {
        proxy: proxy.to_string(),
        target: target.to_string(),
        reason,
        kind: "HTTP",
    };
    let stream = proxy.dial().await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
    let mut connection = std::pin::pin!(connection.with_upgrades());

    let authority = target.to_string();
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(authority.as_str())
        .header(HOST, authority.as_str());
    if let Some((user, password)) = proxy.credentials() {
        request = request.header(PROXY_AUTHORIZATION, basic_auth(user, password));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| failed(format!("cannot build the CONNECT request: {e}")))?;

    // The connection must be driven while the request waits for its answer. On a 2xx answer
    // to CONNECT it finishes by itself, handing the socket to the upgrade, possibly in the
    // same poll that delivers the answer.
    let mut send = std::pin::pin!(sender.send_request(request));
    let mut handed_over = false;
    let response = tokio::select! {
        biased;
        response = send.as_mut() => response,
        ended = connection.as_mut() => {
            ended.map_err(|e| failed(e.to_string()))?;
            handed_over = true;
            send.await
        }
    };
    let response = response.map_err(|e| failed(answer_error(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProxyError::Refused {
            proxy: proxy.to_string(),
            target: target.to_string(),
            said: format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
            hint: refusal_hint(status),
        });
    }
    let upgraded = if handed_over {
        hyper::upgrade::on(response).await
    } else {
        tokio::join!(hyper::upgrade::on(response), connection).0
    };
    let upgraded = upgraded.map_err(|e| failed(e.to_string()))?;
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| failed("the tunnel is not the socket it was opened on".into()))?;
    // The target speaks only after we do (TLS ClientHello, WebSocket request), so nothing may
    // have arrived yet; bytes here would be lost by handing over the bare socket.
    if !parts.read_buf.is_empty() {
        return Err(failed(
            "it sent data after its answer, before the tunnel was used".into(),
        ));
    }
    Ok(parts.io.into_inner())
}

/// What went wrong before an answer: hyper says "connection closed before message completed"
/// for a proxy that hung up.
fn answer_error(error: &hyper::Error) -> String {
    if error.is_incomplete_message() || error.is_canceled() {
        "it closed the connection without answering".into()
    } else {
        error.to_string()
    }
}

/// `Basic base64(user:password)`, marked sensitive so that hyper never logs it.
fn basic_auth(user: &str, password: &str) -> HeaderValue {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    // Base64 is always a valid header value; the fallback keeps a bug from becoming a panic.
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// What to do about a refused CONNECT.
fn refusal_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED | StatusCode::UNAUTHORIZED => CREDENTIALS_HINT,
        StatusCode::FORBIDDEN => {
            "the proxy does not allow this host or port (tinyproxy: ConnectPort; squid: SSL_ports), or this user"
        }
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            "the proxy could not reach the host: check the URL's host and port from the proxy's side"
        }
        _ => "check the proxy's logs for why it refused",
    }
}
