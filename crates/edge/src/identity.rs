//! Who is on the other end of a connection: read from the verified client certificate.

use domain::{SourceId, TenantId};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::ca::parse_source_uri;

/// The source a verified client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub tenant: TenantId,
    pub source: SourceId,
    /// Lower-case hex, as recorded when the certificate was issued.
    pub serial: String,
}

impl ClientIdentity {
    /// The identity in a certificate the TLS layer already verified against the internal CA.
    /// `None` when it carries no (or more than one) source URI.
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
        let names = parsed.subject_alternative_name().ok()??;
        let mut sources = names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => parse_source_uri(uri),
                _ => None,
            });
        let (tenant, source) = sources.next()?;
        if sources.next().is_some() {
            return None;
        }
        Some(Self {
            tenant,
            source,
            serial: hex::encode(parsed.raw_serial()),
        })
    }
}

/// What every request on a connection knows about it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub identity: Option<ClientIdentity>,
    pub peer: std::net::SocketAddr,
}
