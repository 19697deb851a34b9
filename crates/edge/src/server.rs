//! The TLS listener: accepts connections, verifies client certificates against the internal CA
//! (optional at the TLS layer, because pairing happens before an agent has one; required by
//! every route but pairing), and serves HTTP/1.1 or HTTP/2 on each connection, within the
//! deadlines and caps of [`Admission`].
//!
//! Written on hyper directly rather than `axum::serve` because the handlers need the verified
//! peer certificate of their connection, which `axum::serve` does not expose.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::admission::{AddressTicket, Admission, AnonymousTicket, ConnectionActivity};
use crate::identity::{ClientIdentity, ConnectionInfo};
use crate::tenants::TenantCaches;

/// Requests at once on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 64;

/// Requests at once on one HTTP/2 connection without a client certificate (pairing handles a
/// few at a time anyway).
const ANONYMOUS_CONCURRENT_STREAMS: u32 = 8;

/// Bytes a connection without a client certificate may have buffered unread: HTTP/1.1's read
/// buffer, HTTP/2's connection and stream windows. Pairing bodies fit in it.
const ANONYMOUS_BUFFER_BYTES: u32 = 64 * 1024;

/// How long an idle connection asked to close (HTTP/2 GOAWAY) has before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("building the TLS configuration failed")]
    Rustls(#[from] rustls::Error),
    #[error("building the client certificate verifier failed")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// TLS 1.2+ with the ring provider; client certificates verified against `client_ca` when
/// presented (self-signed, expired and foreign ones fail the handshake).
pub fn tls_config(
    client_ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(client_ca.clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    // Agents speak HTTP/2 (one multiplexed connection); HTTP/1.1 stays for simple clients.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Open connections by the certificate they were opened with, so a revocation can close them.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    open: Mutex<HashMap<ClientIdentity, Vec<Weak<Notify>>>>,
}

impl ConnectionRegistry {
    fn register(&self, identity: &ClientIdentity) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut open = self.open.lock().expect("registry lock");
        open.entry(identity.clone())
            .or_default()
            .push(Arc::downgrade(&notify));
        notify
    }

    /// Identities with at least one open connection; forgets closed ones.
    fn identities(&self) -> Vec<ClientIdentity> {
        let mut open = self.open.lock().expect("registry lock");
        open.retain(|_, connections| {
            connections.retain(|connection| connection.strong_count() > 0);
            !connections.is_empty()
        });
        open.keys().cloned().collect()
    }

    fn close(&self, identity: &ClientIdentity) -> usize {
        let open = self.open.lock().expect("registry lock");
        let connections = open.get(identity).map_or(&[][..], Vec::as_slice);
        let mut closed = 0;
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.notify_one();
            closed += 1;
        }
        closed
    }
}

