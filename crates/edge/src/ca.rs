//! The platform's internal certificate authority: created on first start (key stored encrypted),
//! it signs the edge's server certificate and the short-lived client certificates of agents.
//!
//! A client certificate names its source in a URI subject alternative name,
//! `urn:tributary:tenant:<tenant id>:source:<source id>`; the edge takes tenant and source from
//! there and nowhere else.

use std::net::IpAddr;

use domain::{SourceId, TenantId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use store::ServiceDb;
use store::sources::{IssuedCertificate, StoredCertificateAuthority};
use time::{Duration, OffsetDateTime};

use crate::secret_box::{SecretBox, SecretBoxError};

const SAN_PREFIX: &str = "urn:tributary:tenant:";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    #[error(transparent)]
    Secret(#[from] SecretBoxError),
    #[error("the stored CA is unreadable")]
    Corrupt,
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Why a certificate signing request was refused; said to the agent as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRefusal {
    #[error(
        "the certificate signing request is not a valid PEM PKCS#10 request with a valid signature"
    )]
    Invalid,
    #[error("the key type is not allowed: use ECDSA P-256 or Ed25519")]
    KeyType,
}

/// The CA, ready to sign.
pub struct CertificateAuthority {
    certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the stored CA, or creates and stores one on first start. Two processes starting at
    /// once agree on one CA: the second to store it loads the first's.
    pub async fn load_or_create(
        database: &ServiceDb,
        secrets: &SecretBox,
    ) -> Result<Self, CaError> {
        if let Some(stored) = store::service::sources::load_certificate_authority(database).await? {
            return Self::from_stored(&stored, secrets);
        }
        let (authority, stored) = Self::generate(secrets)?;
        if store::service::sources::store_certificate_authority(database, &stored).await? {
            tracing::info!("internal certificate authority created");
            return Ok(authority);
        }
        let stored = store::service::sources::load_certificate_authority(database)
            .await?
            .ok_or(CaError::Corrupt)?;
        Self::from_stored(&stored, secrets)
    }

