//! Talking to the edge: connections (TCP, TLS, then HTTP/2 when the edge offers it by ALPN,
//! HTTP/1.1 with keep-alive otherwise) with bounded timeouts, a small pool of idle connections,
//! and the API's calls: pairing, renewal, `whoami`, ingest, status.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use domain::{SourceId, TenantId};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, header};
use hyper_util::rt::TokioIo;
use protocol::{
    BatchResponse, CertificateResponse, Encoding, EventBatch, PairRequest, RenewRequest,
};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::credentials::new_key_and_request;
use crate::tls::{self, ClientIdentity};
use crate::{ClientError, Credentials, EdgeUrl, PairError, SendError, Stage, StatusError};

/// The largest answer read from the edge. A batch response has one small entry per event; this
/// leaves room for the protocol's largest batches many times over.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Timeouts and pooling.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// To open the TCP connection (name resolution included).
    pub connect_timeout: Duration,
    /// To complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// From sending a request to having read the whole answer. The edge answers a batch once
    /// its events are durable on the bus, so this covers a publish under load.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept for reuse (one per request in flight at once is enough).
    pub max_idle_connections: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_idle_connections: 8,
        }
    }
}

/// How the very first pairing connection decides to trust the edge, before the agent has the
/// platform's CA.
#[derive(Debug, Clone, Copy)]
pub enum ServerTrust<'a> {
    /// The platform's CA certificate (PEM), given by the operator: the safe choice.
    Ca(&'a str),
    /// Trust on first use, an explicit opt-in: the pairing connection accepts whatever
    /// certificate the server presents. The CA the edge returns is pinned only if it issued the
    /// certificate that connection saw; every later connection verifies against it. Someone able
    /// to intercept that one connection could pair the agent with themselves (they would also
    /// need the one-time token, which the agent sends them), so use it only on a network path
    /// you trust.
    TrustOnFirstUse,
}

/// Who the edge says this client is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Whoami {
    pub tenant_id: TenantId,
    pub source_id: SourceId,
    /// The protocol major versions the edge speaks.
    #[serde(default)]
    pub protocol_versions: Vec<u16>,
}

/// A batch encoded and compressed once, ready to be sent (and resent) as is.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    body: Bytes,
    encoding: Encoding,
    event_count: usize,
}

impl EncodedBatch {
    pub fn new(batch: &EventBatch, encoding: Encoding) -> Result<Self, protocol::EncodeError> {
        Ok(Self {
            body: Bytes::from(protocol::encode_batch(batch, encoding)?),
            encoding,
            event_count: batch.events.len(),
        })
    }

    /// A batch already serialised as JSON (the body of `POST /v1/events` before compression)
    /// holding `event_count` events, compressed with `encoding`.
    pub fn from_json(
        json: Vec<u8>,
        event_count: usize,
        encoding: Encoding,
    ) -> Result<Self, protocol::EncodeError> {
        Ok(Self {
            body: Bytes::from(protocol::compress(json, encoding)?),
            encoding,
            event_count,
        })
    }

    pub fn event_count(&self) -> usize {
        self.event_count
    }

    /// The size of the body as sent (compressed).
    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }
}

/// A client of one edge with one source's credentials. Cheap to clone (clones share the
/// connection pool); concurrent requests each use their own connection.
#[derive(Clone)]
pub struct EdgeClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    credentials: Credentials,
}

impl fmt::Debug for EdgeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeClient")
            .field("url", &self.inner.transport.url)
            .field("tenant_id", &self.inner.credentials.tenant_id)
            .field("source_id", &self.inner.credentials.source_id)
            .finish_non_exhaustive()
    }
}

impl EdgeClient {
    /// A client of the edge at `edge_url` (`https://host:port`), presenting `credentials`'
    /// certificate and trusting only their CA. Connects lazily, on the first request.
    pub fn new(edge_url: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        Self::with_options(edge_url, credentials, ClientOptions::default())
    }

