//! Throwaway X.509 material for TLS tests, generated with rcgen and written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A test CA, a server certificate for `localhost` and `127.0.0.1` and a client certificate
/// signed by it, plus an unrelated "wrong" CA with its own client certificate.
///
/// All files live in a temporary directory that is removed when the last clone is dropped.
/// Keys are ECDSA P-256 (rcgen's default).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    dir: Arc<TempDir>,
    ca_file: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca_file: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

/// Name put in the client certificate's subject common name.
pub const CLIENT_COMMON_NAME: &str = "mqlink-test-client";

impl TlsMaterial {
    /// Generates fresh keys and certificates and writes them as PEM files.
    ///
    /// # Panics
    /// If key generation, signing or writing the files fails.
    #[must_use]
    pub fn generate() -> Self {
        Self::generate_inner(false, &["localhost", "127.0.0.1"])
    }

    /// Like [`Self::generate`], but the server certificate names only `names` (e.g. a host
    /// the tests do not connect to), to test host name checks.
    ///
    /// # Panics
    /// If key generation, signing or writing the files fails.
    #[must_use]
    pub fn generate_for_server_names(names: &[&str]) -> Self {
        Self::generate_inner(false, names)
    }

    /// Like [`Self::generate`], but the server certificate expired in 2001 (everything
    /// else is valid), to test how clients report an expired broker certificate.
    ///
    /// # Panics
    /// If key generation, signing or writing the files fails.
    #[must_use]
    pub fn generate_expired_server() -> Self {
        Self::generate_inner(true, &["localhost", "127.0.0.1"])
    }

    fn generate_inner(expired_server: bool, server_names: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mqlink-tls-")
            .tempdir()
            .expect("create temporary directory for TLS material");
        let write = |name: &str, pem: String| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };

        let (ca_cert, ca) = new_ca("mqlink-testkit CA");
        let (server_cert, server_key) = new_leaf(
            &ca,
            server_names.first().copied().unwrap_or("localhost"),
            server_names,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let server_cert = if expired_server {
            // Same names and key, validity in the past.
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("leaf certificate parameters");
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            params
                .signed_by(&server_key, &ca)
                .expect("sign expired certificate")
        } else {
            server_cert
        };
        let (client_cert, client_key) = new_leaf(
            &ca,
            CLIENT_COMMON_NAME,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let (other_ca_cert, other_ca) = new_ca("mqlink-testkit unrelated CA");
        let (other_client_cert, other_client_key) = new_leaf(
            &other_ca,
            CLIENT_COMMON_NAME,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        Self {
            ca_file: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            other_ca_file: write("other-ca.pem", other_ca_cert.pem()),
            other_client_cert: write("other-client.pem", other_client_cert.pem()),
            other_client_key: write("other-client-key.pem", other_client_key.serialize_pem()),
            dir: Arc::new(dir),
        }
    }

    /// The directory holding all the PEM files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate that signed the server and client certificates.
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Server certificate with subject alternative names `localhost` and `127.0.0.1`.
    #[must_use]
    pub fn server_cert(&self) -> &Path {
        &self.server_cert
    }

    /// Private key (PKCS#8 PEM) of [`server_cert`](Self::server_cert).
    #[must_use]
    pub fn server_key(&self) -> &Path {
        &self.server_key
    }

    /// Client certificate (common name [`CLIENT_COMMON_NAME`]) signed by the CA.
    #[must_use]
    pub fn client_cert(&self) -> &Path {
        &self.client_cert
    }

    /// Private key (PKCS#8 PEM) of [`client_cert`](Self::client_cert).
    #[must_use]
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// An unrelated CA: trusting only this one must make server verification fail.
    #[must_use]
    pub fn other_ca_file(&self) -> &Path {
        &self.other_ca_file
    }

    /// A client certificate signed by the unrelated CA: a broker requiring client
    /// certificates from [`ca_file`](Self::ca_file) must reject it.
    #[must_use]
    pub fn other_client_cert(&self) -> &Path {
        &self.other_client_cert
    }

    /// Private key of [`other_client_cert`](Self::other_client_cert).
    #[must_use]
    pub fn other_client_key(&self) -> &Path {
        &self.other_client_key
    }
}

fn new_ca(common_name: &str) -> (Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate CA key");
    let cert = params.self_signed(&key).expect("self-sign CA certificate");
    (cert, Issuer::new(params, key))
}

fn new_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (Certificate, KeyPair) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign leaf certificate");
    (cert, key)
}
