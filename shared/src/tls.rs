//! HTTPS on a listener (`[ingest.tls]`, `[worker.tls]`): the certificate chain and key from PEM
//! files, served with rustls on the aws-lc-rs provider (the process's only one: a second
//! provider in the tree makes rustls's process default panic), ALPN `h2` then `http/1.1`.
//!
//! **Reload.** Every handshake asks [`CurrentCertificate`] for the certificate in use; a task
//! ([`ServerTls::reload`]) reads both files every `reload_interval` and, when their content
//! changed and they make a usable pair, swaps it. Connections already open keep the
//! certificate they were made with (TLS never looks at it again), so nothing is dropped. A change
//! that cannot be used — a half-written file, a key of another certificate, a file gone during
//! a rename — keeps the certificate in use, is logged and counted (`*_tls_reload_failures_total`)
//! once per content seen, and is tried again when the files change again. The gauge
//! `*_tls_certificate_expiry_timestamp_seconds` holds the not-after time of the certificate in
//! use, for an expiry alert.
//!
//! Content rather than modification time is compared: a Kubernetes secret volume swaps a symlink
//! (the files' own times do not change), and two writes within one timestamp tick are told apart.
//! The files are a few kilobytes, read every few seconds.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, TlsConfig};

/// ALPN protocols offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The names of a binary's TLS metrics (each binary's `metric_names` lists them, with their
/// help text; the label is `cert_file`, the configured path).
#[derive(Debug, Clone, Copy)]
pub struct TlsMetricNames {
    /// Counter: changed certificate files that could not be used (the old certificate stayed).
    pub reload_failures: &'static str,
    /// Gauge: not-after time (Unix seconds) of the certificate in use.
    pub expiry: &'static str,
}

impl TlsMetricNames {
    /// Registers both metrics' HELP text; `listener` names the listener that serves the
    /// certificate (`public`, `main`).
    pub fn describe(&self, listener: &str) {
        metrics::describe_counter!(
            self.reload_failures,
            "Changed TLS certificate files that could not be used (the previous certificate stays in use)."
        );
        metrics::describe_gauge!(
            self.expiry,
            metrics::Unit::Seconds,
            format!("Not-after time (Unix seconds) of the TLS certificate the {listener} listener serves.")
        );
    }
}

/// A listener's TLS: the acceptor its connections handshake with and the certificate in use.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<CurrentCertificate>,
    files: TlsConfig,
    /// The config key of the table, e.g. `ingest.tls`: errors name `{key}.cert_file` …
    key: String,
    provider: Arc<CryptoProvider>,
    reload_failures: metrics::Counter,
    expiry: metrics::Gauge,
    /// What the files held when they were last read (or why they could not be read).
    seen: Files,
}

/// The content of both files, or the error reading them.
type Files = Result<(Vec<u8>, Vec<u8>), String>;

