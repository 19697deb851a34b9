//! The HTTP client single sign-on talks to identity providers with (discovery, keys, the token
//! endpoint), on the hyper + rustls stack the platform already has: one connection per request,
//! an overall timeout, a response size limit, redirects never followed, and only `https` — or
//! plain `http` to a loopback address, for an IdP on the same machine.
//!
//! An admin chooses the issuer, so the server must not become a way to reach the platform's own
//! network: a name that resolves to a private, link-local or otherwise internal address is
//! refused at connect time (the address actually dialled is the one checked). Loopback is
//! allowed only when the URL names a loopback host itself.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use openidconnect::http;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body accepted (discovery documents and key sets are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a request to an IdP failed. Never carries a request or response body.
#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    #[error("the IdP address is not allowed: {0}")]
    Refused(&'static str),
    #[error("cannot resolve or connect to the IdP")]
    Connect(#[source] std::io::Error),
    #[error("TLS with the IdP failed")]
    Tls(#[source] std::io::Error),
    #[error("the HTTP exchange with the IdP failed")]
    Http(#[source] hyper::Error),
    #[error("the IdP's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the IdP did not answer within {TIMEOUT:?}")]
    Timeout,
    #[error("the request to the IdP could not be built")]
    Request(#[source] http::Error),
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct IdpHttpClient {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for IdpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdpHttpClient(..)")
    }
}

impl Default for IdpHttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl IdpHttpClient {
    /// Trusts the Mozilla root certificates (webpki-roots), as browsers do.
    pub fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Sends `request` and returns the response as it came (a redirect is returned, not
    /// followed), within [`TIMEOUT`] and [`MAX_RESPONSE_BYTES`].
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, IdpHttpError> {
        let tls = self.tls.clone();
        // Its own task: the exchange's futures need not be `Sync`, the handle is.
        let exchange = tokio::spawn(async move {
            tokio::time::timeout(TIMEOUT, exchange(tls, request))
                .await
                .unwrap_or(Err(IdpHttpError::Timeout))
        });
        exchange.await.unwrap_or(Err(IdpHttpError::Timeout))
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for IdpHttpClient {
    type Error = IdpHttpError;
    type Future = Pin<
        Box<dyn Future<Output = Result<http::Response<Vec<u8>>, IdpHttpError>> + Send + Sync + 'c>,
    >;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// True for a host the URL itself names as loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|addr| addr.is_loopback())
}

/// Addresses an IdP may not be reached at unless the URL names loopback itself: anything not
/// publicly routable.
fn is_internal(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// The address to dial for `host:port`: every resolved address must be acceptable.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, IdpHttpError> {
    let loopback_named = is_loopback_host(host);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(IdpHttpError::Connect)?
        .collect();
    let acceptable = |addr: &SocketAddr| {
        if loopback_named {
            addr.ip().is_loopback()
        } else {
            !is_internal(addr.ip())
        }
    };
    if addrs.is_empty() || !addrs.iter().all(acceptable) {
        return Err(IdpHttpError::Refused(
            "the host resolves to an internal address",
        ));
    }
    Ok(addrs[0])
}

async fn exchange(
    tls: tokio_rustls::TlsConnector,
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, IdpHttpError> {
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or(IdpHttpError::Refused("the URL has no host"))?
        .to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if is_loopback_host(&host) => false,
        _ => {
            return Err(IdpHttpError::Refused(
                "only https, or http to a loopback address",
            ));
        }
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = resolve(&host, port).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(IdpHttpError::Connect)?;

    let (mut parts, body) = request.into_parts();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()
        .map_err(|error: http::uri::InvalidUri| IdpHttpError::Request(error.into()))?;
    let authority = uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .unwrap_or(host.clone());
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority)
            .map_err(|error| IdpHttpError::Request(error.into()))?,
    );
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));

    let response = if https {
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|_| IdpHttpError::Refused("the host is not a valid TLS server name"))?;
        let stream = tls.connect(name, tcp).await.map_err(IdpHttpError::Tls)?;
        send_on(TokioIo::new(stream), request).await?
    } else {
        send_on(TokioIo::new(tcp), request).await?
    };
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(error) => IdpHttpError::Http(*error),
            Err(_) => IdpHttpError::TooLarge,
        })?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body.to_vec()))
}

async fn send_on<T>(
    io: T,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, IdpHttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(IdpHttpError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "IdP connection ended with an error");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(IdpHttpError::Http)
}
