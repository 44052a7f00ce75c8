//! Validation of how an upstream is reached and its TLS client settings, each layered over
//! `[defaults]`: `proxy` (with `${VAR}` expanded), `client_cert` and `client_key` (read and
//! checked to belong together here, so that `check` finds a wrong pair, not the first
//! connect), `server_name` and `insecure`.

use rustls_pki_types::ServerName;
use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::expand::expand_env;
use crate::config::raw::RawConnectionSettings;
use crate::config::{ClientCert, ProxySetting};

/// The transport settings after layering.
pub(super) struct Transport {
    pub proxy: ProxySetting,
    pub client_cert: Option<ClientCert>,
    pub server_name: Option<String>,
    pub insecure: bool,
}

/// The upstream's value if it has one, else `[defaults]`'s, with the key to name in errors.
pub(super) fn pick<'a, T>(
    base: &'a Option<Spanned<T>>,
    over: &'a Option<Spanned<T>>,
    key: &str,
    name: &str,
) -> Option<(&'a Spanned<T>, String, bool)> {
    match (over, base) {
        (Some(v), _) => Some((v, format!("{key}.{name}"), true)),
        (None, Some(v)) => Some((v, format!("defaults.{name}"), false)),
        (None, None) => None,
    }
}

impl Validator<'_> {
    /// Resolves the transport settings of the upstream at `key`, whose URL is `url` (`None`
    /// when the URL itself is invalid); `None` if anything was invalid.
    pub(super) fn transport(
        &mut self,
        base: &RawConnectionSettings,
        over: &RawConnectionSettings,
        key: &str,
        url: Option<&Url>,
    ) -> Option<Transport> {
        let before = self.errors.len();
        let proxy = match pick(&base.proxy, &over.proxy, key, "proxy") {
            None => ProxySetting::Environment,
            Some((value, key, _)) => {
                let parsed = expand_env(value.get_ref(), self.env)
                    .and_then(|expanded| ProxySetting::parse(&expanded));
                match parsed {
                    Ok(proxy) => proxy,
                    Err(message) => {
                        self.error(Some(value.span()), Some(key), message);
                        ProxySetting::Environment
                    }
                }
            }
        };

        // TLS settings mean nothing to a ws:// upstream: an error when written in its own
        // table, ignored when inherited from [defaults] (which serves wss:// upstreams too).
        let plain = url.is_some_and(|url| url.scheme() == "ws");
        let cert = pick(&base.client_cert, &over.client_cert, key, "client_cert");
        let cert_key = pick(&base.client_key, &over.client_key, key, "client_key");
        let server_name = pick(&base.server_name, &over.server_name, key, "server_name");
        let insecure = pick(&base.insecure, &over.insecure, key, "insecure");
        if plain {
            let spans = [
                cert.as_ref().map(|(v, k, own)| (v.span(), k.clone(), *own)),
                cert_key
                    .as_ref()
                    .map(|(v, k, own)| (v.span(), k.clone(), *own)),
                server_name
                    .as_ref()
                    .map(|(v, k, own)| (v.span(), k.clone(), *own)),
                insecure
                    .as_ref()
                    .map(|(v, k, own)| (v.span(), k.clone(), *own)),
            ];
            for (span, key, own) in spans.into_iter().flatten() {
                if own {
                    self.error(
                        Some(span),
                        Some(key),
                        "only a wss:// URL uses TLS, so this would mean nothing here; remove it or use wss://".into(),
                    );
                }
            }
            if self.errors.len() > before {
                return None;
            }
            return Some(Transport {
                proxy,
                client_cert: None,
                server_name: None,
                insecure: false,
            });
        }

        let client_cert = match (cert, cert_key) {
            (None, None) => None,
            (Some((value, key, _)), None) => {
                self.error(
                    Some(value.span()),
                    Some(key),
                    "client_cert needs client_key, the certificate's private key (PEM)".into(),
                );
                None
            }
            (None, Some((value, key, _))) => {
                self.error(
                    Some(value.span()),
                    Some(key),
                    "client_key needs client_cert, the certificate it belongs to (PEM)".into(),
                );
                None
            }
            (Some((cert, cert_name, _)), Some((private, key_name, _))) => {
                let (cert, private) = (cert.get_ref(), private.get_ref());
                let cert_span = base_or_over_span(&base.client_cert, &over.client_cert);
                let key_span = base_or_over_span(&base.client_key, &over.client_key);
                match crate::pem::load_client_identity(cert, private) {
                    Ok(_) => Some(ClientCert {
                        cert: cert.clone(),
                        key: private.clone(),
                    }),
                    Err(e) if e.is_about_the_key() => {
                        self.error(key_span, Some(key_name), e.to_string());
                        None
                    }
                    Err(e) => {
                        self.error(cert_span, Some(cert_name), e.to_string());
                        None
                    }
                }
            }
        };
        let server_name = server_name.and_then(|(value, key, _)| {
            let name = value.get_ref();
            match ServerName::try_from(name.as_str()) {
                Ok(_) => Some(name.clone()),
                Err(_) => {
                    self.error(
                        Some(value.span()),
                        Some(key),
                        format!("{name:?} is not a DNS name or IP address; write the name the server's certificate holds"),
                    );
                    None
                }
            }
        });
        let insecure = insecure.is_some_and(|(value, _, _)| *value.get_ref());
        if self.errors.len() > before {
            return None;
        }
        Some(Transport {
            proxy,
            client_cert,
            server_name,
            insecure,
        })
    }
}

fn base_or_over_span<T>(
    base: &Option<Spanned<T>>,
    over: &Option<Spanned<T>>,
) -> Option<std::ops::Range<usize>> {
    over.as_ref().or(base.as_ref()).map(|v| v.span())
}
