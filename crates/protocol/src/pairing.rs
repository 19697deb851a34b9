//! The bodies of pairing (a new agent trades a one-time token and a CSR for a certificate) and
//! of certificate renewal.

use std::fmt;

use domain::{SourceId, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/pair`: the one-time pairing token shown in the app, and a PEM certificate
/// signing request for the key the agent generated (the key never leaves the agent).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequest {
    pub token: String,
    pub csr_pem: String,
}

impl fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairRequest")
            .field("token", &"[redacted]")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// `POST /v1/renew` over mTLS with the current certificate: a CSR for the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// The answer to pairing and renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub tenant_id: TenantId,
    pub source_id: SourceId,
    pub certificate_pem: String,
    /// The CA the agent pins when it connects to the edge.
    pub ca_certificate_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}
