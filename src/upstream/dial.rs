//! The stream a WebSocket handshake runs on: TCP to the host, directly or through a proxy's
//! tunnel ([`super::proxy`]), then TLS for `wss://` inside it, verifying the URL's host or
//! `server_name` (which is also the name sent as SNI).

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tracing::{debug, warn};

use super::connect::ConnectError;
use super::proxy::{self, Target};
use crate::config::UpstreamConfig;

/// Connects to the upstream's host (through its proxy, if any) and runs TLS when `tls` is
/// given.
pub async fn stream(
    config: &UpstreamConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<MaybeTlsStream<TcpStream>, ConnectError> {
    let target = Target::of_url(&config.url).ok_or_else(|| {
        ConnectError::Io(format!(
            "the URL {} has no host and port",
            config.display_url()
        ))
    })?;
    let environment = |name: &str| std::env::var(name).ok();
    let tcp = match proxy::choose(&config.proxy, &config.url, &environment)? {
        None => target
            .connect()
            .await
            .map_err(|e| ConnectError::Io(e.to_string()))?,
        Some((proxy, source)) => {
            debug!(%proxy, from = source, "connecting through a proxy");
            proxy.tunnel(&target).await?
        }
    };
    let Some(tls) = tls else {
        return Ok(MaybeTlsStream::Plain(tcp));
    };
    if config.insecure {
        warn!(
            "insecure = true: the server's certificate is not verified, so anyone on the path can read and change this connection; use ca_file or server_name instead"
        );
    }
    let name = config
        .server_name
        .clone()
        .unwrap_or_else(|| target.host_name());
    let server_name = ServerName::try_from(name.clone()).map_err(|e| ConnectError::Tls {
        reason: format!("{name:?} is not a name TLS can verify ({e})"),
        hint: "set server_name to the DNS name in the server's certificate",
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(super::connect::io_error)?;
    Ok(MaybeTlsStream::Rustls(stream))
}
