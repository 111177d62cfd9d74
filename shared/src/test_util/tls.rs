//! Certificates for TLS tests, made by the test (rcgen): a CA of its own and server certificates
//! it signs, written as PEM files where a config can name them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber};

/// The name every test certificate is issued for; clients resolve it to the listener's
/// address (`reqwest::ClientBuilder::resolve`), so no name lookup is involved.
pub const SERVER_NAME: &str = "inlet.test";

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM (`cert_pem` is the chain: the server's certificate
/// only; the CA is what clients trust).
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER: what a client sees as the peer certificate.
    pub cert_der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).unwrap() }
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for [`SERVER_NAME`] and `extra_names`, with serial number `serial`,
    /// valid until the end of `not_after_year`.
    pub fn issue(&self, extra_names: &[&str], serial: u64, not_after_year: i32) -> Issued {
        let names: Vec<String> =
            std::iter::once(SERVER_NAME).chain(extra_names.iter().copied()).map(str::to_owned).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 12, 31);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert_pem: certificate.pem(), key_pem: key.serialize_pem(), cert_der: certificate.der().to_vec() }
    }
}

impl Issued {
    /// Writes the certificate and key into `dir` (`server.crt`, `server.key`); returns their paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        replace_file(&cert, self.cert_pem.as_bytes());
        replace_file(&key, self.key_pem.as_bytes());
        (cert, key)
    }

    /// The Unix time (seconds) of the end of `year` as [`TestCa::issue`] sets it.
    pub fn not_after_unix_secs(year: i32) -> f64 {
        rcgen::date_time_ymd(year, 12, 31).unix_timestamp() as f64
    }
}

/// Writes `bytes` to `path` as a deployment should: into a file beside it, then renamed over it,
/// so that a reader sees the old content or the new, never half of it.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}
