//! What a NATS connection presents and trusts: the credentials and TLS files of `[nats]`,
//! read and checked once at startup (each failure names its key and never shows a secret), then
//! applied to every connection attempt.

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use async_nats::rustls::pki_types::pem::PemObject as _;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::NatsSetupError;
use crate::config::{NatsAuth, NatsConfig, Secret};

/// The credentials, checked.
enum Credentials {
    None,
    /// The text of a creds file (user JWT and NKey seed).
    Creds(Secret),
    /// An NKey user seed.
    Nkey(Secret),
    UserPassword(String, Secret),
    Token(Secret),
}

/// Credentials and TLS settings, loaded from `[nats]`.
pub(super) struct Security {
    credentials: Credentials,
    require_tls: bool,
    ca_file: Option<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
}

impl Security {
    /// Reads and checks every file `[nats]` names.
    ///
    /// # Errors
    ///
    /// [`NatsSetupError::Config`] naming the key whose file or secret cannot be used.
    pub(super) fn load(config: &NatsConfig) -> Result<Security, NatsSetupError> {
        let credentials = match config.auth() {
            NatsAuth::None => Credentials::None,
            NatsAuth::CredsFile(path) => {
                let text = Secret::new(read("nats.creds_file", path)?);
                // Parsed here only to say now, with the key, what every attempt would find.
                ConnectOptions::new().credentials(text.expose()).map_err(|_| {
                    invalid(
                        "nats.creds_file",
                        format!(
                            "{} is not a NATS credentials file (a user JWT and an NKey seed, as `nsc generate \
                             creds` writes it)",
                            path.display()
                        ),
                    )
                })?;
                Credentials::Creds(text)
            }
            NatsAuth::NkeySeedFile(path) => {
                Credentials::Nkey(user_seed("nats.nkey_seed_file", read("nats.nkey_seed_file", path)?.trim())?)
            }
            NatsAuth::NkeySeed(seed) => Credentials::Nkey(user_seed("nats.nkey_seed", seed.expose().trim())?),
            NatsAuth::UserPassword(user, password) => Credentials::UserPassword(user.to_owned(), password.clone()),
            NatsAuth::Token(token) => Credentials::Token(token.clone()),
        };
        if let Some(path) = &config.tls_ca_file {
            certificates("nats.tls_ca_file", path)?;
        }
        let client_certificate = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                certificates("nats.tls_cert_file", cert)?;
                let pem = read("nats.tls_key_file", key)?;
                PrivateKeyDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| invalid("nats.tls_key_file", format!("{} holds no PEM private key", key.display())))?;
                Some((cert.clone(), key.clone()))
            }
            _ => None,
        };
        Ok(Security {
            credentials,
            require_tls: config.requires_tls(),
            ca_file: config.tls_ca_file.clone(),
            client_certificate,
        })
    }

    /// `options` with these credentials and TLS settings.
    ///
    /// # Errors
    ///
    /// [`NatsSetupError::Config`] if the creds file's text no longer parses (checked in `load`).
    pub(super) fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, NatsSetupError> {
        options = match &self.credentials {
            Credentials::None => options,
            Credentials::Creds(text) => options
                .credentials(text.expose())
                .map_err(|_| invalid("nats.creds_file", "is not a NATS credentials file".into()))?,
            Credentials::Nkey(seed) => options.nkey(seed.expose().to_owned()),
            Credentials::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            Credentials::Token(token) => options.token(token.expose().to_owned()),
        };
        if let Some(ca_file) = &self.ca_file {
            // Only this CA is trusted then (async-nats loads the system roots only without one).
            options = options.add_root_certificates(ca_file.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.require_tls))
    }
}

fn invalid(key: &'static str, message: String) -> NatsSetupError {
    NatsSetupError::Config { key, message }
}

fn read(key: &'static str, path: &Path) -> Result<String, NatsSetupError> {
    std::fs::read_to_string(path).map_err(|error| invalid(key, format!("cannot read {}: {error}", path.display())))
}

/// At least one PEM certificate in the file at `path`.
fn certificates(key: &'static str, path: &Path) -> Result<(), NatsSetupError> {
    let pem = read(key, path)?;
    match CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>() {
        Ok(found) if !found.is_empty() => Ok(()),
        _ => Err(invalid(key, format!("{} holds no PEM certificate", path.display()))),
    }
}

/// `seed` if it is an NKey *user* seed (`SU…`); the error never shows it.
fn user_seed(key: &'static str, seed: &str) -> Result<Secret, NatsSetupError> {
    match nkeys::KeyPair::from_seed(seed) {
        Ok(pair) if pair.public_key().starts_with('U') => Ok(Secret::new(seed)),
        Ok(_) => Err(invalid(key, "is an NKey seed, but not a user's (a user seed starts with SU)".into())),
        Err(_) => Err(invalid(key, "is not an NKey user seed (SU…, as `nk -gen user` writes it)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(edit: impl FnOnce(&mut NatsConfig)) -> NatsConfig {
        let mut config = NatsConfig::default();
        edit(&mut config);
        config
    }

    #[track_caller]
    fn refused(config: &NatsConfig, key: &str, part: &str) -> String {
        match Security::load(config) {
            Err(NatsSetupError::Config { key: found, message }) => {
                assert_eq!(found, key, "{message}");
                assert!(message.contains(part), "`{message}` should contain `{part}`");
                format!("{}", NatsSetupError::Config { key: found, message })
            }
            Err(other) => panic!("expected a Config error for {key}, got {other}"),
            Ok(_) => panic!("expected a Config error for {key}"),
        }
    }

    #[test]
    fn unusable_files_and_seeds_are_named_by_their_key_and_never_shown() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let missing = dir.path().join("missing.creds");
        refused(&config_with(|c| c.creds_file = Some(missing.clone())), "nats.creds_file", "cannot read");
        let not_creds = write("not.creds", "SUAEMPTYSECRETTEXT");
        let message = refused(
            &config_with(|c| c.creds_file = Some(not_creds.clone())),
            "nats.creds_file",
            "not a NATS credentials file",
        );
        assert!(!message.contains("SUAEMPTYSECRETTEXT"), "{message}");

        let account = nkeys::KeyPair::new_account().seed().unwrap_or_default();
        let message = refused(
            &config_with(|c| c.nkey_seed = Some(Secret::new(account.clone()))),
            "nats.nkey_seed",
            "not a user's",
        );
        assert!(!message.contains(&account), "{message}");
        let garbled = write("seed", "SUnot-a-seed-at-all\n");
        let message =
            refused(&config_with(|c| c.nkey_seed_file = Some(garbled.clone())), "nats.nkey_seed_file", "not an NKey");
        assert!(!message.contains("not-a-seed"), "{message}");
        let user = write("user.nk", &format!("{}\n", nkeys::KeyPair::new_user().seed().unwrap_or_default()));
        assert!(Security::load(&config_with(|c| c.nkey_seed_file = Some(user.clone()))).is_ok());

        let not_pem = write("ca.pem", "not a certificate");
        refused(&config_with(|c| c.tls_ca_file = Some(not_pem.clone())), "nats.tls_ca_file", "no PEM certificate");
        refused(
            &config_with(|c| {
                c.tls_cert_file = Some(not_pem.clone());
                c.tls_key_file = Some(not_pem.clone());
            }),
            "nats.tls_cert_file",
            "no PEM certificate",
        );
    }
}
