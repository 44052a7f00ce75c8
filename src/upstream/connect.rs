//! Opening one WebSocket client connection: the handshake request (headers, cookies,
//! subprotocols, origin), the connect timeout and the frame-size limits. The stream it runs
//! on (TCP, proxy, TLS) comes from [`super::dial`].

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::{header, HeaderName, HeaderValue, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::MaybeTlsStream;

use super::read_ahead::{ReadAhead, TUNGSTENITE_READ};
use super::socket::{self, Socket};
use crate::config::UpstreamConfig;

/// An open client connection, read through [`ReadAhead`].
pub type WsStream = Socket<ReadAhead<MaybeTlsStream<TcpStream>>>;

/// A connection that finished its handshake.
pub struct Connected {
    /// The socket.
    pub ws: WsStream,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
}

/// Why a connection attempt failed. Messages never include secrets: the URL is shown redacted
/// and header values not at all.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The whole attempt took longer than `connect_timeout`.
    #[error("no connection within connect_timeout ({0}); check that the host is reachable or raise connect_timeout")]
    Timeout(String),
    /// The server answered the handshake with an HTTP status other than 101.
    #[error("handshake rejected with HTTP {status}{body}; check the URL path and the credentials in headers/cookies")]
    Rejected {
        /// The status line, such as `403 Forbidden`.
        status: String,
        /// `: ` and the first line of the response body, or empty.
        body: String,
        /// The status code, for the record and the retry rule ([`super::refused`]).
        code: u16,
        /// What `Retry-After` asked for, if the server sent one.
        retry_after: Option<std::time::Duration>,
    },
    /// TLS failed (certificate, protocol).
    #[error("TLS handshake failed: {reason}; {hint}")]
    Tls {
        /// What rustls reported.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// TCP or DNS failed.
    #[error("{0}")]
    Io(String),
    /// The proxy could not be reached, or refused the tunnel.
    #[error(transparent)]
    Proxy(#[from] super::proxy::ProxyError),
    /// Any other handshake failure.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The TLS settings could not be built (unreadable `ca_file`, `client_cert`, `client_key`).
    #[error("{0}")]
    TlsSetup(#[from] super::tls::TlsSetupError),
    /// `before_connect` gave this attempt no settings.
    #[error("{0}")]
    BeforeConnect(#[from] super::before_connect::BeforeConnectError),
}

/// Builds the handshake request for an upstream. User info in the URL (`ws://user:pass@host/`)
/// becomes `Authorization: Basic …`, as aiohttp and curl send it, unless an Authorization
/// header is configured; it is never part of the request itself.
pub fn request(config: &UpstreamConfig) -> Result<Request<()>, ConnectError> {
    let mut url = config.url.clone();
    let basic = basic_auth(&url);
    // Both fail only for URLs that cannot have user info, which then has none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let headers = request.headers_mut();
    let invalid = |what: &str| ConnectError::Handshake(format!("invalid {what} value"));
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("header name"))?;
        let value = HeaderValue::from_str(value.expose()).map_err(|_| invalid("header"))?;
        headers.append(name, value);
    }
    if let Some(basic) = basic.filter(|_| !headers.contains_key(header::AUTHORIZATION)) {
        let mut value = HeaderValue::from_str(&basic).map_err(|_| invalid("URL user info"))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    if !config.cookies.is_empty() {
        let cookie = config
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={}", v.expose()))
            .collect::<Vec<_>>()
            .join("; ");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&cookie).map_err(|_| invalid("cookie"))?,
        );
    }
    if !config.subprotocols.is_empty() {
        let protocols = config.subprotocols.join(", ");
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&protocols).map_err(|_| invalid("subprotocol"))?,
        );
    }
    if let Some(origin) = &config.origin {
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_str(origin).map_err(|_| invalid("origin"))?,
        );
    }
    Ok(request)
}

/// `Basic base64(user:password)` from the URL's user info (percent-decoded), if it has any.
fn basic_auth(url: &url::Url) -> Option<String> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let mut credentials = percent_decode(url.username());
    credentials.push(b':');
    credentials.extend(percent_decode(url.password().unwrap_or("")));
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    Some(format!("Basic {encoded}"))
}

/// Decodes `%XX` escapes (the URL keeps user info percent-encoded); anything else is kept.
fn percent_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    out
}

/// Frame limits for a connection: one frame may be as large as a whole message.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    // tungstenite keeps its read buffer for the connection's life: a small one keeps idle
    // upstreams small, and `ReadAhead` reads large while messages stream.
    WebSocketConfig::default()
        .read_buffer_size(TUNGSTENITE_READ)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Connects, within `connect_timeout`.
