//! Secrets at rest: AES-256-GCM under a key derived from the platform's master secret, one key
//! per purpose so a ciphertext of one purpose can never be opened as another. The edge seals the
//! CA key and tenants' masking keys with it; the web app, SSO client secrets.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::Mac;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// A ciphertext that does not open under this key: wrong master secret or tampered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a stored secret cannot be decrypted: the platform's secret key differs from the one it was \
     stored with, or the stored bytes were altered"
)]
pub struct SecretBoxError;

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The box for `purpose` (e.g. "ca-key", "tenant-masking-key") under `master`.
    pub fn new(master: &SecretString, purpose: &str) -> Self {
        let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(
            master.expose_secret().as_bytes(),
        )
        .expect("HMAC takes keys of any length");
        mac.update(b"tributary-secret-box-v1:");
        mac.update(purpose.as_bytes());
        let key = mac.finalize().into_bytes();
        Self {
            cipher: Aes256Gcm::new_from_slice(&key).expect("HMAC-SHA256 output is a 256-bit key"),
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce; returns (ciphertext, nonce).
    pub fn seal(&self, plaintext: &[u8]) -> (Vec<u8>, [u8; 12]) {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let ciphertext = self
            .cipher
            .encrypt(&Nonce::from(nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        (ciphertext, nonce)
    }

    pub fn open(&self, ciphertext: &[u8], nonce: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        self.open_bound(ciphertext, nonce, b"")
    }

    /// Like [`SecretBox::seal`], bound to `context` (authenticated, not stored): the ciphertext
    /// opens only with the same context, so a secret stored for one use (an SSO client secret
    /// for one issuer and client) cannot be opened for another even if the row around it
    /// changes.
    pub fn seal_bound(&self, plaintext: &[u8], context: &[u8]) -> (Vec<u8>, [u8; 12]) {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        (ciphertext, nonce)
    }

    /// Opens what [`SecretBox::seal_bound`] sealed with the same `context`.
    pub fn open_bound(
        &self,
        ciphertext: &[u8],
        nonce: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, SecretBoxError> {
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretBoxError)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| SecretBoxError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_master_and_purpose() {
        let master = SecretString::from("correct horse battery staple".to_owned());
        let sealed = SecretBox::new(&master, "ca-key");
        let (ciphertext, nonce) = sealed.seal(b"the CA's private key");
        assert_ne!(ciphertext.as_slice(), b"the CA's private key".as_slice());
        assert_eq!(
            sealed.open(&ciphertext, &nonce).unwrap(),
            b"the CA's private key"
        );
        let other_purpose = SecretBox::new(&master, "tenant-masking-key");
        assert_eq!(other_purpose.open(&ciphertext, &nonce), Err(SecretBoxError));
        let other_master = SecretBox::new(&SecretString::from("wrong".to_owned()), "ca-key");
        assert_eq!(other_master.open(&ciphertext, &nonce), Err(SecretBoxError));
        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        assert_eq!(sealed.open(&tampered, &nonce), Err(SecretBoxError));
    }

    #[test]
    fn a_bound_secret_opens_only_in_its_context() {
        let master = SecretString::from("correct horse battery staple".to_owned());
        let sealed = SecretBox::new(&master, "sso-client-secret");
        let (ciphertext, nonce) = sealed.seal_bound(b"client secret", b"https://idp.example\0c");
        assert_eq!(
            sealed
                .open_bound(&ciphertext, &nonce, b"https://idp.example\0c")
                .unwrap(),
            b"client secret"
        );
        for other in [
            b"https://evil.example\0c".as_slice(),
            b"https://idp.example\0d",
            b"",
        ] {
            assert_eq!(
                sealed.open_bound(&ciphertext, &nonce, other),
                Err(SecretBoxError)
            );
        }
        assert_eq!(sealed.open(&ciphertext, &nonce), Err(SecretBoxError));
    }
}
