//! The platform's one outbound HTTP client: every request to an address a tenant or an admin
//! chose goes through it — OpenID Connect discovery, keys and token endpoints, alert webhooks
//! ([`crate::alerting`]), and report delivery later. Nothing else in the platform opens an HTTP connection to
//! such an address (PRODUCT.md decision 9, docs/security.md).
//!
//! Whoever chooses the URL must not turn the server into a way into the platform's own network
//! (SSRF). So the client:
//!
//! - speaks `https` only, and plain `http` or a loopback address only under the development
//!   setting ([`OutboundPolicy::development`], `TRIBUTARY_DEV_ALLOW_LOOPBACK_HTTP`), and then
//!   only to a host the URL itself names as loopback;
//! - resolves the name itself, refuses it if *any* address is not publicly routable
//!   ([`is_internal`]: private, loopback, link-local, carrier-grade NAT, unique-local, and the
//!   IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96` and 6to4 `2002::/16` forms of those),
//!   and dials exactly the address it checked, so a second DNS answer cannot slip past;
//! - follows no redirect by itself; [`Outbound::send_following_redirects`] follows a few,
//!   checking every hop's URL and address again;
//! - bounds every request: one connection, [`TIMEOUT`] overall, [`MAX_RESPONSE_BYTES`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
/// The largest response body accepted.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// The most redirects [`Outbound::send_following_redirects`] follows.
pub const MAX_REDIRECTS: usize = 3;

