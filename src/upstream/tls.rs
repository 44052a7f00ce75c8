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
use rustls::RootCertStore;

use crate::config::UpstreamConfig;
use crate::pem::provider;
pub use crate::pem::{
    load_client_identity, read_ca_file, CaFileError, ClientCertError, ClientIdentity,
};
use verify::PinnedOrWebPki;

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