impl ServerTls {
    /// Reads the certificate and key of `files` (the table at config key `key`) and builds the
    /// acceptor.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `{key}.cert_file` or `{key}.key_file`: a file cannot be
    /// read, holds no certificate or no private key, or the key is not the certificate's.
    pub fn load(files: &TlsConfig, key: &str, metric_names: TlsMetricNames) -> Result<ServerTls, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let contents = read_files(files, key).map_err(|(field, message)| ConfigError::invalid(field, message))?;
        let loaded = certified_key(&contents.0, &contents.1, files, key, &provider)
            .map_err(|(field, message)| ConfigError::invalid(field, message))?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::clone(&loaded.certified))));
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| ConfigError::invalid(key, format!("TLS setup: {error}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        let label = files.cert_file.display().to_string();
        let expiry = metrics::gauge!(metric_names.expiry, "cert_file" => label.clone());
        expiry.set(loaded.not_after_unix_secs);
        let reload_failures = metrics::counter!(metric_names.reload_failures, "cert_file" => label);
        // Registered at 0, so that an alert on its increase sees the first failure.
        reload_failures.increment(0);
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            current,
            files: files.clone(),
            key: key.to_owned(),
            provider,
            reload_failures,
            expiry,
            seen: Ok(contents),
        })
    }

    /// The acceptor new connections handshake with (always the certificate in use).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files every `reload_interval` until `shutdown`, swapping the certificate in
    /// use when they changed into a usable pair (see the module's documentation).
    pub async fn reload(mut self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.files.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once: the files were read by `load`.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (files, key) = (self.files.clone(), self.key.clone());
            let read = tokio::task::spawn_blocking(move || read_files(&files, &key).map_err(|(_, message)| message))
                .await
                .unwrap_or_else(|error| Err(format!("reading the files failed: {error}")));
            self.consider(read);
        }
    }

    /// Takes what the files hold now.
    fn consider(&mut self, read: Files) {
        if read == self.seen {
            return;
        }
        self.seen = read;
        let cert_file = self.files.cert_file.display().to_string();
        let outcome = match &self.seen {
            Ok((cert, key)) => certified_key(cert, key, &self.files, &self.key, &self.provider)
                .map_err(|(field, message)| format!("{field}: {message}")),
            Err(message) => Err(message.clone()),
        };
        match outcome {
            Ok(loaded) => {
                *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = loaded.certified;
                self.expiry.set(loaded.not_after_unix_secs);
                tracing::info!(
                    key = %self.key,
                    %cert_file,
                    not_after = loaded.not_after_unix_secs,
                    "TLS certificate reloaded: new connections use it"
                );
            }
            Err(error) => {
                self.reload_failures.increment(1);
                tracing::warn!(
                    key = %self.key,
                    %cert_file,
                    %error,
                    "changed TLS certificate files cannot be used; still serving the previous certificate"
                );
            }
        }
    }
}

/// The certificate handshakes get: swapped by [`ServerTls::reload`], read by every handshake.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

/// A usable certificate and key.
struct Loaded {
    certified: Arc<CertifiedKey>,
    /// The end-entity certificate's not-after time.
    not_after_unix_secs: f64,
}

/// A failure, with the config key it is about (`{key}.cert_file` or `{key}.key_file`).
type Failure = (String, String);

/// Both files' bytes.
fn read_files(files: &TlsConfig, key: &str) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let read = |path: &Path, field: &str| {
        std::fs::read(path)
            .map_err(|error| (format!("{key}.{field}"), format!("cannot read {}: {error}", path.display())))
    };
    Ok((read(&files.cert_file, "cert_file")?, read(&files.key_file, "key_file")?))
}

/// Parses `cert` (PEM certificates, the end-entity one first) and `key` (one PEM private key)
/// and checks that the key is the certificate's.
fn certified_key(
    cert: &[u8],
    key: &[u8],
    files: &TlsConfig,
    table: &str,
    provider: &CryptoProvider,
) -> Result<Loaded, Failure> {
    let cert_key = format!("{table}.cert_file");
    let key_key = format!("{table}.key_file");
    let cert_path = files.cert_file.display();
    let key_path = files.key_file.display();
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| (cert_key.clone(), format!("{cert_path} is not valid PEM: {error}")))?;
    let Some(end_entity) = chain.first() else {
        return Err((cert_key, format!("{cert_path} holds no certificate (a PEM `CERTIFICATE` block)")));
    };
    let not_after = not_after(end_entity).map_err(|message| (cert_key.clone(), format!("{cert_path}: {message}")))?;
    let private_key = PrivateKeyDer::from_pem_slice(key).map_err(|error| {
        (key_key.clone(), format!("{key_path} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}"))
    })?;
    let certified = CertifiedKey::from_der(chain, private_key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            (key_key.clone(), format!("the key in {key_path} is not the key of the certificate in {cert_path}"))
        }
        other => (key_key.clone(), format!("{key_path}: {other}")),
    })?;
    Ok(Loaded { certified: Arc::new(certified), not_after_unix_secs: not_after.as_secs_f64() })
}

