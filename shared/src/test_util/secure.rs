//! A nats-server secured like the compose cluster: accounts, a user per service with the
//! permission sets of `deploy/nats/permissions.conf` (the file itself, included by the server's
//! config, so tests and compose cannot drift), and TLS with certificates made here ([`TestPki`],
//! rcgen).
//!
//! [`TestNats::start_secured`] writes the accounts from [`NatsUser`]s (a password or an NKey
//! each); [`TestNats::start_with_deploy_accounts`] runs `deploy/nats/accounts.conf` itself, as
//! compose does, its passwords from the environment.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::TestNats;

/// Permission set of ingest in `deploy/nats/permissions.conf`.
pub const INGEST_PERMISSIONS: &str = "INLET_INGEST_PERMISSIONS";
/// Permission set of the workers in `deploy/nats/permissions.conf`.
pub const WORKER_PERMISSIONS: &str = "INLET_WORKER_PERMISSIONS";

/// `deploy/nats/<name>`.
pub fn deploy_nats_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats").join(name)
}

fn read_deploy_file(name: &str) -> String {
    let path = deploy_nats_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// 32 random hex digits.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 16];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the server's client port uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    /// No TLS.
    Off,
    /// TLS required, with [`TestPki`]'s server certificate.
    Required,
    /// TLS required, and a client certificate signed by [`TestPki`]'s CA (`verify: true`).
    Mutual,
}

/// A test CA, a server certificate it signed for `127.0.0.1` and `localhost`, a client
/// certificate it signed, and an unrelated CA (which signed neither), as PEM files.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the certificates.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write a PEM file");

        let (ca_pem, issuer) = ca("Inlet test CA");
        write("ca.pem", &ca_pem);
        let (other_pem, _) = ca("Some other CA");
        write("other-ca.pem", &other_pem);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, common_name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("certificate params");
            params.distinguished_name.push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            let cert = params.signed_by(&key, &issuer).expect("sign the certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) =
            leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth, "nats test server");
        write("server.pem", &server);
        write("server-key.pem", &server_key);
        let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "inlet test client");
        write("client.pem", &client);
        write("client-key.pem", &client_key);
        TestPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// A CA that signed neither.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    /// The server's certificate (`127.0.0.1`, `localhost`).
    pub fn server_cert_file(&self) -> PathBuf {
        self.path("server.pem")
    }
    /// Its key.
    pub fn server_key_file(&self) -> PathBuf {
        self.path("server-key.pem")
    }
    /// A client certificate the CA signed.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path("client.pem")
    }
    /// Its key.
    pub fn client_key_file(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// `[nats]` keys trusting this CA (and, with `client_certificate`, presenting the client
    /// certificate), one per line.
    pub fn config_keys(&self, client_certificate: bool) -> String {
        let mut keys = format!("tls_ca_file = {:?}\n", self.ca_file());
        if client_certificate {
            keys.push_str(&format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                self.client_cert_file(),
                self.client_key_file()
            ));
        }
        keys
    }

    /// The server's `tls { … }` block for `mode` (empty when off).
    pub fn server_block(&self, mode: ServerTls) -> String {
        let verify = match mode {
            ServerTls::Off => return String::new(),
            ServerTls::Required => "",
            ServerTls::Mutual => "  verify: true\n",
        };
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n{verify}  timeout: 2\n}}\n",
            self.server_cert_file(),
            self.server_key_file(),
            self.ca_file()
        )
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A self-signed CA: its certificate (PEM) and an issuer that signs with it.
fn ca(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert.pem(), Issuer::new(params, key))
}

/// How a test user authenticates.
#[derive(Debug, Clone)]
enum Credentials {
    Password {
        user: String,
        password: String,
    },
    /// An NKey user seed (`SU…`) and its public key (`U…`).
    Nkey {
        seed: String,
        public: String,
    },
}

/// A user of the `INLET` account for [`TestNats::start_secured`], with a permission set of
/// `deploy/nats/permissions.conf` (or none: everything allowed, like an account's owner).
#[derive(Debug, Clone)]
pub struct NatsUser {
    credentials: Credentials,
    permissions: Option<&'static str>,
}

impl NatsUser {
    /// A user `name` with a random password.
    pub fn password(name: &str, permissions: Option<&'static str>) -> NatsUser {
        NatsUser { credentials: Credentials::Password { user: name.into(), password: random_secret() }, permissions }
    }

