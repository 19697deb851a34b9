//! Proof that a workspace controls an email domain, made outside its IdP: a DNS TXT record
//! `_tributary-sso.<domain>` holding `tributary-sso-verification=<token>`, where the token is the
//! workspace's own (derived from the platform's master secret and the workspace id, so nobody
//! can compute another workspace's). The record is looked up through the resolver the platform
//! is configured with (`TRIBUTARY_DNS_RESOLVER`, or the system's), never through anything the
//! IdP or the workspace controls.

use std::net::SocketAddr;
use std::time::Duration;

use domain::TenantId;
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The label the TXT record sits under, before the domain.
pub const RECORD_LABEL: &str = "_tributary-sso";
/// What the record's text starts with, before the token.
pub const RECORD_PREFIX: &str = "tributary-sso-verification=";
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the TXT record that proves `domain`.
pub fn record_name(domain: &str) -> String {
    format!("{RECORD_LABEL}.{domain}")
}

/// Why a domain's record could not be checked (not: the record is absent).
#[derive(Debug, thiserror::Error)]
#[error("the DNS lookup failed: {0}")]
pub struct LookupFailed(String);

/// The workspaces' tokens and the resolver their records are looked up through.
#[derive(Clone)]
pub struct DomainProof {
    key: [u8; 32],
    resolver: Option<SocketAddr>,
}

impl std::fmt::Debug for DomainProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainProof")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl DomainProof {
    /// Tokens derived from `master_secret`; records looked up through `resolver` (a DNS server's
    /// address), or the system's resolvers when `None`.
    pub fn new(master_secret: &SecretString, resolver: Option<SocketAddr>) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"tributary-sso-domain-verification-v1\0");
        hash.update(master_secret.expose_secret().as_bytes());
        Self {
            key: hash.finalize().into(),
            resolver,
        }
    }

    /// The text `tenant` publishes in its TXT records.
    pub fn record_value(&self, tenant: TenantId) -> String {
        let mut hash = Sha256::new();
        hash.update(self.key);
        hash.update(tenant.as_uuid().as_bytes());
        let digest: [u8; 32] = hash.finalize().into();
        format!("{RECORD_PREFIX}{}", hex::encode(&digest[..16]))
    }

    /// Whether `domain`'s TXT record carries `tenant`'s token. An absent record is `Ok(false)`.
    pub async fn published(&self, domain: &str, tenant: TenantId) -> Result<bool, LookupFailed> {
        Ok(self.check(domain, tenant).await? == RecordCheck::Published)
    }

    /// What `domain`'s TXT records say about `tenant`.
    pub async fn check(&self, domain: &str, tenant: TenantId) -> Result<RecordCheck, LookupFailed> {
        let builder = match self.resolver {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|error| LookupFailed(error.to_string()))?,
        };
        let mut builder = builder;
        let options = builder.options_mut();
        options.timeout = LOOKUP_TIMEOUT;
        options.attempts = 1;
        options.cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|error| LookupFailed(error.to_string()))?;
        let name = format!("{}.", record_name(domain));
        let expected = self.record_value(tenant);
        let lookup = match resolver.lookup(name.as_str(), RecordType::TXT).await {
            Ok(lookup) => lookup,
            Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
                return Ok(RecordCheck::Absent);
            }
            Err(error) => return Err(LookupFailed(error.to_string())),
        };
        let texts: Vec<Vec<u8>> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .flat_map(|part| part.iter())
                        .copied()
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        Ok(if texts.iter().any(|text| text == expected.as_bytes()) {
            RecordCheck::Published
        } else if texts.is_empty() {
            RecordCheck::Absent
        } else {
            RecordCheck::OtherToken
        })
    }
}

/// What a domain's TXT records at [`record_name`] say about one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCheck {
    /// One of them is the workspace's [`DomainProof::record_value`].
    Published,
    /// There are none.
    Absent,
    /// There are some, none of them the workspace's (another token, or a typo).
    OtherToken,
}

/// What checking a workspace's domain and verifying it came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verification {
    /// The record is there: the domain is verified now (audited).
    Verified,
    /// No TXT record at the name.
    NoRecord,
    /// TXT records, none of them the workspace's.
    WrongToken,
    /// Proved, but another workspace holds the domain verified.
    Taken,
    /// Not one of the workspace's domains (any more).
    NotListed,
    /// The resolver could not be asked (logged).
    LookupFailed,
}

/// Checks `domain`'s TXT record for `tenant`'s token and, when it is there, marks the domain
/// verified, audited as `by` from `client_addr`: what the settings page and the API both do.
pub(crate) async fn check_and_verify(
    state: &crate::AppState,
    tenant: TenantId,
    by: domain::UserId,
    domain: &str,
    client_addr: Option<std::net::IpAddr>,
) -> Result<Verification, store::StoreError> {
    match state.sso.domains().check(domain, tenant).await {
        Ok(RecordCheck::Published) => {}
        Ok(RecordCheck::Absent) => return Ok(Verification::NoRecord),
        Ok(RecordCheck::OtherToken) => return Ok(Verification::WrongToken),
        Err(error) => {
            tracing::warn!(%tenant, %error, "sso domain record lookup failed");
            return Ok(Verification::LookupFailed);
        }
    }
    match store::sso::verify_domain(&state.database, tenant, by, domain, client_addr).await {
        Ok(()) => {
            tracing::info!(%tenant, %by, "sso domain verified by its dns record");
            Ok(Verification::Verified)
        }
        Err(store::StoreError::AlreadyExists(_)) => Ok(Verification::Taken),
        Err(store::StoreError::NotFound(_)) => Ok(Verification::NotListed),
        Err(error) => Err(error),
    }
}