/// The not-after time of a DER certificate, since the Unix epoch.
fn not_after(certificate: &CertificateDer<'_>) -> Result<Duration, String> {
    use x509_cert::der::Decode as _;
    let parsed = x509_cert::Certificate::from_der(certificate.as_ref())
        .map_err(|error| format!("the first certificate is not valid X.509: {error}"))?;
    Ok(parsed.tbs_certificate.validity.not_after.to_unix_duration())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::test_util::tls::{Issued, TestCa, replace_file};

    const NAMES: TlsMetricNames = TlsMetricNames { reload_failures: "test_failures_total", expiry: "test_expiry" };

    fn files(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            reload_interval: Duration::from_secs(1),
        }
    }

    #[track_caller]
    fn refused(files: &TlsConfig, expected_key: &str, message_part: &str) {
        match ServerTls::load(files, "ingest.tls", NAMES) {
            Ok(_) => panic!("should be refused naming {expected_key}"),
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, expected_key, "{message}");
                assert!(message.contains(message_part), "`{message}` should contain `{message_part}`");
            }
            Err(other) => panic!("expected Invalid, got {other}"),
        }
    }

    fn served(tls: &ServerTls) -> Vec<u8> {
        tls.current.0.read().unwrap().end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn each_unusable_file_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let ca = TestCa::new("unit CA");
        let (first, other) = (ca.issue(&[], 1, 2040), ca.issue(&[], 2, 2040));

        refused(&files, "ingest.tls.cert_file", "cannot read");
        replace_file(&files.cert_file, first.cert_pem.as_bytes());
        refused(&files, "ingest.tls.key_file", "cannot read");
        replace_file(&files.key_file, b"not a key");
        refused(&files, "ingest.tls.key_file", "no usable private key");
        replace_file(&files.cert_file, first.key_pem.as_bytes());
        replace_file(&files.key_file, first.key_pem.as_bytes());
        refused(&files, "ingest.tls.cert_file", "holds no certificate");
        replace_file(&files.cert_file, first.cert_pem.as_bytes());
        replace_file(&files.key_file, other.key_pem.as_bytes());
        refused(&files, "ingest.tls.key_file", "is not the key of the certificate");

        replace_file(&files.key_file, first.key_pem.as_bytes());
        let tls = ServerTls::load(&files, "ingest.tls", NAMES).unwrap();
        assert_eq!(served(&tls), first.cert_der);
        assert_eq!(
            not_after(&CertificateDer::from(first.cert_der.clone())).unwrap().as_secs_f64(),
            Issued::not_after_unix_secs(2040)
        );
    }

    /// A change is taken when both files make a pair again; half-written or mismatched content
    /// keeps the certificate in use.
    #[test]
    fn only_a_usable_change_replaces_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let ca = TestCa::new("unit CA");
        let (first, second) = (ca.issue(&[], 1, 2040), ca.issue(&["second.test"], 2, 2041));
        first.write_to(dir.path());
        let mut tls = ServerTls::load(&files, "ingest.tls", NAMES).unwrap();

        let half = &second.cert_pem.as_bytes()[..second.cert_pem.len() / 2];
        tls.consider(Ok((half.to_vec(), second.key_pem.clone().into_bytes())));
        assert_eq!(served(&tls), first.cert_der, "a half-written certificate was taken");
        tls.consider(Ok((second.cert_pem.clone().into_bytes(), first.key_pem.clone().into_bytes())));
        assert_eq!(served(&tls), first.cert_der, "a certificate with another's key was taken");
        tls.consider(Err("cannot read: gone".into()));
        assert_eq!(served(&tls), first.cert_der);
        tls.consider(Ok((second.cert_pem.clone().into_bytes(), second.key_pem.clone().into_bytes())));
        assert_eq!(served(&tls), second.cert_der, "the new pair was not taken");
    }
}
