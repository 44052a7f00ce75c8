//! TLS for `wss://`: which server certificates are trusted (the system's roots, `ca_file`,
//! or none with `insecure`) and which client certificate is presented (`client_cert` and
//! `client_key`), as one rustls client config per upstream task.
//!
//! A certificate in `ca_file` is trusted two ways: as a root that signs the server's chain (a
//! private CA), and as a pin: a server that presents exactly that certificate is accepted as
//! it is. The pin is what makes a self-signed certificate work when it is marked CA:TRUE
//! (OpenSSL 3's default for `openssl req -x509`), which WebPKI refuses as a server's own
//! ("CaUsedAsEndEntity"). The name checked is the URL's host, or `server_name` (`dial.rs`).

mod verify;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::UpstreamConfig;
use verify::PinnedOrWebPki;

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read or holds malformed PEM.
    #[error("cannot read CA file {path}: {reason}; point ca_file at a PEM file of certificates")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("CA file {0} holds no PEM certificate; point ca_file at a PEM file of certificates")]
    Empty(String),
}

/// Why a client certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    /// The certificate file cannot be read, or holds no certificate.
    #[error("cannot use client certificate {path}: {reason}; point client_cert at a PEM file holding the certificate, then any intermediates")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file cannot be read, or holds no key rustls can use.
    #[error("cannot use client key {path}: {reason}; point client_key at the certificate's private key in PEM (PKCS#8, RSA or EC)")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("client key {key} does not belong to client certificate {cert} ({reason}); point client_key at the key the certificate was issued for")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

impl ClientCertError {
    /// Whether the key (rather than the certificate) is at fault: where `check` points.
    pub fn is_about_the_key(&self) -> bool {
        !matches!(self, ClientCertError::Cert { .. })
    }
}

/// Why the TLS settings of an upstream cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// `ca_file`.
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    /// `client_cert`, `client_key`.
    #[error(transparent)]
    ClientCert(#[from] ClientCertError),
    /// rustls refused its own defaults (a bug, not a setting).
    #[error("cannot set up TLS: {0}")]
    BuiltIn(String),
}

/// Reads every certificate from a PEM file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let shown = path.display().to_string();
    let unreadable = |e: &dyn std::fmt::Display| CaFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(CaFileError::Empty(shown));
    }
    Ok(certs)
}

/// A client certificate chain and its private key, checked to belong together.
pub struct ClientIdentity {
    /// The certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The certificate's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Reads `client_cert` and `client_key` and checks that the key is the certificate's, so that
/// `check` (not the first connect) finds a wrong pair.
pub fn load_client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, ClientCertError> {
    let cert_error = |reason: String| ClientCertError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("it holds no PEM certificate".into()));
    }
    let key_error = |reason: String| ClientCertError::Key {
        path: key.display().to_string(),
        reason,
    };
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            key_error("it holds no PEM private key".into())
        }
        other => key_error(other.to_string()),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key.clone_key())
        .map_err(|e| key_error(e.to_string()))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
        .keys_match()
        .map_err(|e| ClientCertError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(ClientIdentity {
        chain,
        key: private_key,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots, loaded once per process (loading reads many files).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "skipping a system root certificate");
        }
        let (added, ignored) = store.add_parsable_certificates(loaded.certs);
        tracing::debug!(added, ignored, "loaded system root certificates");
        store
    })
}

/// The rustls client config of an upstream: trusting the system roots and the certificates
/// of `ca_file` (as roots, and each one as a pin), or any certificate with `insecure`; and
/// presenting `client_cert` when set.
pub fn client_config(config: &UpstreamConfig) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let built_in = |e: &dyn std::fmt::Display| TlsSetupError::BuiltIn(e.to_string());
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| built_in(&e))?;
    let pins = match &config.ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let builder = if pins.is_empty() && !config.insecure {
        builder.with_root_certificates(system_roots().clone())
    } else {
        let webpki = if config.insecure {
            None
        } else {
            let mut roots = system_roots().clone();
            for cert in &pins {
                roots
                    .add(cert.clone())
                    .map_err(|e| CaFileError::Unreadable {
                        path: config
                            .ca_file
                            .as_deref()
                            .unwrap_or(Path::new(""))
                            .display()
                            .to_string(),
                        reason: e.to_string(),
                    })?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| built_in(&e))?;
            Some(verifier)
        };
        let verifier = PinnedOrWebPki {
            pins,
            webpki,
            provider,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let config = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let identity = load_client_identity(&client.cert, &client.key)?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| ClientCertError::Key {
                    path: client.key.display().to_string(),
                    reason: e.to_string(),
                })?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_identity(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn a_matching_pair_loads_and_a_key_of_another_certificate_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_identity(dir.path(), "a");
        let (_, key_b) = write_identity(dir.path(), "b");
        let identity = load_client_identity(&cert_a, &key_a).unwrap();
        assert_eq!(identity.chain.len(), 1);
        let error = load_client_identity(&cert_a, &key_b).err().unwrap();
        assert!(matches!(error, ClientCertError::Mismatch { .. }), "{error}");
        assert!(error.is_about_the_key());
        let error = load_client_identity(&key_a, &key_a).err().unwrap();
        assert!(matches!(error, ClientCertError::Cert { .. }), "{error}");
        let error = load_client_identity(&cert_a, &cert_a).err().unwrap();
        assert!(error.to_string().contains("no PEM private key"), "{error}");
    }
}