    pub fn with_options(
        edge_url: &str,
        credentials: &Credentials,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let url: EdgeUrl = edge_url.parse()?;
        let tls = tls::pinned_config(
            &credentials.ca_pem,
            Some(ClientIdentity {
                certificate_pem: &credentials.certificate_pem,
                key_pem: &credentials.key_pem,
            }),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                transport: Transport::new(url, tls, options)?,
                credentials: credentials.clone(),
            }),
        })
    }

    pub fn url(&self) -> &EdgeUrl {
        &self.inner.transport.url
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    /// Encodes `batch` and sends it to `POST /v1/events`. See [`EdgeClient::send_encoded`].
    pub async fn send(
        &self,
        batch: &EventBatch,
        encoding: Encoding,
    ) -> Result<BatchResponse, SendError> {
        let encoded = EncodedBatch::new(batch, encoding).map_err(SendError::Encode)?;
        self.send_encoded(&encoded).await
    }

    /// Sends an encoded batch. `Ok` carries one result per event, in the batch's order: each
    /// `accepted` or `duplicate` (both mean stored) or `rejected` (resending it unchanged gets the
    /// same answer). That includes the edge's 422, which it answers when it rejected every event.
    /// Any other answer is an `Err`: the batch was not taken, and [`SendError::is_retryable`] says
    /// whether to send it again.
    pub async fn send_encoded(&self, batch: &EncodedBatch) -> Result<BatchResponse, SendError> {
        let request = RequestParts {
            method: Method::POST,
            path: "/v1/events",
            content_encoding: batch.encoding.header_value(),
            body: batch.body.clone(),
        };
        let response = self.inner.transport.request(&request).await?;
        match response.status {
            200 | 422 => match serde_json::from_slice::<BatchResponse>(&response.body) {
                Ok(answer) if answer.results.len() == batch.event_count => Ok(answer),
                Ok(_) => Err(SendError::InvalidResponse(
                    "the answer does not have one result per event",
                )),
                Err(_) if response.status == 422 => Err(response.status_error()),
                Err(_) => Err(SendError::InvalidResponse(
                    "the answer is not a batch response",
                )),
            },
            _ => Err(response.status_error()),
        }
    }

    /// `GET /v1/whoami`: the tenant and source the edge reads from this client's certificate.
    pub async fn whoami(&self) -> Result<Whoami, SendError> {
        let request = RequestParts {
            method: Method::GET,
            path: "/v1/whoami",
            content_encoding: None,
            body: Bytes::new(),
        };
        let response = self.inner.transport.request(&request).await?;
        if response.status != 200 {
            return Err(response.status_error());
        }
        serde_json::from_slice(&response.body)
            .map_err(|_| SendError::InvalidResponse("the answer is not a whoami response"))
    }

    /// `POST /v1/status`: the agent's status heartbeat.
    /// `POST /v1/status`: the heartbeat, and what the edge asks of the agent in return (a
    /// resync), if anything.
    pub async fn send_status(
        &self,
        status: &protocol::AgentStatus,
    ) -> Result<protocol::StatusAnswer, SendError> {
        let body = serde_json::to_vec(status).expect("a status serialises");
        let request = RequestParts::json("/v1/status", body);
        let response = self.inner.transport.request(&request).await?;
        match response.status {
            204 => Ok(protocol::StatusAnswer::default()),
            // An answer this agent cannot read asks nothing it knows of.
            200 => Ok(serde_json::from_slice(&response.body).unwrap_or_default()),
            _ => Err(response.status_error()),
        }
    }

    /// `POST /v1/check`: what `check` found about the source, for the connector wizard.
    pub async fn send_check(&self, report: &protocol::CheckReport) -> Result<(), SendError> {
        let body = serde_json::to_vec(report).expect("a check report serialises");
        let request = RequestParts::json("/v1/check", body);
        let response = self.inner.transport.request(&request).await?;
        if response.status != 204 {
            return Err(response.status_error());
        }
        Ok(())
    }

    /// `POST /v1/renew`: a new key and a new certificate for the same source, over a connection
    /// authenticated with the current certificate. Save the result, then make a new client
    /// with it; this client keeps presenting the old certificate.
    pub async fn renew(&self) -> Result<Credentials, PairError> {
        let (key, csr_pem) = new_key_and_request().map_err(PairError::Key)?;
        let body = serde_json::to_vec(&RenewRequest { csr_pem }).expect("request serialises");
        let request = RequestParts::json("/v1/renew", body);
        let response = self.inner.transport.request(&request).await?;
        if response.status != 200 {
            return Err(response.status_error().into());
        }
        let answer: CertificateResponse = serde_json::from_slice(&response.body).map_err(|_| {
            PairError::InvalidCertificate("the answer is not a certificate response")
        })?;
        let current = &self.inner.credentials;
        if (answer.tenant_id, answer.source_id) != (current.tenant_id, current.source_id) {
            return Err(PairError::InvalidCertificate(
                "the renewed certificate names another tenant or source",
            ));
        }
        let renewed = credentials_from(answer, &key)?;
        tracing::info!(tenant = %renewed.tenant_id, source = %renewed.source_id,
            not_after = %renewed.not_after, "client certificate renewed");
        Ok(renewed)
    }
}

