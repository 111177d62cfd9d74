//! Secret values: random tokens, their stored SHA-256, constant-time comparison, and
//! encryption at rest of the provider tokens the worker keeps (AES-256-GCM).
//!
//! A sealed value is `v1.{key_id}.{base64url(nonce ‖ ciphertext+tag)}` with a random 96-bit
//! nonce per value; the associated data binds it to its row (e.g. `oauth_account:github:583231`),
//! so a value copied to another row does not open. Keys come from `[console] token_keys`: the
//! first one seals, every one opens, so a key rotates by putting the new one first and removing
//! the old one once nothing sealed with it is left.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use subtle::ConstantTimeEq;

const NONCE_BYTES: usize = 12;

/// `n` random bytes, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// Hex SHA-256 (how tokens and session ids are stored).
pub fn sha256_hex(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Constant-time equality of two strings (length is not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Why sealing or opening failed. Never says more (no oracle).
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// A configured key is not base64 of 32 bytes.
    #[error("token key `{0}` must be base64 of 32 bytes")]
    BadKey(String),
    /// No keys configured.
    #[error("no token keys")]
    NoKeys,
    /// The sealed value names a key that is not configured.
    #[error("sealed with an unknown key")]
    UnknownKey,
    /// Not a sealed value, tampered with, or bound to another row.
    #[error("cannot open sealed value")]
    Open,
    /// The value could not be sealed (the AEAD refused, or it could not be serialised).
    #[error("cannot seal value")]
    Seal,
}

/// AES-256-GCM with key ids.
pub struct TokenCipher {
    keys: Vec<(String, Aes256Gcm)>,
}

impl TokenCipher {
    /// Builds the cipher from `(id, base64 key)` pairs; the first seals.
    ///
    /// # Errors
    ///
    /// No keys, or a key that is not base64 of 32 bytes.
    pub fn new<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<TokenCipher, CipherError> {
        let mut built = Vec::new();
        for (id, key) in keys {
            let bytes = STANDARD.decode(key.trim()).map_err(|_| CipherError::BadKey(id.to_owned()))?;
            if bytes.len() != 32 {
                return Err(CipherError::BadKey(id.to_owned()));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CipherError::BadKey(id.to_owned()))?;
            built.push((id.to_owned(), cipher));
        }
        if built.is_empty() {
            return Err(CipherError::NoKeys);
        }
        Ok(TokenCipher { keys: built })
    }

    /// A cipher with one key drawn at random now, kept only in memory (values it seals open
    /// in this process only).
    pub fn ephemeral(id: &str) -> TokenCipher {
        let key = aes_gcm::Key::<Aes256Gcm>::generate();
        TokenCipher { keys: vec![(id.to_owned(), Aes256Gcm::new(&key))] }
    }

    /// Seals `plaintext`, bound to `aad`.
    ///
    /// # Errors
    ///
    /// Only if the AEAD refuses (it does not for these sizes).
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, CipherError> {
        let (id, cipher) = self.keys.first().ok_or(CipherError::NoKeys)?;
        let nonce = Nonce::generate();
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| CipherError::Seal)?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + sealed.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&sealed);
        Ok(format!("v1.{id}.{}", URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a value sealed for `aad` with any configured key.
    ///
    /// # Errors
    ///
    /// Unknown key id, or a value that is malformed, tampered with or bound to another `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, CipherError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CipherError::Open);
        };
        let (_, cipher) = self.keys.iter().find(|(key_id, _)| key_id == id).ok_or(CipherError::UnknownKey)?;
        let blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| CipherError::Open)?;
        if blob.len() < NONCE_BYTES {
            return Err(CipherError::Open);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce).map_err(|_| CipherError::Open)?;
        let plaintext =
            cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: aad.as_bytes() }).map_err(|_| CipherError::Open)?;
        String::from_utf8(plaintext).map_err(|_| CipherError::Open)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // 32 bytes

    #[test]
    fn tokens_are_random_and_compared_in_constant_time() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq("abc", "abcd"));
    }

    #[test]
    fn sealed_tokens_open_only_with_their_key_and_row() {
        let cipher = TokenCipher::new([("k1", K1)]).unwrap();
        let sealed = cipher.seal("gho_secret", "oauth_account:github:1").unwrap();
        assert!(sealed.starts_with("v1.k1.") && !sealed.contains("gho_secret"));
        assert_ne!(sealed, cipher.seal("gho_secret", "oauth_account:github:1").unwrap(), "fresh nonce each time");
        assert_eq!(cipher.open(&sealed, "oauth_account:github:1").unwrap(), "gho_secret");
        assert!(matches!(cipher.open(&sealed, "oauth_account:github:2"), Err(CipherError::Open)), "bound to its row");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(cipher.open(std::str::from_utf8(&tampered).unwrap(), "oauth_account:github:1").is_err());
        assert!(matches!(cipher.open("plain", "x"), Err(CipherError::Open)));
    }

    #[test]
    fn ephemeral_keys_differ_per_cipher() {
        let (a, b) = (TokenCipher::ephemeral("flow"), TokenCipher::ephemeral("flow"));
        let sealed = a.seal("state", "login_flow:oidc").unwrap();
        assert_eq!(a.open(&sealed, "login_flow:oidc").unwrap(), "state");
        assert!(matches!(b.open(&sealed, "login_flow:oidc"), Err(CipherError::Open)), "another process's key");
    }

    #[test]
    fn keys_rotate_by_id() {
        let old = TokenCipher::new([("k1", K1)]).unwrap();
        let sealed_old = old.seal("t", "a").unwrap();
        let rotated = TokenCipher::new([("k2", K2), ("k1", K1)]).unwrap();
        assert_eq!(rotated.open(&sealed_old, "a").unwrap(), "t", "old values still open");
        let sealed_new = rotated.seal("t", "a").unwrap();
        assert!(sealed_new.starts_with("v1.k2."), "the first key seals");
        assert!(matches!(old.open(&sealed_new, "a"), Err(CipherError::UnknownKey)));
        assert!(matches!(TokenCipher::new([("short", "AAAA")]), Err(CipherError::BadKey(_))));
        assert!(matches!(TokenCipher::new([]), Err(CipherError::NoKeys)));
    }
}
