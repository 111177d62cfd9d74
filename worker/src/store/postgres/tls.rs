//! TLS to PostgreSQL: libpq's `sslmode` from `store.url` and the CA of `store.ca_file`, on
//! rustls with the aws-lc-rs provider (the process's only one), connected by
//! tokio-postgres-rustls.
//!
//! What each mode checks, as libpq: `disable` never encrypts; `prefer` (the default) and
//! `require` encrypt without checking the certificate (they stop a passive listener, not an
//! impostor); `verify-ca` checks that the certificate chains to `store.ca_file`; `verify-full`
//! also that it names the URL's host. The verifying modes need `store.ca_file` (config
//! validation says so); it is used by nothing else.

use std::path::Path;
use std::sync::Arc;

use inlet_shared::config::PgSslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;

/// The connector for `mode`, trusting the CA certificates in `ca_file` when it verifies.
///
/// # Errors
///
/// [`PgError::CaFile`] when a verifying mode has no `ca_file`, or it cannot be read or holds no
/// usable CA certificate.
pub(super) fn connector(mode: PgSslMode, ca_file: Option<&Path>) -> Result<MakeRustlsConnect, PgError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| PgError::CaFile(format!("TLS setup: {error}")))?;
    let config = match mode {
        PgSslMode::Disable | PgSslMode::Prefer | PgSslMode::Require => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(provider))).with_no_client_auth()
        }
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
            let Some(ca_file) = ca_file else {
                return Err(PgError::CaFile(format!("required with sslmode={}", mode.as_str())));
            };
            let roots = Arc::new(roots(ca_file)?);
            let chain = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|error| PgError::CaFile(format!("{}: {error}", ca_file.display())))?;
            if mode == PgSslMode::VerifyFull {
                builder.with_webpki_verifier(chain).with_no_client_auth()
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(chain))).with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The CA certificates in `ca_file`.
fn roots(ca_file: &Path) -> Result<RootCertStore, PgError> {
    let path = ca_file.display();
    let pem = std::fs::read(ca_file).map_err(|error| PgError::CaFile(format!("cannot read {path}: {error}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PgError::CaFile(format!("{path} is not valid PEM: {error}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(PgError::CaFile(format!("{path} holds no usable CA certificate (a PEM `CERTIFICATE` block)")));
    }
    Ok(roots)
}

/// The reason rustls refused the server's certificate, when that is why `error` happened.
pub(super) fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(current) = next {
        // tokio-rustls reports rustls's error inside an io::Error, whose `source` skips it.
        let inner = current.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        for candidate in [Some(current), inner.map(|e| e as &(dyn std::error::Error + 'static))].into_iter().flatten() {
            if let Some(refused @ rustls::Error::InvalidCertificate(_)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(refused.to_string());
            }
        }
        next = current.source();
    }
    None
}

/// `prefer`, `require`: any certificate (the handshake's signatures are still checked, so the
/// session is encrypted with whoever holds the presented certificate's key).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify against the CA; the name the certificate is for is not
/// compared with the host (webpki checks the chain first, so a name mismatch means the chain
/// was good).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
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

#[cfg(test)]
mod tests {
    //! Against a real PostgreSQL with `ssl = on` and a certificate the test made.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use inlet_shared::test_util::TestPostgres;
    use inlet_shared::test_util::tls::TestCa;

    use crate::store::Store;
    use crate::store::postgres::{PgError, connect, text_rows};

    /// Whether the pool's session is encrypted, as the server sees it.
    async fn encrypted(url: &str, ca_file: Option<&std::path::Path>) -> Result<bool, PgError> {
        let pool = connect(url, ca_file, 1, Duration::from_secs(10))?;
        let rows = text_rows(&pool, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await?;
        Ok(rows == vec![vec![Some("t".to_owned())]])
    }

    /// `verify-full` with the CA that signed the server's certificate connects, migrates and
    /// works, encrypted; `verify-ca` takes a certificate for another name, which `verify-full`
    /// refuses; `require` and `prefer` (the default) encrypt without a CA file; `disable` does not.
    #[tokio::test]
    async fn sslmode_decides_encryption_and_what_of_the_certificate_is_checked() {
        let ca = TestCa::new("PostgreSQL test CA");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let server = tokio::task::spawn_blocking({
            let certificate = ca.issue(&["127.0.0.1"], 7, 2040);
            move || TestPostgres::start_with_tls(&certificate)
        })
        .await
        .unwrap();
        let url = server.url();

        let verified = format!("{url}?sslmode=verify-full");
        let store = Store::connect_postgres(&verified, Some(&ca_file), 2, Duration::from_secs(10)).await.unwrap();
        assert!(!store.identity().await.unwrap().is_empty(), "the migrated store answers");
        assert!(encrypted(&verified, Some(&ca_file)).await.unwrap(), "verify-full did not encrypt");
        assert!(encrypted(&format!("{url}?sslmode=verify-ca"), Some(&ca_file)).await.unwrap());
        assert!(encrypted(&format!("{url}?sslmode=require"), None).await.unwrap());
        assert!(encrypted(&url, None).await.unwrap(), "prefer (the default) did not encrypt");
        assert!(!encrypted(&format!("{url}?sslmode=disable"), None).await.unwrap());

        // A server whose certificate names another host.
        let other_name = tokio::task::spawn_blocking({
            let certificate = ca.issue(&[], 8, 2040);
            move || TestPostgres::start_with_tls(&certificate)
        })
        .await
        .unwrap();
        let url = other_name.url();
        assert!(encrypted(&format!("{url}?sslmode=verify-ca"), Some(&ca_file)).await.unwrap());
        let refused = encrypted(&format!("{url}?sslmode=verify-full"), Some(&ca_file)).await.unwrap_err();
        assert!(
            refused_certificate(&refused).is_some(),
            "verify-full took a certificate for another name: {refused:#}"
        );

        // A server without TLS: `prefer` falls back to plain TCP, `require` refuses it.
        let plain = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
        assert!(!encrypted(&plain.url(), None).await.unwrap());
        assert!(encrypted(&format!("{}?sslmode=require", plain.url()), None).await.is_err());
        // libpq's file keys are not taken: the CA is `store.ca_file`.
        let with_rootcert = format!("{}?sslmode=verify-full&sslrootcert=/ca.pem", plain.url());
        assert!(matches!(connect(&with_rootcert, Some(&ca_file), 1, Duration::from_secs(1)), Err(PgError::Url(_))));
    }

    /// `verify-full` with a CA that did not sign the server's certificate fails at startup
    /// naming `store.ca_file`; so does a CA file that holds no certificate.
    #[tokio::test]
    async fn a_wrong_ca_fails_at_startup_naming_store_ca_file() {
        let (ca, wrong) = (TestCa::new("PostgreSQL test CA"), TestCa::new("another CA"));
        let dir = tempfile::tempdir().unwrap();
        let wrong_file = dir.path().join("wrong.pem");
        std::fs::write(&wrong_file, wrong.pem()).unwrap();
        let server = tokio::task::spawn_blocking({
            let certificate = ca.issue(&["127.0.0.1"], 9, 2040);
            move || TestPostgres::start_with_tls(&certificate)
        })
        .await
        .unwrap();
        let url = format!("{}?sslmode=verify-full", server.url());

        let Err(error) = Store::connect_postgres(&url, Some(&wrong_file), 2, Duration::from_secs(10)).await else {
            panic!("connected trusting a CA that did not sign the server's certificate");
        };
        let message = error.to_string();
        assert!(message.contains("store.ca_file") && message.contains(&wrong_file.display().to_string()), "{message}");
        assert!(message.contains("UnknownIssuer") && message.contains("sslmode=verify-full"), "{message}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let Err(error) = Store::connect_postgres(&url, Some(&empty), 2, Duration::from_secs(10)).await else {
            panic!("connected with an empty CA file");
        };
        let message = error.to_string();
        assert!(message.contains("store.ca_file") && message.contains("holds no usable CA certificate"), "{message}");
    }

    fn refused_certificate(error: &PgError) -> Option<String> {
        super::refused_certificate(error)
    }
}
