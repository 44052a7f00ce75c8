//! TLS for `wss://`: rustls with the system's root certificates plus an optional `ca_file`.
//!
//! A certificate in `ca_file` is trusted two ways: as a root that signs the server's chain (a
//! private CA), and as a pin: a server that presents exactly that certificate is accepted as
//! it is. The pin is what makes a self-signed certificate work when it is marked CA:TRUE
//! (OpenSSL 3's default for `openssl req -x509`), which WebPKI refuses as a server's own
//! ("CaUsedAsEndEntity").

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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

/// Reads every certificate from a PEM file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let shown = path.display().to_string();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| CaFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaFileError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty(shown));
    }
    Ok(certs)
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

/// A rustls client config trusting the system roots and, if given, the certificates of
/// `ca_file` (as roots, and each one as a pin).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, CaFileError> {
    let built_in = |e: &dyn std::fmt::Display| CaFileError::Unreadable {
        path: "(built-in TLS settings)".into(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| built_in(&e))?;
    let mut roots = system_roots().clone();
    let Some(path) = ca_file else {
        return Ok(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        ));
    };
    let pins = read_ca_file(path)?;
    for cert in &pins {
        roots
            .add(cert.clone())
            .map_err(|e| CaFileError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| built_in(&e))?;
    let verifier = PinnedOrWebPki {
        pins,
        webpki,
        provider,
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts a server certificate that is byte for byte one of `pins`; any other goes through
/// WebPKI. The handshake's signatures are checked either way, so a server must hold the
/// pinned certificate's private key.
#[derive(Debug)]
struct PinnedOrWebPki {
    pins: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // A pin is a pin: the user named this very certificate, so neither its CA flag nor
        // its names nor its dates are second-guessed.
        if self
            .pins
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
