//! A paired source's credentials: its certificate and private key, the pinned CA, and which
//! tenant and source the certificate names; kept in one file of a directory, written atomically.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use domain::{SourceId, TenantId};
use rcgen::{CertificateParams, KeyPair};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::CredentialsError;

/// The file in a credentials directory. One file rather than a certificate and a key apart, so
/// that a renewal replaces both at once (a crash never leaves a key beside another's
/// certificate). Mode 0600: it holds the private key.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// What pairing (or renewal) gives a source.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub tenant_id: TenantId,
    pub source_id: SourceId,
    /// The client certificate, PEM.
    pub certificate_pem: String,
    /// Its private key (PKCS#8, PEM). Generated here; never sent anywhere.
    pub key_pem: String,
    /// The platform's CA, pinned: the only issuer the edge's certificate is accepted from.
    pub ca_pem: String,
    /// When the certificate expires; renew well before.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

// The private key is never printed.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("source_id", &self.source_id)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Time left until the certificate expires (negative once it has).
    pub fn remaining_lifetime(&self, now: OffsetDateTime) -> time::Duration {
        self.not_after - now
    }

    /// Writes `dir/credentials.json` (mode 0600, the directory 0700 if created): to a temporary
    /// file first, synced, then renamed over the previous one.
    pub fn save(&self, dir: &Path) -> Result<(), CredentialsError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| CredentialsError::Io { path, source }
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_error(dir))?;
        }
        let path = dir.join(CREDENTIALS_FILE);
        let temporary = dir.join(format!(".{CREDENTIALS_FILE}.tmp"));
        let _ = std::fs::remove_file(&temporary);
        let json = serde_json::to_vec_pretty(self).expect("credentials serialise");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(&json).map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
        // The rename is durable once the directory is.
        if let Ok(directory) = std::fs::File::open(dir) {
            let _ = directory.sync_all();
        }
        Ok(())
    }

    /// Reads `dir/credentials.json`; refuses a file other users may read.
    pub fn load(dir: &Path) -> Result<Self, CredentialsError> {
        let path = dir.join(CREDENTIALS_FILE);
        let io_error = |source| CredentialsError::Io {
            path: path.clone(),
            source,
        };
        let mode = std::fs::metadata(&path)
            .map_err(io_error)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Permissions { path, mode });
        }
        let bytes = std::fs::read(&path).map_err(io_error)?;
        serde_json::from_slice(&bytes).map_err(|source| CredentialsError::Corrupt { path, source })
    }
}

/// A fresh ECDSA P-256 key and a PEM certificate signing request for it. The edge takes only
/// the public key from the request; names and usages are the platform's.
pub(crate) fn new_key_and_request() -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let request = CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            tenant_id: TenantId::new_random(),
            source_id: SourceId::new_random(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nca\n".into(),
            not_after: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        }
    }

    #[test]
    fn saved_credentials_load_back_private_to_their_owner() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("agent");
        let credentials = sample();
        credentials.save(&dir).unwrap();
        let path = dir.join(CREDENTIALS_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(Credentials::load(&dir).unwrap(), credentials);

        // Saving again (a renewal) replaces the file and leaves no temporary behind.
        let mut renewed = sample();
        renewed.tenant_id = credentials.tenant_id;
        renewed.save(&dir).unwrap();
        assert_eq!(Credentials::load(&dir).unwrap(), renewed);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [CREDENTIALS_FILE]);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Credentials::load(&dir).unwrap_err();
        assert!(
            matches!(error, CredentialsError::Permissions { mode: 0o644, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let printed = format!("{:?}", sample());
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn requests_are_for_p256_keys() {
        use rcgen::PublicKeyData;
        let (key, request) = new_key_and_request().unwrap();
        assert!(request.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&request).unwrap();
        assert_eq!(parsed.public_key.der_bytes(), key.der_bytes());
    }
}