///
/// A server that accepts none of the offered subprotocols may answer without one (RFC 6455
/// allows it, and aiohttp's client then connects with no protocol). tungstenite refuses such
/// an answer, so we ask again without offering any, which gets the same answer the server
/// meant, and log that no subprotocol was agreed.
pub async fn open(
    config: &UpstreamConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connected, ConnectError> {
    let attempt = async {
        let stream = super::dial::stream(config, tls.as_ref()).await?;
        match handshake(config, request(config)?, stream).await {
            Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            ))) => {
                tracing::warn!(
                    offered = %config.subprotocols.join(", "),
                    "the server accepted none of the offered subprotocols; connecting without one"
                );
                let mut request = request(config)?;
                request.headers_mut().remove(header::SEC_WEBSOCKET_PROTOCOL);
                let stream = super::dial::stream(config, tls.as_ref()).await?;
                handshake(config, request, stream).await.map_err(classify)
            }
            other => other.map_err(classify),
        }
    };
    let (ws, response) = match tokio::time::timeout(config.connect_timeout, attempt).await {
        Err(_) => {
            return Err(ConnectError::Timeout(
                crate::duration::human(config.connect_timeout).to_string(),
            ))
        }
        Ok(result) => result?,
    };
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Connected { ws, protocol })
}

async fn handshake(
    config: &UpstreamConfig,
    request: Request<()>,
    stream: MaybeTlsStream<TcpStream>,
) -> Result<(WsStream, Response<Option<Vec<u8>>>), WsError> {
    socket::client(
        request,
        ReadAhead::new(stream),
        Some(websocket_config(config.max_message_size)),
    )
    .await
}

fn classify(error: WsError) -> ConnectError {
    match error {
        WsError::Http(response) => {
            let code = response.status().as_u16();
            let retry_after =
                super::refused::retry_after(response.headers(), std::time::SystemTime::now());
            let status = response.status();
            let status = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| String::from_utf8_lossy(b).lines().next().map(str::to_owned))
                .map(|line| line.trim().chars().take(200).collect::<String>())
                .filter(|line| !line.is_empty())
                .map(|line| format!(": {line}"))
                .unwrap_or_default();
            ConnectError::Rejected {
                status,
                body,
                code,
                retry_after,
            }
        }
        WsError::Tls(e) => ConnectError::Tls {
            reason: e.to_string(),
            hint: GENERIC_TLS_HINT,
        },
        WsError::Io(e) => io_error(e),
        other => ConnectError::Handshake(other.to_string()),
    }
}

/// An I/O error of the connection: rustls hands its handshake errors over as I/O errors.
pub(super) fn io_error(error: std::io::Error) -> ConnectError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ConnectError::Tls {
            reason: tls.to_string(),
            hint: tls_hint(tls),
        },
        None => ConnectError::Io(error.to_string()),
    }
}

const GENERIC_TLS_HINT: &str =
    "check that the server speaks TLS on this port; for a private CA set ca_file to its certificate (PEM)";

/// What to do about a failed certificate check, case by case.
fn tls_hint(error: &rustls::Error) -> &'static str {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    let cert = match error {
        rustls::Error::InvalidCertificate(cert) => cert,
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            return "the server requires a client certificate: set client_cert and client_key (connect: --cert and --key)"
        }
        rustls::Error::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::CertificateExpired | A::AccessDenied,
        ) => {
            return "the server refused the client certificate: check that client_cert was issued by a CA the server trusts and is still valid"
        }
        _ => return GENERIC_TLS_HINT,
    };
    match cert {
        C::UnknownIssuer => {
            "no trusted CA signed the server's certificate: for a private CA set ca_file to the CA's certificate (PEM); for a self-signed server set ca_file to the server's own certificate, which pins it"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the certificate does not name the URL's host: connect by a name it lists, set server_name to one of its names, or pin it by setting ca_file to that exact certificate"
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is outside its validity period: renew it on the server, or check this machine's clock"
        }
        // WebPKI refuses a certificate marked CA:TRUE as a server's own (OpenSSL 3 makes
        // self-signed certificates that way by default).
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate (CA:TRUE, as `openssl req -x509` makes by default) as its own: set ca_file to that exact certificate to pin it, or give the server a certificate signed by that CA"
        }
        _ => GENERIC_TLS_HINT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> UpstreamConfig {
        UpstreamConfig::new("feed", url::Url::parse(url).unwrap())
    }

    #[test]
    fn url_user_info_becomes_basic_auth_and_leaves_the_request() {
        // "Aladdin:open sesame", the example of RFC 7617, with a space and an @ escaped.
        let req = super::request(&config(
            "ws://Aladdin:open%20sesame@example.com:9000/ws?x=1",
        ))
        .unwrap();
        assert_eq!(
            req.headers()[header::AUTHORIZATION],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(req.uri().to_string(), "ws://example.com:9000/ws?x=1");
        assert_eq!(req.headers()[header::HOST], "example.com:9000");
        let req = super::request(&config("ws://a%40b:p%3Aq@h/")).unwrap();
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "a@b:p:q")
        );
        assert_eq!(req.headers()[header::AUTHORIZATION], expected.as_str());
    }

    #[test]
    fn a_configured_authorization_header_wins_over_the_url() {
        let mut config = config("ws://user:pass@h/");
        config.headers.push((
            "authorization".into(),
            crate::config::Secret::new("Bearer t"),
        ));
        let req = super::request(&config).unwrap();
        let values: Vec<_> = req
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .collect();
        assert_eq!(values, ["Bearer t"]);
    }

    #[test]
    fn no_user_info_no_authorization_and_stray_percents_are_kept() {
        assert!(!super::request(&config("ws://h/"))
            .unwrap()
            .headers()
            .contains_key(header::AUTHORIZATION));
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é".as_bytes());
    }
}
