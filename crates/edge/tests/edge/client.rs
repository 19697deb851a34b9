//! A minimal HTTPS client for the tests: the real TLS stack, an optional client certificate,
//! one connection per client (HTTP/1.1 keep-alive), so a test can hold a connection open.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Client credentials: a certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct Identity {
    pub certificate_pem: String,
    pub key_pem: String,
}

pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    /// The answer to the `GET /v1/whoami` made right after the handshake.
    pub whoami: Option<Response>,
}

/// A TLS client trusting `ca_pem`, presenting `identity` when given, offering `alpn`.
pub fn tls_connector(ca_pem: &str, identity: Option<&Identity>, alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

impl Client {
    /// Connects and completes the TLS handshake; Err when the server refuses it.
    pub async fn connect(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        identity: Option<&Identity>,
    ) -> Result<Self, String> {
        let connector = tls_connector(ca_pem, identity, &[]);
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|error| error.to_string())?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|error| error.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = Self {
            sender,
            whoami: None,
        };
        // TLS 1.3 reports a refused client certificate only on the first read: make one.
        let whoami = client
            .request("GET", "/v1/whoami", &[], Bytes::new())
            .await?;
        client.whoami = Some(whoami);
        Ok(client)
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, String> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).unwrap();
        self.sender
            .ready()
            .await
            .map_err(|error| error.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Response {
        self.request(
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("tributary-protocol", "1"),
            ],
            Bytes::from(serde_json::to_vec(body).unwrap()),
        )
        .await
        .expect("request")
    }

    /// Whether the server has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}
