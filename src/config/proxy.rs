//! The `proxy` setting of an upstream: `"direct"`, a proxy URL with its credentials, or
//! (absent) the environment as curl reads it ([`env`]). Pure parsing and lookup: the
//! tunnels themselves are `upstream::proxy`'s; `check` and the upstream task both read this.

pub mod env;

use std::fmt;

use url::{Host, Url};

use super::Secret;

/// What the `proxy` key (or `connect --proxy`) says.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ProxySetting {
    /// The key is absent: the environment decides, as curl does ([`env`]).
    #[default]
    Environment,
    /// `"direct"`: never a proxy, whatever the environment says.
    Direct,
    /// Always this proxy.
    Via(Proxy),
}

impl ProxySetting {
    /// Parses `"direct"` or a proxy URL.
    pub fn parse(text: &str) -> Result<ProxySetting, String> {
        if text.trim() == "direct" {
            return Ok(ProxySetting::Direct);
        }
        Proxy::parse(text).map(ProxySetting::Via)
    }
}

/// The protocols spoken to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: an HTTP CONNECT tunnel; the proxy resolves the host's name.
    Http,
    /// `socks5://`: SOCKS5 with the host's name resolved here.
    Socks5,
    /// `socks5h://`: SOCKS5 with the host's name resolved by the proxy.
    Socks5h,
}

impl ProxyKind {
    fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        }
    }
}

/// A proxy: where it is and the user name and password it wants, percent-decoded. Shown
/// (`Display`) with the password as `***`.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// The protocol.
    pub kind: ProxyKind,
    /// Where the proxy listens.
    pub address: Target,
    /// The user name, if the URL has user info.
    pub user: Option<String>,
    /// The password, if the URL has one.
    pub password: Option<Secret>,
}

/// The port curl assumes for a proxy URL without one, whatever its scheme.
const DEFAULT_PROXY_PORT: u16 = 1080;

impl Proxy {
    /// Parses a proxy URL: `http://`, `socks5://` or `socks5h://`, with optional
    /// `user:password@` (percent-encoded) and port (1080 when absent, as curl assumes). A
    /// value without a scheme is an `http://` proxy, as curl reads it. Errors never repeat the
    /// value, which may hold a password.
    pub fn parse(text: &str) -> Result<Proxy, String> {
        let text = text.trim();
        let with_scheme;
        let text = if text.contains("://") {
            text
        } else {
            with_scheme = format!("http://{text}");
            &with_scheme
        };
        let url = Url::parse(text).map_err(|e| {
            format!("not a proxy URL ({e}); write it as http://host:port, socks5://host:port, socks5h://host:port or \"direct\"")
        })?;
        let kind = match url.scheme() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5h,
            "https" => return Err("a TLS connection to the proxy (https://) is not supported; use http:// (the tunnel still carries wss:// encrypted end to end)".into()),
            other => return Err(format!("proxy scheme {other:?} is not supported; use http://, socks5:// or socks5h://")),
        };
        let host = url
            .host()
            .ok_or("the proxy URL has no host; write it as http://host:port")?
            .to_owned();
        // `Url` drops a port equal to the scheme's default (":80" for http), so only the text
        // tells ":80" from no port at all.
        let port = url.port().unwrap_or(if has_port(text) {
            80
        } else {
            DEFAULT_PROXY_PORT
        });
        let decode = |s: &str, what: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("the proxy URL's {what} is not UTF-8 after percent-decoding"))
        };
        let user = (!url.username().is_empty())
            .then(|| decode(url.username(), "user name"))
            .transpose()?;
        let password = url
            .password()
            .map(|p| decode(p, "password").map(Secret::new))
            .transpose()?;
        Ok(Proxy {
            kind,
            address: Target { host, port },
            user,
            password,
        })
    }

    /// The user name and password, as the protocols send them (an empty password when the URL
    /// has a user only).
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        let user = self.user.as_deref();
        let password = self.password.as_ref().map(Secret::expose);
        match (user, password) {
            (None, None) => None,
            (user, password) => Some((user.unwrap_or(""), password.unwrap_or(""))),
        }
    }
}

/// Whether the authority of `url_text` (after `scheme://`) ends in `:digits`.
fn has_port(url_text: &str) -> bool {
    let after = url_text
        .split_once("://")
        .map_or(url_text, |(_, rest)| rest);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty() && !host.ends_with('[') && port.bytes().all(|b| b.is_ascii_digit())
    })
}

impl fmt::Display for Proxy {
    /// `scheme://user:***@host:port`; a user name without a password shows as `***`, as in
    /// upstream URLs (services take tokens there too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.kind.scheme())?;
        match (&self.user, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(_), None) => f.write_str("***@")?,
            (None, None) => {}
        }
        write!(f, "{}", self.address)
    }
}

/// A host and port to connect to: the upstream's, or a proxy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A name or an address.
    pub host: Host<String>,
    /// The TCP port.
    pub port: u16,
}

impl Target {
    /// The host and port of a `ws://` or `wss://` URL (80 and 443 when it has none).
    pub fn of_url(url: &Url) -> Option<Target> {
        Some(Target {
            host: url.host()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }

    /// The host as a name or bare address (no brackets around IPv6), as TLS and DNS take it.
    pub fn host_name(&self) -> String {
        match &self.host {
            Host::Domain(name) => name.clone(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for Target {
    /// `host:port`, IPv6 in brackets: the form of an HTTP CONNECT request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_decoded_credentials_and_curl_defaults() {
        let p = Proxy::parse("http://us%40er:p%3Ass@proxy.internal:3128").unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!(p.address.to_string(), "proxy.internal:3128");
        assert_eq!(p.credentials(), Some(("us@er", "p:ss")));
        assert_eq!(p.to_string(), "http://us@er:***@proxy.internal:3128");
        assert_eq!(Proxy::parse("proxy:8080").unwrap().kind, ProxyKind::Http);
        assert_eq!(Proxy::parse("http://proxy").unwrap().address.port, 1080);
        assert_eq!(Proxy::parse("http://proxy:80").unwrap().address.port, 80);
        assert_eq!(
            Proxy::parse("http://u:p@[::1]:80/").unwrap().address.port,
            80
        );
        let s = Proxy::parse("socks5h://[::1]:9050").unwrap();
        assert_eq!(
            (s.kind, s.to_string()),
            (ProxyKind::Socks5h, "socks5h://[::1]:9050".into())
        );
        assert_eq!(
            Proxy::parse("socks5://tok@h:1").unwrap().to_string(),
            "socks5://***@h:1"
        );
        assert_eq!(ProxySetting::parse("direct"), Ok(ProxySetting::Direct));
    }

    #[test]
    fn unsupported_proxies_are_refused_without_echoing_the_value() {
        for bad in [
            "https://u:secret@h:1",
            "socks4://u:secret@h:1",
            "http://u:secret@:1",
        ] {
            let error = Proxy::parse(bad).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
        assert!(Proxy::parse("https://h:1")
            .unwrap_err()
            .contains("not supported"));
    }
}