/// Renews `credentials` with the edge at `edge_url`: [`EdgeClient::renew`] on a client made for
/// the call.
pub async fn renew(edge_url: &str, credentials: &Credentials) -> Result<Credentials, PairError> {
    EdgeClient::new(edge_url, credentials)?.renew().await
}

/// Asks the edge at `edge_url` whom `credentials` identify: [`EdgeClient::whoami`] on a client
/// made for the call.
pub async fn whoami(edge_url: &str, credentials: &Credentials) -> Result<Whoami, PairError> {
    Ok(EdgeClient::new(edge_url, credentials)?.whoami().await?)
}

/// Pairs with the edge at `edge_url` using a one-time pairing `token`, with default options.
/// See [`pair_with`].
pub async fn pair(
    edge_url: &str,
    trust: ServerTrust<'_>,
    token: &str,
) -> Result<Credentials, PairError> {
    pair_with(edge_url, trust, token, &ClientOptions::default()).await
}

/// Generates a key (ECDSA P-256), sends a certificate signing request with the token to
/// `POST /v1/pair`, and returns the credentials: the issued certificate, the key and the CA to
/// pin. The CA is accepted only if it issued the certificate the edge presented on this very
/// connection. A token is single use: if the connection breaks after the edge redeemed it,
/// pairing again with it is refused and the operator issues a new one.
pub async fn pair_with(
    edge_url: &str,
    trust: ServerTrust<'_>,
    token: &str,
    options: &ClientOptions,
) -> Result<Credentials, PairError> {
    let url: EdgeUrl = edge_url.parse()?;
    let tls = match trust {
        ServerTrust::Ca(ca_pem) => tls::pinned_config(ca_pem, None)?,
        ServerTrust::TrustOnFirstUse => {
            tracing::warn!(edge = %url, "pairing with trust on first use of the edge's certificate");
            tls::trust_on_first_use_config()?
        }
    };
    let transport = Transport::new(url, tls, options.clone())?;
    let (key, csr_pem) = new_key_and_request().map_err(PairError::Key)?;
    let body = serde_json::to_vec(&PairRequest {
        token: token.to_owned(),
        csr_pem,
    })
    .expect("request serialises");
    let connection = transport.connect().await?;
    let presented = connection.peer_chain;
    let response = transport
        .exchange(connection.sender, &RequestParts::json("/v1/pair", body))
        .await?;
    if response.status != 200 {
        return Err(response.status_error().into());
    }
    let answer: CertificateResponse = serde_json::from_slice(&response.body)
        .map_err(|_| PairError::InvalidCertificate("the answer is not a certificate response"))?;
    tls::check_chain(
        &answer.ca_certificate_pem,
        &presented,
        &transport.server_name,
    )
    .map_err(PairError::CaMismatch)?;
    let credentials = credentials_from(answer, &key)?;
    tracing::info!(tenant = %credentials.tenant_id, source = %credentials.source_id,
        not_after = %credentials.not_after, "paired with the edge");
    Ok(credentials)
}

/// Credentials from a certificate response and the key its request was made with; checks that
/// they make a usable TLS identity (the certificate is for this key).
fn credentials_from(
    answer: CertificateResponse,
    key: &rcgen::KeyPair,
) -> Result<Credentials, PairError> {
    let credentials = Credentials {
        tenant_id: answer.tenant_id,
        source_id: answer.source_id,
        certificate_pem: answer.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: answer.ca_certificate_pem,
        not_after: answer.not_after,
    };
    tls::pinned_config(
        &credentials.ca_pem,
        Some(ClientIdentity {
            certificate_pem: &credentials.certificate_pem,
            key_pem: &credentials.key_pem,
        }),
    )
    .map_err(|_| {
        PairError::InvalidCertificate("the certificate is unreadable or not for this client's key")
    })?;
    Ok(credentials)
}

/// The request half of one HTTP/1.1 connection.
/// One connection's request sender, by the HTTP version ALPN chose.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    async fn send_request(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }
}

/// What a request is made of; rebuilt for each attempt (a request is consumed by sending).
struct RequestParts {
    method: Method,
    path: &'static str,
    content_encoding: Option<&'static str>,
    body: Bytes,
}

impl RequestParts {
    fn json(path: &'static str, body: Vec<u8>) -> Self {
        Self {
            method: Method::POST,
            path,
            content_encoding: None,
            body: Bytes::from(body),
        }
    }