/// Every `interval`, re-checks the certificates of open connections and closes those no longer
/// allowed (source revoked or disabled, certificate revoked, tenant disabled).
pub async fn watch_revocations(
    registry: Arc<ConnectionRegistry>,
    caches: Arc<TenantCaches>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        for identity in registry.identities() {
            match caches.allowed(&identity).await {
                Ok(true) => {}
                Ok(false) => {
                    let closed = registry.close(&identity);
                    tracing::info!(tenant = %identity.tenant, source = %identity.source, closed,
                        "closed connections of a revoked certificate");
                }
                Err(error) => {
                    tracing::warn!(%error, "checking an open connection's certificate failed")
                }
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, then waits up to 10 s for open
/// requests to finish. The accept loop never waits for room: every connection is admitted or
/// closed at once (see [`Admission`]), so the listen backlog never fills behind idle sockets.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    registry: Arc<ConnectionRegistry>,
    admission: Arc<Admission>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = ConnectionShared {
        acceptor: TlsAcceptor::from(tls),
        router,
        registry,
        admission: admission.clone(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let activity = ConnectionActivity::new();
        let tickets = match admission.admit(peer.ip(), &activity) {
            Ok(tickets) => tickets,
            Err(refusal) => {
                metrics::counter!("tributary_edge_connections_refused_total", "reason" => refusal.as_str())
                    .increment(1);
                tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
                continue;
            }
        };
        connections.spawn(serve_connection(
            tcp,
            peer,
            shared.clone(),
            activity,
            tickets,
        ));
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("edge connections still open after 10 s; closing them");
    }
}

/// What every connection's task is given.
#[derive(Clone)]
struct ConnectionShared {
    acceptor: TlsAcceptor,
    router: axum::Router,
    registry: Arc<ConnectionRegistry>,
    admission: Arc<Admission>,
}

/// The answer to a request without a certificate that took longer than allowed.
fn request_timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "error": {
        "code": "request_timeout",
        "message": "the request did not complete in time",
    }});
    let mut response = (hyper::StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// One connection from accept to close: the handshake under its deadline, then HTTP/1.1 or
/// HTTP/2 until the client closes, it goes idle, its certificate is revoked or (anonymous
/// only) the pool needs its place.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: ConnectionShared,
    activity: Arc<ConnectionActivity>,
    (_address, anonymous): (AddressTicket, AnonymousTicket),
) {
    let ConnectionShared {
        acceptor,
        router,
        registry,
        admission,
    } = shared;
    let limits = admission.limits().clone();
    let _ = tcp.set_nodelay(true);
    let handshake_deadline = activity.opened() + limits.handshake_timeout;
    let handshake = tokio::time::timeout_at(handshake_deadline.into(), acceptor.accept(tcp));
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!("tributary_edge_connections_closed_total", "reason" => "handshake_timeout").increment(1);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = activity.shed() => {
            tracing::debug!(%peer, "connection closed while handshaking to make room");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(ClientIdentity::from_certificate);
    // A verified agent leaves the anonymous pool: from now on nothing can shed it.
    let (anonymous, _certified) = match &identity {
        Some(identity) => match admission.certify(anonymous, identity) {
            Ok(certified) => (None, Some(certified)),
            Err(refusal) => {
                metrics::counter!("tributary_edge_connections_refused_total", "reason" => refusal.as_str())
                    .increment(1);
                tracing::info!(%peer, tenant = %identity.tenant, source = %identity.source,
                    reason = refusal.as_str(), "certified connection refused");
                return;
            }
        },
        None => (Some(anonymous), None),
    };
    let revoked = identity
        .as_ref()
        .map(|identity| registry.register(identity));
    let info = ConnectionInfo { identity, peer };
    let requests = activity.clone();
    // Without a certificate a request (pairing) must be over quickly: a slow body cannot keep
    // its connection busy, and so unsheddable, for long.
    let request_timeout = anonymous.as_ref().map(|_| limits.anonymous_request_timeout);
    let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let in_flight = requests.begin_request();
        request.extensions_mut().insert(info.clone());
        let response = router.clone().oneshot(request);
        async move {
            let response = match request_timeout {
                Some(timeout) => match tokio::time::timeout(timeout, response).await {
                    Ok(response) => response,
                    Err(_) => Ok(request_timed_out()),
                },
                None => response.await,
            };
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Headers of every request on a kept-alive connection must arrive in time.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    // An HTTP/2 connection that stops answering pings is closed; idle ones are closed below.
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(limits.idle_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    if anonymous.is_some() {
        // What a connection buffers before its handler reads (HTTP/1.1's read buffer, HTTP/2's
        // flow-control window) is outside the body budget: without a certificate it is kept to
        // what pairing needs, so the anonymous pool's worst case is its size times 64 KiB.
        builder
            .http1()
            .max_buf_size(ANONYMOUS_BUFFER_BYTES as usize);
        builder
            .http2()
            .initial_connection_window_size(ANONYMOUS_BUFFER_BYTES)
            .initial_stream_window_size(ANONYMOUS_BUFFER_BYTES)
            .max_concurrent_streams(ANONYMOUS_CONCURRENT_STREAMS);
    }
    let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    let revoked = async {
        match revoked {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    };
    let mut revoked = std::pin::pin!(revoked);
    let shed = async {
        match &anonymous {
            Some(_) => activity.shed().await,
            None => std::future::pending().await,
        }
    };
    let mut shed = std::pin::pin!(shed);
    let first_request_deadline = activity.opened() + limits.first_request_timeout;
    // Set once the connection was asked to finish: then it gets this long to do so.
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(deadline) => deadline,
            None if !activity.has_had_request() => first_request_deadline,
            // Idle: closed at the idle deadline. Busy: looked at again in a while (the last
            // request to end moves the deadline), never in a loop on a deadline already past.
            None if activity.is_idle() => activity.last_active() + limits.idle_timeout,
            None => Instant::now() + limits.idle_timeout,
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                break;
            }
            _ = &mut revoked => {
                tracing::debug!(%peer, "connection closed: certificate no longer allowed");
                break;
            }
            _ = &mut shed => {
                tracing::debug!(%peer, "connection closed to make room");
                break;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if closing.is_some() {
                    tracing::debug!(%peer, "connection did not finish in time after going idle");
                    break;
                }
                if !activity.has_had_request() {
                    metrics::counter!("tributary_edge_connections_closed_total", "reason" => "first_request_timeout").increment(1);
                    tracing::debug!(%peer, "connection closed: no request in time");
                    break;
                }
                if activity.is_idle() && activity.last_active().elapsed() >= limits.idle_timeout {
                    metrics::counter!("tributary_edge_connections_closed_total", "reason" => "idle").increment(1);
                    tracing::debug!(%peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + IDLE_CLOSE_GRACE);
                }
            }
        }
    }
}
