//! A SOCKS5 tunnel (RFC 1928, with the user/password method of RFC 1929), through tokio-socks.
//! `socks5://` resolves the host's name here and sends an address; `socks5h://` sends the
//! name, for hosts only the proxy's side can resolve.

use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;
use tokio_socks::{Error as SocksError, TargetAddr};
use url::Host;

use super::{Proxy, ProxyError, ProxyKind, Target, CREDENTIALS_HINT};

/// Opens a SOCKS5 tunnel to `target` through `proxy`.
pub(super) async fn connect(proxy: &Proxy, target: &Target) -> Result<TcpStream, ProxyError> {
    let destinations: Vec<TargetAddr<'static>> = match (&target.host, proxy.kind) {
        (Host::Domain(name), ProxyKind::Socks5) => {
            let resolved = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|e| ProxyError::Resolve {
                    proxy: proxy.to_string(),
                    host: name.clone(),
                    reason: e.to_string(),
                })?;
            resolved.map(TargetAddr::Ip).collect()
        }
        (Host::Domain(name), _) => vec![TargetAddr::Domain(name.clone().into(), target.port)],
        (Host::Ipv4(ip), _) => vec![TargetAddr::Ip((*ip, target.port).into())],
        (Host::Ipv6(ip), _) => vec![TargetAddr::Ip((*ip, target.port).into())],
    };
    let mut last = None;
    // Like a direct connection, each resolved address is tried in turn; a refusal of the
    // proxy itself (credentials, rules) would be the same for the next, so it ends the tries.
    for destination in destinations {
        let stream = proxy.dial().await?;
        let attempt = match proxy.credentials() {
            Some((user, password)) => {
                Socks5Stream::connect_with_password_and_socket(stream, destination, user, password)
                    .await
            }
            None => Socks5Stream::connect_with_socket(stream, destination).await,
        };
        match attempt {
            Ok(tunnel) => {
                let stream = tunnel.into_inner();
                return Ok(stream);
            }
            Err(e) => {
                let unreachable_target = matches!(
                    e,
                    SocksError::HostUnreachable
                        | SocksError::NetworkUnreachable
                        | SocksError::ConnectionRefused
                        | SocksError::TtlExpired
                );
                let error = classify(proxy, target, e);
                if !unreachable_target {
                    return Err(error);
                }
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| ProxyError::Protocol {
        proxy: proxy.to_string(),
        target: target.to_string(),
        reason: "the host's name resolved to no address".into(),
        kind: "SOCKS5",
    }))
}

/// Names the proxy and what it said.
fn classify(proxy: &Proxy, target: &Target, error: SocksError) -> ProxyError {
    let refused = |said: String, hint: &'static str| ProxyError::Refused {
        proxy: proxy.to_string(),
        target: target.to_string(),
        said,
        hint,
    };
    match error {
        SocksError::PasswordAuthFailure(code) => refused(
            format!("SOCKS5 user/password authentication failed (status {code})"),
            CREDENTIALS_HINT,
        ),
        SocksError::NoAcceptableAuthMethods | SocksError::AuthorizationRequired => refused(
            format!("SOCKS5: {error}"),
            "the proxy wants a user name and password (socks5://user:password@host:port), or not these",
        ),
        SocksError::ConnectionNotAllowedByRuleset => refused(
            format!("SOCKS5: {error}"),
            "the proxy's rules do not allow this host or port",
        ),
        SocksError::HostUnreachable
        | SocksError::NetworkUnreachable
        | SocksError::ConnectionRefused
        | SocksError::TtlExpired
        | SocksError::GeneralSocksServerFailure => refused(
            format!("SOCKS5: {error}"),
            "the proxy could not reach the host: check the URL's host and port from the proxy's side",
        ),
        other => ProxyError::Protocol {
            proxy: proxy.to_string(),
            target: target.to_string(),
            reason: other.to_string(),
            kind: "SOCKS5",
        },
    }
}
