//! The ingestion gateway: TLS with client certificates from the internal CA, pairing of agents,
//! validation of their batches, PII masking, and publishing to the bus. An acknowledgement means
//! the accepted events are durable on the bus.
//!
//! Architecture invariant: tenant and source come from the client certificate, never from the
//! payload; nothing is stored before masking.

mod admission;
mod body_budget;
pub mod ca;
pub mod config;
mod identity;
mod routes;
pub mod secret_box;
mod server;
mod tenants;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bus::Bus;
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::SecretString;
use store::ServiceDb;
use tokio::net::TcpListener;

pub use ca::CertificateAuthority;
pub use config::EdgeConfig;
pub use identity::ClientIdentity;
pub use secret_box::SecretBox;

/// What the edge's handlers share.
pub struct EdgeState<B> {
    database: ServiceDb,
    bus: B,
    ca: Arc<CertificateAuthority>,
    config: EdgeConfig,
    caches: Arc<tenants::TenantCaches>,
    limiter: DefaultKeyedRateLimiter<domain::TenantId>,
    /// Batches being read and decoded at once: each can take several times its 8 MiB limit in
    /// memory, so their number is bounded rather than their size alone.
    decoding: tokio::sync::Semaphore,
    /// Pairing requests handled at once.
    pairing: tokio::sync::Semaphore,
    /// Request bodies held in memory at once.
    bodies: body_budget::BodyBudget,
    /// The consumers' lag, when backpressure is on ([`Edge::watch_lag`]).
    lag: std::sync::OnceLock<bus::lag::LagWatch>,
}

impl<B: Bus> EdgeState<B> {
    /// The `Retry-After` seconds to refuse a batch of `tenant` with, when a watched consumer
    /// group is more than [`EdgeConfig::max_consumer_lag`] behind on the tenant's partition.
    fn consumers_behind(&self, tenant: domain::TenantId) -> Option<u64> {
        let lag = self.lag.get()?;
        let partition = bus::partition_of(tenant, self.bus.partitions());
        (lag.behind(partition) > self.config.max_consumer_lag)
            .then(|| self.config.backpressure_retry_after.as_secs().max(1))
    }
}

impl<B> std::fmt::Debug for EdgeState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Tls(#[from] server::TlsSetupError),
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
}

/// How many batches the edge decodes at once: twice the cores, at least 2, at most 16.
fn config_decoders() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |cores| cores.get() * 2)
        .clamp(2, 16)
}

/// A bound, ready edge: call [`Edge::run`] to serve.
pub struct Edge<B> {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<EdgeState<B>>,
    registry: Arc<server::ConnectionRegistry>,
    admission: Arc<admission::Admission>,
}

impl<B> std::fmt::Debug for Edge<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl<B: Bus + 'static> Edge<B> {
    /// Loads (or on first start creates) the CA, issues the server certificate and binds.
    pub async fn bind(
        config: EdgeConfig,
        database: ServiceDb,
        bus: B,
        master_secret: &SecretString,
    ) -> Result<Self, EdgeError> {
        let ca = CertificateAuthority::load_or_create(
            &database,
            &SecretBox::new(master_secret, "ca-key"),
        )
        .await?;
        let (chain, key) = ca.issue_server_certificate(&config.hostnames)?;
        let tls = server::tls_config(ca.certificate_der(), chain, key)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| EdgeError::Listen(config.listen, error))?;
        let caches = Arc::new(tenants::TenantCaches::new(
            database.clone(),
            SecretBox::new(master_secret, "tenant-masking-key"),
            config.cache_ttl,
        ));
        let quota = Quota::per_second(
            std::num::NonZeroU32::new(config.tenant_events_per_second.max(1)).expect("nonzero"),
        )
        .allow_burst(
            std::num::NonZeroU32::new(config.tenant_burst_events.max(1)).expect("nonzero"),
        );
        let admission = admission::Admission::new(config.connections.clone());
        let bodies = body_budget::BodyBudget::new(&config.body_budget);
        Ok(Self {
            listener,
            admission,
            tls,
            state: Arc::new(EdgeState {
                database,
                bus,
                ca: Arc::new(ca),
                config,
                caches,
                limiter: DefaultKeyedRateLimiter::keyed(quota),
                decoding: tokio::sync::Semaphore::new(config_decoders()),
                pairing: tokio::sync::Semaphore::new(4),
                bodies,
                lag: std::sync::OnceLock::new(),
            }),
            registry: Arc::new(server::ConnectionRegistry::default()),
        })
    }

    /// Turns backpressure on: batches of a tenant whose partition a group of `watch` is more
    /// than [`EdgeConfig::max_consumer_lag`] behind on are answered `429 consumers_behind` with
    /// `Retry-After`. The watch must cover this edge's bus (same partition count).
    pub fn watch_lag(self, watch: bus::lag::LagWatch) -> Self {
        let _ = self.state.lag.set(watch);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The CA certificate agents must trust, PEM.
    pub fn ca_certificate_pem(&self) -> &str {
        self.state.ca.certificate_pem()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut watcher_stop = stop_rx.clone();
        let watcher = tokio::spawn(server::watch_revocations(
            self.registry.clone(),
            self.state.caches.clone(),
            self.state.config.cache_ttl,
            async move {
                let _ = watcher_stop.changed().await;
            },
        ));
        let router = routes::router(self.state.clone());
        let serving = server::serve(
            self.listener,
            self.tls,
            router,
            self.registry,
            self.admission,
            async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            },
        );
        serving.await;
        let _ = watcher.await;
        drop(stop_rx);
    }
}
