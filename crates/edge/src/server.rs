//! The TLS listener: accepts connections, verifies client certificates against the internal CA
//! (optional at the TLS layer, because pairing happens before an agent has one; required by
//! every route but pairing), and serves HTTP/1.1 on each connection.
//!
//! Written on hyper directly rather than `axum::serve` because the handlers need the verified
//! peer certificate of their connection, which `axum::serve` does not expose.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

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

use crate::identity::{ClientIdentity, ConnectionInfo};
use crate::tenants::TenantCaches;

/// How long a client has to send a request's headers, including while a kept-alive connection
/// sits idle between requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections open at once.
const MAX_CONNECTIONS: usize = 4096;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
/// requests to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    registry: Arc<ConnectionRegistry>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    // Open connections are bounded: past the cap, new ones wait in the listen backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
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
        let acceptor = acceptor.clone();
        let router = router.clone();
        let registry = registry.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(ClientIdentity::from_certificate);
            let revoked = identity.as_ref().map(|identity| registry.register(identity));
            let info = ConnectionInfo { identity, peer };
            let service = tower::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(info.clone());
                router.clone().oneshot(request)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Headers (of the first request and of every next one on a kept-alive connection)
            // must arrive in time: idle or slow connections do not pile up.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            // An HTTP/2 connection that stops answering pings is closed.
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(HEADER_READ_TIMEOUT))
                .keep_alive_timeout(HEADER_READ_TIMEOUT)
                .max_concurrent_streams(64);
            let connection =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            let revoked = async {
                match revoked {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
                _ = revoked => tracing::debug!(%peer, "connection closed: certificate no longer allowed"),
            }
        });
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("edge connections still open after 10 s; closing them");
    }
}