    /// A user known by the public key of a new NKey.
    pub fn nkey(permissions: Option<&'static str>) -> NatsUser {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("NKey seed");
        NatsUser { credentials: Credentials::Nkey { seed, public: pair.public_key() }, permissions }
    }

    /// The password, or the NKey seed.
    pub fn secret(&self) -> &str {
        match &self.credentials {
            Credentials::Password { password, .. } => password,
            Credentials::Nkey { seed, .. } => seed,
        }
    }

    /// `[nats]` keys of Inlet's config authenticating as this user, one per line: `user` and
    /// `password`, or `nkey_seed`.
    pub fn config_keys(&self) -> String {
        match &self.credentials {
            Credentials::Password { user, password } => format!("user = {user:?}\npassword = {password:?}\n"),
            Credentials::Nkey { seed, .. } => format!("nkey_seed = {seed:?}\n"),
        }
    }

    /// Writes the NKey seed into `dir` and returns the `nkey_seed_file` key pointing at it.
    ///
    /// # Panics
    ///
    /// For a password user.
    pub fn seed_file_key(&self, dir: &Path) -> String {
        let Credentials::Nkey { seed, public } = &self.credentials else { panic!("not an NKey user") };
        let path = dir.join(format!("{public}.nk"));
        std::fs::write(&path, format!("{seed}\n")).expect("write the seed file");
        format!("nkey_seed_file = {path:?}\n")
    }

    /// Options of a plain client (tests' own, not Inlet's) authenticating as this user.
    #[cfg(feature = "runtime")]
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        match &self.credentials {
            Credentials::Password { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Nkey { seed, .. } => async_nats::ConnectOptions::with_nkey(seed.clone()),
        }
    }

    fn server_entry(&self) -> String {
        let permissions = self.permissions.map(|set| format!(", permissions: ${set}")).unwrap_or_default();
        match &self.credentials {
            Credentials::Password { user, password } => {
                format!("{{ user: {user:?}, password: {password:?}{permissions} }}")
            }
            Credentials::Nkey { public, .. } => format!("{{ nkey: {public:?}{permissions} }}"),
        }
    }
}

impl TestNats {
    /// Starts a server whose only users are `users`, in the account `INLET` (JetStream) as in
    /// the compose cluster, with the permission sets of `deploy/nats/permissions.conf` included
    /// from that file, a system account (user `sys`, password `sys_password`), and TLS as `tls`
    /// says (certificates from `pki`).
    pub fn start_secured(users: &[&NatsUser], sys_password: &str, pki: &TestPki, tls: ServerTls) -> TestNats {
        let mut entries: Vec<String> = users.iter().map(|user| format!("      {}", user.server_entry())).collect();
        // nats-server refuses a config with a variable nothing refers to: a set no test user
        // has goes to a user nobody knows the password of.
        for set in [INGEST_PERMISSIONS, WORKER_PERMISSIONS] {
            if !users.iter().any(|user| user.permissions == Some(set)) {
                let unused = NatsUser::password(&format!("unused-{}", set.to_ascii_lowercase()), Some(set));
                entries.push(format!("      {}", unused.server_entry()));
            }
        }
        let config = format!(
            "include \"permissions.conf\"\naccounts {{\n  INLET {{\n    jetstream: enabled\n    users: [\n{}\n    ]\n  }}\n  \
             SYS {{ users: [ {{ user: sys, password: {sys_password:?} }} ] }}\n}}\nsystem_account: SYS\n{}",
            entries.join("\n"),
            pki.server_block(tls)
        );
        let permissions = read_deploy_file("permissions.conf");
        TestNats::start_with_files(Some(&config), &[("permissions.conf", &permissions)], &[])
    }

    /// Starts a server with `deploy/nats/accounts.conf` (and the `permissions.conf` it
    /// includes) exactly as the compose cluster runs it, `env` giving the passwords it reads
    /// from the environment, and TLS as `tls` says.
    pub fn start_with_deploy_accounts(env: &[(&str, &str)], pki: &TestPki, tls: ServerTls) -> TestNats {
        let config = format!("include \"accounts.conf\"\n{}", pki.server_block(tls));
        let (accounts, permissions) = (read_deploy_file("accounts.conf"), read_deploy_file("permissions.conf"));
        TestNats::start_with_files(
            Some(&config),
            &[("accounts.conf", &accounts), ("permissions.conf", &permissions)],
            env,
        )
    }
}
