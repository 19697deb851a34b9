//! TLS configurations: the pinned CA with or without a client certificate, and the explicit
//! trust-on-first-use verifier for the very first pairing connection.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::ClientError;

/// The one crypto provider this crate uses, named explicitly (never the process default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM bundle.
pub(crate) fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ClientError::InvalidCredentials("a certificate is not valid PEM"))?;
    if certificates.is_empty() {
        return Err(ClientError::InvalidCredentials(
            "no certificate in the PEM text",
        ));
    }
    Ok(certificates)
}

/// A root store holding only the CA(s) of `ca_pem`.
pub(crate) fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, ClientError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem)? {
        roots
            .add(certificate)
            .map_err(|_| ClientError::InvalidCredentials("the CA certificate is not usable"))?;
    }
    Ok(Arc::new(roots))
}

/// A client certificate chain and its private key, PEM.
pub(crate) struct ClientIdentity<'a> {
    pub certificate_pem: &'a str,
    pub key_pem: &'a str,
}

/// TLS 1.3 or 1.2, the edge verified against the pinned CA only, and optionally a client
/// certificate.
pub(crate) fn pinned_config(
    ca_pem: &str,
    identity: Option<ClientIdentity<'_>>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some(identity) => {
            let chain = certificates(identity.certificate_pem)?;
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                .map_err(|_| ClientError::InvalidCredentials("the private key is not valid PEM"))?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                ClientError::InvalidCredentials(
                    "the certificate and the private key do not belong together",
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Trust on first use, for the first pairing connection only: accepts whatever chain the server
/// presents (the handshake still proves the server holds the key of its certificate). Pairing
/// then checks the CA the edge returns against that chain before pinning it.
pub(crate) fn trust_on_first_use_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = provider();
    let verifier = Arc::new(FirstUseVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ClientError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks that the CA of `ca_pem` issued `chain` (end entity first) for `server_name`: what
/// pairing does before it pins the CA the edge returned.
pub(crate) fn check_chain(
    ca_pem: &str,
    chain: &[CertificateDer<'static>],
    server_name: &ServerName<'static>,
) -> Result<(), rustls::Error> {
    let roots = roots(ca_pem)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier.verify_server_cert(end_entity, intermediates, server_name, &[], UnixTime::now())?;
    Ok(())
}

/// See [`trust_on_first_use_config`].
#[derive(Debug)]
struct FirstUseVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for FirstUseVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
