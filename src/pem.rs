//! PEM files a TLS client reads: the certificates of `ca_file`, and a client certificate
//! with its key (`client_cert`, `client_key`) checked to belong together. Below both
//! `config` (which checks them at load, so `check` finds a bad file) and `upstream` (which
//! builds its TLS client from them).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

/// The crypto provider every TLS client of wsbridge uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
