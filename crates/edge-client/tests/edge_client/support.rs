//! A stand-in edge for the client's tests: TLS with optional client certificates from a test
//! CA, HTTP/1.1 keep-alive, answers chosen by each test, and a stop that drops every connection
//! at once (as a killed process would), so a restart on the same port can be tested.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use domain::{EventId, Lsn, SourceId, TenantId};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use protocol::{ChangeEvent, EventBatch, Op};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// A certificate authority for the tests.
pub struct TestCa {
    pub pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        Self {
            pem: certificate.pem(),
            der: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, with the CA after it.
    fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![certificate.der().clone(), self.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A client certificate over the key of `csr_pem`, as the edge issues at pairing.
    pub fn sign_client(&self, csr_pem: &str) -> String {
        let request = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "source");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&request.public_key, &self.issuer)
            .unwrap()
            .pem()
    }
}

/// A request as the stand-in edge received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub client_certificate: bool,
}

/// What the stand-in edge answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({ "error": { "code": code, "message": message } }),
        )
    }
}

pub type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A running stand-in edge.
pub struct StandIn {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Listens on `addr` (port 0 for any) with a server certificate from `ca`.
    pub async fn start(ca: &TestCa, addr: SocketAddr, handler: Handler) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .unwrap();
        let (chain, key) = ca.server_identity();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops every connection with it.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_certificate = tls.get_ref().1.peer_certificates().is_some();
                    let service =
                        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let received = Received {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers,
                                    body,
                                    client_certificate,
                                };
                                let reply = handler(&received);
                                if !reply.delay.is_zero() {
                                    tokio::time::sleep(reply.delay).await;
                                }
                                let mut response = hyper::Response::builder().status(reply.status);
                                for (name, value) in &reply.headers {
                                    response = response.header(*name, value);
                                }
                                Ok::<_, hyper::Error>(
                                    response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    /// Stops listening and drops every open connection, as a killed process would.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A batch of `n` events of `source` (the stand-in does not check them).
pub fn batch(source: SourceId, n: u32) -> EventBatch {
    let events = (0..n)
        .map(|seq| {
            let millis = 1_780_000_000_000i64;
            let mut key = serde_json::Map::new();
            key.insert("id".into(), seq.into());
            ChangeEvent {
                event_id: EventId::derive(source, millis, Lsn(64), seq),
                op: Op::Insert,
                schema: "public".into(),
                table: "devices".into(),
                lsn: Lsn(64),
                seq,
                xid: None,
                event_time: time::OffsetDateTime::from_unix_timestamp(millis / 1000).unwrap(),
                after: Some(key.clone()),
                key,
                before: None,
                unchanged: Vec::new(),
                types: Default::default(),
            }
        })
        .collect();
    EventBatch {
        tenant_id: None,
        source_id: None,
        events,
        types: Vec::new(),
    }
}

/// The stand-in's answer accepting every event of the batch in `received`.
pub fn accept_all(received: &Received) -> Reply {
    let json = protocol::decompress(
        &received.body,
        protocol::Encoding::from_header(
            received
                .headers
                .get("content-encoding")
                .and_then(|value| value.to_str().ok()),
        )
        .unwrap(),
        &protocol::Limits::default(),
    )
    .unwrap();
    let batch: EventBatch = serde_json::from_slice(&json).unwrap();
    let results: Vec<_> = batch
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| protocol::EventResult::accepted(index as u32, event.event_id))
        .collect();
    Reply::json(
        200,
        serde_json::to_value(protocol::BatchResponse::from_results(results)).unwrap(),
    )
}

/// A certificate response for pairing, signed by `ca`, naming `tenant` and `source`.
pub fn certificate_response(
    ca: &TestCa,
    returned_ca_pem: &str,
    received: &Received,
    tenant: TenantId,
    source: SourceId,
) -> Reply {
    let request: protocol::PairRequest = serde_json::from_slice(&received.body).unwrap();
    Reply::json(
        200,
        serde_json::to_value(protocol::CertificateResponse {
            tenant_id: tenant,
            source_id: source,
            certificate_pem: ca.sign_client(&request.csr_pem),
            ca_certificate_pem: returned_ca_pem.to_owned(),
            not_after: time::OffsetDateTime::now_utc() + time::Duration::days(7),
        })
        .unwrap(),
    )
}