/// Why an outbound request failed. Never carries a request or response body.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the address is not allowed: {0}")]
    Refused(&'static str),
    #[error("cannot resolve or connect to the host")]
    Connect(#[source] std::io::Error),
    #[error("TLS with the host failed")]
    Tls(#[source] std::io::Error),
    #[error("the HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the request could not be built")]
    Request(#[source] http::Error),
}

/// What the client may reach besides public `https` hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboundPolicy {
    /// Plain `http`, and loopback addresses, when the URL names a loopback host: for an IdP or
    /// a webhook receiver on the same machine during development and in the tests. Off in
    /// production (the default).
    pub allow_loopback_http: bool,
    /// Private networks ([`is_private_network`]: 10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7, in any form): for on-premise installs whose IdP or webhook receivers live
    /// there. Loopback, link-local (the cloud metadata service) and every other internal range
    /// stay refused. Off by default.
    pub allow_private_targets: bool,
}

impl OutboundPolicy {
    /// Public `https` hosts only.
    pub fn production() -> Self {
        Self::default()
    }

    /// Also plain `http` and loopback addresses, for hosts the URL names as loopback.
    pub fn development() -> Self {
        Self {
            allow_loopback_http: true,
            ..Self::default()
        }
    }

    /// Whether a URL with this scheme and host may be requested at all (its addresses are
    /// checked again when it is dialled).
    pub fn allows_url(&self, scheme: &str, host: &str) -> bool {
        let loopback = is_loopback_host(host);
        match scheme {
            "https" => !loopback || self.allow_loopback_http,
            "http" => loopback && self.allow_loopback_http,
            _ => false,
        }
    }
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    tls: tokio_rustls::TlsConnector,
    policy: OutboundPolicy,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Trusts the Mozilla root certificates (webpki-roots), as browsers do.
    pub fn new(policy: OutboundPolicy) -> Self {
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
            policy,
        }
    }

    pub fn policy(&self) -> OutboundPolicy {
        self.policy
    }

    /// Sends `request` and returns the response as it came (a redirect is returned, not
    /// followed), within [`TIMEOUT`] and [`MAX_RESPONSE_BYTES`].
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let tls = self.tls.clone();
        let policy = self.policy;
        // Its own task: the exchange's futures need not be `Sync`, the handle is.
        let exchange = tokio::spawn(async move {
            tokio::time::timeout(TIMEOUT, exchange(tls, policy, request))
                .await
                .unwrap_or(Err(OutboundError::Timeout))
        });
        exchange.await.unwrap_or(Err(OutboundError::Timeout))
    }

    /// A `GET` of `url` following up to [`MAX_REDIRECTS`] redirects, each hop's URL and
    /// resolved address checked as the first was (a redirect to an internal address is refused
    /// before anything connects to it).
    pub async fn send_following_redirects(
        &self,
        url: &str,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let mut url = url::Url::parse(url).map_err(|_| OutboundError::Refused("not a URL"))?;
        for _ in 0..=MAX_REDIRECTS {
            let request = http::Request::get(url.as_str())
                .body(Vec::new())
                .map_err(OutboundError::Request)?;
            let response = self.send(request).await?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or(OutboundError::Refused("a redirect without a location"))?;
            url = url
                .join(location)
                .map_err(|_| OutboundError::Refused("a redirect to something not a URL"))?;
        }
        Err(OutboundError::TooManyRedirects)
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Outbound {
    type Error = OutboundError;
    type Future = Pin<
        Box<dyn Future<Output = Result<http::Response<Vec<u8>>, OutboundError>> + Send + Sync + 'c>,
    >;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// True for a host the URL itself names as loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|addr| embedded_ipv4(addr).map_or(addr.is_loopback(), |v4| v4.is_loopback()))
}

/// The IPv4 address an IPv6 address stands for, in the forms that reach an IPv4 host:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` (RFC
/// 6052) and 6to4 `2002:aabb:ccdd::/48` (RFC 3056).
fn embedded_ipv4(addr: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = addr else {
        return None;
    };
    let segments = v6.segments();
    let octets = v6.octets();
    let last_four = || Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(last_four());
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last_four());
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// Addresses the client never dials for a URL that does not name loopback: anything not
/// publicly routable, in IPv4 or in any IPv6 form that reaches an IPv4 address.
pub fn is_internal(addr: IpAddr) -> bool {
    if let Some(v4) = embedded_ipv4(addr) {
        return is_internal_v4(v4);
    }
    match addr {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

/// A private network an on-premise install may allow ([`OutboundPolicy::allow_private_targets`]):
/// RFC 1918, carrier-grade NAT and unique-local IPv6, in any form that reaches them. Never
/// loopback or link-local.
pub fn is_private_network(addr: IpAddr) -> bool {
    let v4 = embedded_ipv4(addr).or(match addr {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    match (v4, addr) {
        (Some(v4), _) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        (None, IpAddr::V6(v6)) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        (None, IpAddr::V4(_)) => false,
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
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
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

fn is_internal_v6(v6: Ipv6Addr) -> bool {
    let segments = v6.segments();
    let first = segments[0];
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || (segments[0] == 0x64 && segments[1] == 0xff9b) // NAT64, local use (64:ff9b:1::/48)
        || (segments[0] == 0x2001 && segments[1] == 0) // Teredo: an IPv4 host behind it
        || (segments[0] == 0x2001 && segments[1] == 0xdb8) // documentation
        || segments[..4] == [0x100, 0, 0, 0] // discard-only
}

/// The address to dial for `host:port`: every resolved address must be acceptable.
async fn resolve(
    policy: OutboundPolicy,
    host: &str,
    port: u16,
) -> Result<SocketAddr, OutboundError> {
    let loopback_named = is_loopback_host(host);
    if loopback_named && !policy.allow_loopback_http {
        return Err(OutboundError::Refused(
            "a loopback host (allowed only under the development setting)",
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(OutboundError::Connect)?
        .collect();
    let acceptable = |addr: &SocketAddr| {
        if loopback_named {
            embedded_ipv4(addr.ip()).map_or(addr.ip().is_loopback(), |v4| v4.is_loopback())
        } else {
            !is_internal(addr.ip())
                || (policy.allow_private_targets && is_private_network(addr.ip()))
        }
    };
    if addrs.is_empty() || !addrs.iter().all(acceptable) {
        return Err(OutboundError::Refused(
            "the host resolves to an internal address",
        ));
    }
    Ok(addrs[0])
}

async fn exchange(
    tls: tokio_rustls::TlsConnector,
    policy: OutboundPolicy,
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, OutboundError> {
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or(OutboundError::Refused("the URL has no host"))?
        .to_owned();
    if uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err(OutboundError::Refused("credentials in the URL"));
    }
    let scheme = uri.scheme_str().unwrap_or_default();
    if !policy.allows_url(scheme, &host) {
        return Err(OutboundError::Refused(
            "only https (plain http and loopback only under the development setting)",
        ));
    }
    let https = scheme == "https";
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = resolve(policy, &host, port).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(OutboundError::Connect)?;

    let (mut parts, body) = request.into_parts();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()
        .map_err(|error: http::uri::InvalidUri| OutboundError::Request(error.into()))?;
    let authority = uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .unwrap_or(host.clone());
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority)
            .map_err(|error| OutboundError::Request(error.into()))?,
    );
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));

    let response = if https {
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|_| OutboundError::Refused("the host is not a valid TLS server name"))?;
        let stream = tls.connect(name, tcp).await.map_err(OutboundError::Tls)?;
        send_on(TokioIo::new(stream), request).await?
    } else {
        send_on(TokioIo::new(tcp), request).await?
    };
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(error) => OutboundError::Http(*error),
            Err(_) => OutboundError::TooLarge,
        })?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body.to_vec()))
}

async fn send_on<T>(
    io: T,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, OutboundError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(OutboundError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "outbound connection ended with an error");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(OutboundError::Http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(text: &str) -> bool {
        is_internal(text.parse().unwrap())
    }

    #[test]
    fn the_on_premise_setting_opens_private_networks_only() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private_network(private.parse().unwrap()), "{private}");
        }
        for never in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "8.8.8.8",
        ] {
            assert!(!is_private_network(never.parse().unwrap()), "{never}");
        }
        assert!(!OutboundPolicy::production().allow_private_targets);
        assert!(!OutboundPolicy::development().allow_private_targets);
    }

    #[test]
    fn every_form_of_an_internal_address_is_internal() {
        for address in [
            // IPv4: loopback, private, link-local (the metadata service), CGNAT, this network,
            // broadcast, multicast, reserved.
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            // IPv6 itself: loopback, unspecified, unique-local, link-local, multicast.
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            // IPv4-mapped and IPv4-compatible forms.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            // NAT64 (64:ff9b::/96) of internal IPv4, and the local-use NAT64 prefix.
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            // 6to4 (2002::/16) of internal IPv4.
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
            // Teredo and documentation.
            "2001:0:4136:e378::1",
            "2001:db8::1",
        ] {
            assert!(internal(address), "{address} counts as internal");
        }
        for address in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!internal(address), "{address} is public");
        }
    }

    #[test]
    fn loopback_names_and_urls_need_the_development_setting() {
        for host in ["localhost", "127.0.0.1", "[::1]", "::ffff:127.0.0.1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        assert!(!is_loopback_host("idp.example.com"));
        let production = OutboundPolicy::production();
        let development = OutboundPolicy::development();
        assert!(production.allows_url("https", "idp.example.com"));
        for (scheme, host) in [
            ("http", "idp.example.com"),
            ("http", "127.0.0.1"),
            ("https", "127.0.0.1"),
            ("https", "localhost"),
            ("ftp", "idp.example.com"),
        ] {
            assert!(!production.allows_url(scheme, host), "{scheme}://{host}");
        }
        assert!(development.allows_url("http", "127.0.0.1"));
        assert!(development.allows_url("https", "localhost"));
        assert!(!development.allows_url("http", "idp.example.com"));
        assert!(!development.allows_url("gopher", "127.0.0.1"));
    }

    /// A one-shot HTTP server on loopback answering every request with `response`.
    async fn answering(response: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn redirects_are_checked_again_at_every_hop() {
        let client = Outbound::new(OutboundPolicy::development());
        for target in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::1]/",
            "gopher://127.0.0.1/",
        ] {
            let response: &'static str = Box::leak(
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                )
                .into_boxed_str(),
            );
            let start = answering(response).await;
            let error = client.send_following_redirects(&start).await.unwrap_err();
            assert!(
                matches!(error, OutboundError::Refused(_)),
                "{target}: {error}"
            );
        }
        // Without the development setting, loopback itself is refused before connecting.
        let start = answering("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
        let production = Outbound::new(OutboundPolicy::production());
        let error = production
            .send_following_redirects(&start)
            .await
            .unwrap_err();
        assert!(matches!(error, OutboundError::Refused(_)), "{error}");
        assert_eq!(
            client
                .send_following_redirects(&start)
                .await
                .unwrap()
                .status(),
            204
        );
    }
}
