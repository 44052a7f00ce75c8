//! `connect`'s options for reaching the host: the proxy and the TLS client settings, the same
//! as the config's `proxy`, `client_cert`, `client_key`, `server_name` and `insecure`.

use std::path::PathBuf;

use clap::Args;

use wsbridge::config::{ClientCert, ProxySetting, UpstreamConfig};

/// How `connect` reaches the host.
#[derive(Debug, Args)]
pub struct TransportArgs {
    /// Connect through this proxy: http://[user:pass@]host:port (CONNECT),
    /// socks5://… (DNS here), socks5h://… (DNS at the proxy), or "direct". Without it,
    /// https_proxy/HTTPS_PROXY (wss://), http_proxy (ws://), all_proxy/ALL_PROXY and
    /// no_proxy/NO_PROXY decide, as in curl.
    #[arg(long, value_name = "URL", value_parser = ProxySetting::parse)]
    proxy: Option<ProxySetting>,
    /// The same as --proxy socks5://HOST:PORT (websocat's --socks5).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "proxy", value_parser = parse_socks5)]
    socks5: Option<ProxySetting>,
    /// Client certificate for mutual TLS (PEM: the certificate, then any intermediates).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The TLS name to verify (and send as SNI) when it differs from the URL's host, e.g.
    /// for a URL holding an IP address.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Do not verify the server's certificate (testing only; warns on every connect).
    #[arg(short = 'k', long)]
    insecure: bool,
}

impl TransportArgs {
    /// Sets the upstream's proxy and TLS settings, checking the files now, as `check` does
    /// for a config.
    pub fn apply(self, upstream: &mut UpstreamConfig) -> Result<(), String> {
        let tls = upstream.url.scheme() == "wss";
        if !tls && (self.cert.is_some() || self.server_name.is_some() || self.insecure) {
            return Err(
                "--cert, --key, --server-name and --insecure apply to wss:// URLs only".into(),
            );
        }
        if let Some(proxy) = self.proxy.or(self.socks5) {
            upstream.proxy = proxy;
        }
        if let (Some(cert), Some(key)) = (self.cert, self.key) {
            wsbridge::upstream::tls::load_client_identity(&cert, &key)
                .map_err(|e| e.to_string())?;
            upstream.client_cert = Some(ClientCert { cert, key });
        }
        if let Some(name) = self.server_name {
            rustls_pki_types::ServerName::try_from(name.as_str())
                .map_err(|_| format!("--server-name {name:?} is not a DNS name or IP address"))?;
            upstream.server_name = Some(name);
        }
        upstream.insecure = self.insecure;
        Ok(())
    }
}

fn parse_socks5(address: &str) -> Result<ProxySetting, String> {
    if address.contains("://") {
        return Err("--socks5 takes HOST:PORT; for a URL use --proxy".into());
    }
    ProxySetting::parse(&format!("socks5://{address}"))
}