    fn build(&self, url: &EdgeUrl) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(header::HOST, url.authority())
            .header(
                protocol::PROTOCOL_HEADER,
                protocol::CURRENT_VERSION.to_string(),
            );
        if self.method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(encoding) = self.content_encoding {
            request = request.header(header::CONTENT_ENCODING, encoding);
        }
        request
            .body(Full::new(self.body.clone()))
            .expect("a request of fixed, valid parts")
    }
}

/// An answer, read whole.
struct RawResponse {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl RawResponse {
    /// The error an answer other than success stands for, with the edge's error body read out.
    fn status_error(&self) -> SendError {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let (code, message) = match serde_json::from_slice::<Body>(&self.body) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (String::new(), String::new()),
        };
        let retry_after = self
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        SendError::Status(StatusError {
            status: self.status,
            code,
            message,
            retry_after,
        })
    }
}

/// A fresh connection, and the certificate chain the edge presented on it.
struct Connection {
    sender: Sender,
    peer_chain: Vec<CertificateDer<'static>>,
}

/// Connections to one edge with one TLS configuration, and the idle ones kept for reuse.
struct Transport {
    url: EdgeUrl,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    options: ClientOptions,
    idle: Mutex<Vec<Sender>>,
}

impl Transport {
    fn new(
        url: EdgeUrl,
        tls: Arc<rustls::ClientConfig>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            server_name: url.server_name()?,
            url,
            tls,
            options,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let connect = TcpStream::connect((self.url.host(), self.url.port()));
        let tcp = match tokio::time::timeout(self.options.connect_timeout, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => return Err(SendError::Connect(error)),
            Err(_) => {
                return Err(SendError::Timeout {
                    stage: Stage::Connect,
                    timeout: self.options.connect_timeout,
                });
            }
        };
        let _ = tcp.set_nodelay(true);
        let handshake = TlsConnector::from(self.tls.clone()).connect(self.server_name.clone(), tcp);
        let tls = match tokio::time::timeout(self.options.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return Err(SendError::from_handshake(error)),
            Err(_) => {
                return Err(SendError::Timeout {
                    stage: Stage::Handshake,
                    timeout: self.options.handshake_timeout,
                });
            }
        };
        let peer_chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        tracing::info!(
            edge = %self.url.authority(),
            protocol = if http2 { "HTTP/2" } else { "HTTP/1.1" },
            "connected to the edge"
        );
        // Each connection task ends when the edge closes it or the last sender is dropped.
        let sender = if http2 {
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive_interval(Duration::from_secs(30))
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(SendError::from_connection)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "edge connection ended with an error");
                }
            });
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(SendError::from_connection)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "edge connection ended with an error");
                }
            });
            Sender::Http1(sender)
        };
        Ok(Connection { sender, peer_chain })
    }

    /// One request, on an idle kept-alive connection if there is one. When that connection
    /// turns out to be dead (the edge closed it, or went away and came back, since it was last
    /// used), the request is made once more on a new connection: a stale connection says nothing
    /// about the edge now, and every request of this API is safe to repeat.
    async fn request(&self, request: &RequestParts) -> Result<RawResponse, SendError> {
        if let Some(sender) = self.take_idle() {
            match self.exchange(sender, request).await {
                Err(SendError::Connection(error)) => {
                    tracing::debug!(%error, "a kept-alive connection to the edge was dead; reconnecting");
                }
                other => return other,
            }
        }
        let connection = self.connect().await?;
        self.exchange(connection.sender, request).await
    }

    /// Sends `request` on `sender` and reads the whole answer, within the request timeout; keeps
    /// the connection for reuse afterwards if it is still open.
    async fn exchange(
        &self,
        mut sender: Sender,
        request: &RequestParts,
    ) -> Result<RawResponse, SendError> {
        let timeout = self.options.request_timeout;
        let exchanged = tokio::time::timeout(timeout, async {
            sender.ready().await.map_err(SendError::from_connection)?;
            let response = sender
                .send_request(request.build(&self.url))
                .await
                .map_err(SendError::from_connection)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| match error.downcast::<hyper::Error>() {
                    Ok(error) => SendError::from_connection(*error),
                    Err(_) => SendError::InvalidResponse("the answer is too large"),
                })?
                .to_bytes();
            Ok(RawResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        })
        .await;
        let response = match exchanged {
            Ok(result) => result?,
            Err(_) => {
                return Err(SendError::Timeout {
                    stage: Stage::Request,
                    timeout,
                });
            }
        };
        let closing = response
            .headers
            .get(header::CONNECTION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        if !closing {
            self.put_idle(sender);
        }
        Ok(response)
    }

    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.options.max_idle_connections {
            idle.push(sender);
        }
    }
}
