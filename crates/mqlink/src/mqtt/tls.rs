//! TLS client configuration (rustls with the ring provider), and the file checks of a TLS
//! listener (the embedded broker's).
//!
//! Certificates are read once, when the client is built, so a missing or unreadable file
//! is reported with its path before any connection is tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS settings for a broker connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA bundle (PEM); the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
    /// Accept any server certificate. Dangerous; logged loudly at every connect.
    pub insecure_skip_verify: bool,
    /// Name to verify and send as SNI instead of the URL's host.
    pub server_name: Option<String>,
    /// Verify the certificate chain but not that the certificate names the host
    /// (mosquitto's `--insecure`): an untrusted or expired certificate is still refused.
    pub skip_hostname_check: bool,
    /// Offer TLS 1.3 only (mosquitto's `--tls-version tlsv1.3`); otherwise 1.2 and 1.3.
    pub tls13_only: bool,
}

impl From<&crate::config::shared::Tls> for TlsOptions {
    /// A config file's `tls:` block (the broker's, or a TLS-capable sink's).
    fn from(t: &crate::config::shared::Tls) -> TlsOptions {
        TlsOptions {
            ca_file: t.ca_file.clone(),
            cert_file: t.client_auth.as_ref().map(|c| c.cert_file.clone()),
            key_file: t.client_auth.as_ref().map(|c| c.key_file.clone()),
            alpn: t.alpn.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
            server_name: t.server_name.clone(),
            ..TlsOptions::default()
        }
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{what} '{path}': {reason}")]
    File {
        /// Which file this is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Client certificate without key or key without certificate.
    #[error("TLS client authentication needs both cert_file and key_file (only {present} given)")]
    HalfClientAuth {
        /// The one that was given.
        present: &'static str,
    },
    /// rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Rustls(String),
    /// No usable root certificates.
    #[error("no trusted root certificates: {0} (set tls.ca_file)")]
    NoRoots(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A CA bundle as a root store: every certificate in the file must be usable.
fn read_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Build the rustls client configuration.
///
/// # Errors
/// Unreadable files, a certificate without key (or the reverse), no roots.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &opts.ca_file {
            Some(path) => roots = read_roots("tls.ca_file", path)?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A bad system certificate should not stop the others from working.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    let why = found
                        .errors
                        .first()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "the system store is empty".into());
                    return Err(TlsError::NoRoots(why));
                }
            }
        }
        if opts.skip_hostname_check {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
        } else {
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("tls.cert_file", cert)?;
            let key_der = read_key("tls.key_file", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::Rustls(e.to_string()))?
        }
        (Some(_), None) => {
            return Err(TlsError::HalfClientAuth {
                present: "cert_file",
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::HalfClientAuth {
                present: "key_file",
            });
        }
        (None, None) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Check a TLS listener's files before a server is started with them: the certificate
/// chain and key parse, the key belongs to the certificate, and the client CA (if any)
/// holds usable certificates. Errors name the file, so a broker that would otherwise fail
/// at its first handshake (or with a message naming no file) is refused at start.
///
/// # Errors
/// An unreadable or empty file, a key that does not match the certificate.
pub fn check_server_files(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<(), TlsError> {
    let chain = read_certs("tls cert_file", cert_file)?;
    let key = read_key("tls key_file", key_file)?;
    if let Some(ca) = client_ca_file {
        read_roots("tls client_ca_file", ca)?;
    }
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::File {
            what: "tls key_file",
            path: key_file.to_path_buf(),
            reason: format!(
                "does not fit the certificate in {}: {e}",
                cert_file.display()
            ),
        })?;
    Ok(())
}

/// The name to verify and to send as SNI.
///
/// # Errors
/// A name that is neither a DNS name nor an IP address.
pub fn server_name(host: &str, opts: &TlsOptions) -> Result<ServerName<'static>, TlsError> {
    let name = opts.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::Rustls(format!("invalid server name '{name}': {e}")))
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The webpki verifier with one error forgiven: a certificate that does not name the host.
/// webpki checks the chain (trust anchor, validity, key usage) before the name, so
/// `NotValidForName` is only ever returned for a certificate whose chain was verified: an
/// untrusted or expired certificate still fails.
#[derive(Debug)]
struct AnyHostName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Explain a TLS handshake failure in the words an operator needs.
pub fn explain(err: &std::io::Error) -> String {
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .map(|e| e.to_string())
        .unwrap_or_else(|| err.to_string());
    format!("{inner}{}", hint(&inner))
}

/// What an operator should check, for the text of a TLS handshake failure (empty when
/// there is nothing to add). The words name the `tls:` keys shared by the broker and the
/// sinks.
pub fn hint(inner: &str) -> &'static str {
    if inner.contains("UnknownIssuer") {
        " (the server certificate is not signed by a trusted CA: check tls.ca_file)"
    } else if inner.contains("NotValidForName") {
        " (the server certificate does not match the host name: check the URL or tls.server_name)"
    } else if inner.contains("Expired") {
        " (the server certificate has expired)"
    } else if inner.contains("CertificateRequired") || inner.contains("certificate required") {
        " (the server requires a client certificate: set tls.cert_file and tls.key_file)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_without_key_is_refused() {
        let opts = TlsOptions {
            cert_file: Some("c.pem".into()),
            ca_file: None,
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&opts),
            Err(TlsError::HalfClientAuth {
                present: "cert_file"
            })
        ));
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let opts = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("tls.ca_file"),
            "{e}"
        );
    }
}
