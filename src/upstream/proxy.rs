//! Reaching the upstream's host through a proxy: the `proxy` setting, the proxy URL with its
//! credentials, and the tunnel that ends as a plain TCP stream to the host (TLS and the
//! WebSocket handshake then run inside it, unaware of the proxy).
//!
//! - [`env`]: the environment as curl reads it, for upstreams without a `proxy` setting.
//! - `http`: HTTP CONNECT (hyper's client); `socks`: SOCKS5 (tokio-socks).

mod http;
mod socks;

use std::io;

use tokio::net::TcpStream;
use url::{Host, Url};

pub use crate::config::proxy::{env, Proxy, ProxyKind, ProxySetting, Target};

impl Proxy {
    /// Opens a tunnel through this proxy to `target`: a TCP stream on which the target's
    /// bytes begin.
    pub async fn tunnel(&self, target: &Target) -> Result<TcpStream, ProxyError> {
        match self.kind {
            ProxyKind::Http => http::connect(self, target).await,
            ProxyKind::Socks5 | ProxyKind::Socks5h => socks::connect(self, target).await,
        }
    }

    /// Connects to the proxy itself.
    async fn dial(&self) -> Result<TcpStream, ProxyError> {
        self.address
            .connect()
            .await
            .map_err(|e| ProxyError::Unreachable {
                proxy: self.to_string(),
                reason: e.to_string(),
            })
    }
}

impl Target {
    /// Resolves the name here and connects to the first address that answers, without Nagle:
    /// records are small and latency matters.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let stream = match &self.host {
            Host::Domain(name) => TcpStream::connect((name.as_str(), self.port)).await?,
            Host::Ipv4(ip) => TcpStream::connect((*ip, self.port)).await?,
            Host::Ipv6(ip) => TcpStream::connect((*ip, self.port)).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Why a tunnel could not be opened. The proxy is always named, its password never.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No TCP connection to the proxy.
    #[error("cannot reach proxy {proxy}: {reason}; check the proxy's host and port and that it is running")]
    Unreachable {
        /// The proxy, password hidden.
        proxy: String,
        /// What the operating system said.
        reason: String,
    },
    /// The proxy answered, and said no.
    #[error("proxy {proxy} refused the tunnel to {target}: {said}; {hint}")]
    Refused {
        /// The proxy, password hidden.
        proxy: String,
        /// Where the tunnel was to lead.
        target: String,
        /// What the proxy said: an HTTP status or a SOCKS reply.
        said: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The proxy broke off or spoke something unexpected.
    #[error("proxy {proxy} failed during the tunnel to {target}: {reason}; check that it is a {kind} proxy")]
    Protocol {
        /// The proxy, password hidden.
        proxy: String,
        /// Where the tunnel was to lead.
        target: String,
        /// What went wrong.
        reason: String,
        /// The protocol we expected it to speak.
        kind: &'static str,
    },
    /// `socks5://` resolves the host's name here, and it did not resolve.
    #[error("cannot resolve {host} to connect through proxy {proxy}: {reason}; check the name, or use socks5h:// to let the proxy resolve it")]
    Resolve {
        /// The proxy, password hidden.
        proxy: String,
        /// The name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// A proxy variable of the environment holds no usable proxy URL.
    #[error(transparent)]
    Environment(#[from] env::EnvironmentError),
}

/// The hint for a proxy that wants other credentials.
const CREDENTIALS_HINT: &str = "check the user name and password in the proxy URL";

/// Where a connection goes for one attempt: the configured proxy, the one the environment
/// names (and the variable it came from), or none.
pub fn choose(
    setting: &ProxySetting,
    url: &Url,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Proxy, &'static str)>, ProxyError> {
    match setting {
        ProxySetting::Direct => Ok(None),
        ProxySetting::Via(proxy) => Ok(Some((proxy.clone(), "proxy"))),
        ProxySetting::Environment => Ok(env::lookup(url, environment)?),
    }
}