    fn generate(secrets: &SecretBox) -> Result<(Self, StoredCertificateAuthority), CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Tributary internal CA");
        name.push(DnType::OrganizationName, "Tributary");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial().1);
        let certificate = params.self_signed(&key).map_err(CaError::Generate)?;
        let (key_ciphertext, key_nonce) = secrets.seal(key.serialize_pem().as_bytes());
        let stored = StoredCertificateAuthority {
            certificate_pem: certificate.pem(),
            key_ciphertext,
            key_nonce: key_nonce.to_vec(),
        };
        Ok((
            Self {
                certificate_pem: certificate.pem(),
                certificate_der: certificate.der().clone(),
                issuer: Issuer::new(params, key),
            },
            stored,
        ))
    }

    fn from_stored(
        stored: &StoredCertificateAuthority,
        secrets: &SecretBox,
    ) -> Result<Self, CaError> {
        let key_pem = secrets.open(&stored.key_ciphertext, &stored.key_nonce)?;
        let key_pem = String::from_utf8(key_pem).map_err(|_| CaError::Corrupt)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CaError::Corrupt)?;
        let issuer =
            Issuer::from_ca_cert_pem(&stored.certificate_pem, key).map_err(|_| CaError::Corrupt)?;
        let certificate_der =
            rustls_pki_types::pem::PemObject::from_pem_slice(stored.certificate_pem.as_bytes())
                .map_err(|_| CaError::Corrupt)?;
        Ok(Self {
            certificate_pem: stored.certificate_pem.clone(),
            certificate_der,
            issuer,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    /// A fresh server certificate for the edge (not stored: made at every start), valid for the
    /// given DNS names and IP addresses.
    pub fn issue_server_certificate(
        &self,
        hostnames: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Tributary edge");
        params.distinguished_name = name;
        params.subject_alt_names = hostnames
            .iter()
            .map(|host| match host.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => host
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(CaError::Generate),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(90);
        params.serial_number = Some(random_serial().1);
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Generate)?;
        Ok((
            vec![certificate.der().clone(), self.certificate_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs a client certificate for `source` over the public key of `csr_pem`. Only the key
    /// is taken from the request: names, usages and validity are the platform's.
    pub fn sign_client_certificate(
        &self,
        csr_pem: &str,
        tenant: TenantId,
        source: SourceId,
        lifetime: Duration,
    ) -> Result<(String, IssuedCertificate), CsrRefusal> {
        let request =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| CsrRefusal::Invalid)?;
        let algorithm = request.public_key.algorithm();
        if algorithm != &rcgen::PKCS_ECDSA_P256_SHA256 && algorithm != &rcgen::PKCS_ED25519 {
            return Err(CsrRefusal::KeyType);
        }
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, source.to_string());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(
            source_uri(tenant, source)
                .try_into()
                .map_err(|_| CsrRefusal::Invalid)?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        // A little slack for agents whose clock runs slightly behind.
        let not_before = now - Duration::minutes(5);
        let not_after = now + lifetime;
        params.not_before = not_before;
        params.not_after = not_after;
        let (serial, serial_number) = random_serial();
        params.serial_number = Some(serial_number);
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|_| CsrRefusal::Invalid)?;
        let issued = IssuedCertificate {
            source,
            serial,
            fingerprint_sha256: Sha256::digest(certificate.der()).into(),
            not_before: truncate_to_seconds(not_before),
            not_after: truncate_to_seconds(not_after),
        };
        Ok((certificate.pem(), issued))
    }
}

/// The subject alternative name that identifies a source.
pub fn source_uri(tenant: TenantId, source: SourceId) -> String {
    format!("{SAN_PREFIX}{tenant}:source:{source}")
}

/// Reads tenant and source back from a source URI.
pub fn parse_source_uri(uri: &str) -> Option<(TenantId, SourceId)> {
    let rest = uri.strip_prefix(SAN_PREFIX)?;
    let (tenant, source) = rest.split_once(":source:")?;
    Some((tenant.parse().ok()?, source.parse().ok()?))
}

/// 16 random bytes, the first in 0x01..=0x7f so the DER integer is positive and exactly 16
/// bytes long (its hex form then matches what a parser reads back).
fn random_serial() -> (String, SerialNumber) {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes[0] = (bytes[0] & 0x7f).max(1);
    (hex::encode(bytes), SerialNumber::from_slice(&bytes))
}

/// X.509 validity has second precision.
fn truncate_to_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_uris_round_trip_and_reject_lookalikes() {
        let (tenant, source) = (TenantId::new_random(), SourceId::new_random());
        assert_eq!(
            parse_source_uri(&source_uri(tenant, source)),
            Some((tenant, source))
        );
        assert_eq!(parse_source_uri("urn:tributary:tenant:x:source:y"), None);
        assert_eq!(
            parse_source_uri(&format!("urn:other:tenant:{tenant}:source:{source}")),
            None
        );
    }

    #[test]
    fn signed_client_certificates_carry_only_the_platforms_names() {
        let secrets = SecretBox::new(&secrecy::SecretString::from("k".to_owned()), "ca-key");
        let (authority, stored) = CertificateAuthority::generate(&secrets).unwrap();
        let reloaded = CertificateAuthority::from_stored(&stored, &secrets).unwrap();
        assert_eq!(reloaded.certificate_pem(), authority.certificate_pem());

        // The agent asks for a CA certificate for another name; it gets a client certificate.
        let agent_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut wanted = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        wanted.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = wanted.serialize_request(&agent_key).unwrap().pem().unwrap();
        let (tenant, source) = (TenantId::new_random(), SourceId::new_random());
        let (pem, issued) = reloaded
            .sign_client_certificate(&csr, tenant, source, Duration::days(7))
            .unwrap();
        let der: CertificateDer =
            rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!parsed.is_ca());
        assert_eq!(hex::encode(parsed.raw_serial()), issued.serial);
        let uris: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(uris, [format!("URI({})", source_uri(tenant, source))]);
        let lifetime =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        assert_eq!(lifetime, Duration::days(7).whole_seconds() + 300);

        assert_eq!(
            reloaded
                .sign_client_certificate("not a csr", tenant, source, Duration::days(7))
                .unwrap_err(),
            CsrRefusal::Invalid
        );
        let p384_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&p384_key)
            .unwrap()
            .pem()
            .unwrap();
        assert_eq!(
            reloaded
                .sign_client_certificate(&csr, tenant, source, Duration::days(7))
                .unwrap_err(),
            CsrRefusal::KeyType
        );
    }
}
