//! The edge's settings.

use std::net::SocketAddr;

use time::Duration;

/// How the edge listens and what it allows.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Address of the TLS listener.
    pub listen: SocketAddr,
    /// DNS names and IP addresses the edge's server certificate is valid for.
    pub hostnames: Vec<String>,
    /// Lifetime of the client certificates issued to agents.
    pub client_certificate_lifetime: Duration,
    /// Limits on what an agent may send.
    pub limits: protocol::Limits,
    /// Sustained events per second accepted from one tenant, across all its sources.
    pub tenant_events_per_second: u32,
    /// How many events a tenant may send at once above the sustained rate.
    pub tenant_burst_events: u32,
    /// How long a decision about a certificate (revoked or not) or a tenant's masking policy
    /// may be reused: revocations and policy changes take effect within this.
    pub cache_ttl: std::time::Duration,
    /// How many connections, of whom, and for how long the edge holds open.
    pub connections: ConnectionLimits,
    /// Request bodies held in memory at once, across all connections.
    pub body_budget: BodyBudget,
    /// Backpressure: how many messages a watched consumer group may be behind on a partition
    /// before the edge refuses that partition's batches with 429 (only when a lag watch is
    /// given to the edge: `Edge::watch_lag`).
    pub max_consumer_lag: u64,
    /// The `Retry-After` of a batch refused for consumer lag.
    pub backpressure_retry_after: std::time::Duration,
}

/// Bounds on open connections, so that neither idle sockets nor clients without a certificate
/// can keep an agent out (docs/edge.md, "Connections and memory").
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: std::time::Duration,
    /// From accept to the headers of the first request.
    pub first_request_timeout: std::time::Duration,
    /// A connection (HTTP/1 or HTTP/2) with no request in flight for this long is closed;
    /// also how long HTTP/1 request headers may take to arrive.
    pub idle_timeout: std::time::Duration,
    /// A request on a connection without a client certificate (pairing), from its headers to
    /// its answer: it cannot keep its connection busy, and so out of reach of shedding, longer.
    pub anonymous_request_timeout: std::time::Duration,
    /// Connections without a verified client certificate: handshaking, waiting for their first
    /// request, or pairing. When full, the oldest one with no request in flight is closed to
    /// make room.
    pub max_anonymous_connections: usize,
    /// Connections with a verified client certificate; past it, new ones are closed after the
    /// handshake.
    pub max_certified_connections: usize,
    /// Connections open at once from one IPv4 address or IPv6 /64, of either kind.
    pub max_connections_per_address: usize,
    /// Connections open at once with one client certificate identity (one source).
    pub max_connections_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: std::time::Duration::from_secs(10),
            first_request_timeout: std::time::Duration::from_secs(15),
            idle_timeout: std::time::Duration::from_secs(60),
            anonymous_request_timeout: std::time::Duration::from_secs(10),
            max_anonymous_connections: 1024,
            max_certified_connections: 4096,
            max_connections_per_address: 256,
            max_connections_per_source: 64,
        }
    }
}

/// The global byte budget request bodies are read under: a request reserves its
/// `Content-Length` (or its route's body limit when it has none) before a byte of its body is
/// read, and gives it back when answered.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    /// Bytes of request bodies held at once, across all connections and tenants.
    pub total_bytes: usize,
    /// Bytes one tenant may hold at once (clients without a certificate count as one tenant),
    /// so that one tenant cannot take the whole budget.
    pub tenant_bytes: usize,
    /// How long a request waits for its reservation before it is refused with
    /// `503 temporarily_unavailable` and `Retry-After`.
    pub wait: std::time::Duration,
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self {
            total_bytes: 256 * 1024 * 1024,
            tenant_bytes: 128 * 1024 * 1024,
            wait: std::time::Duration::from_secs(2),
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let limits = protocol::Limits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
            client_certificate_lifetime: Duration::days(7),
            tenant_events_per_second: 50_000,
            tenant_burst_events: (limits.max_events as u32).saturating_mul(4),
            limits,
            cache_ttl: std::time::Duration::from_secs(1),
            connections: ConnectionLimits::default(),
            body_budget: BodyBudget::default(),
            // About 15 s of a busy partition at 30,000 events/s: enough to ride out a pause of
            // the consumers, bounded so a stalled one shows up as refusals, not as a log
            // growing without limit.
            max_consumer_lag: 500_000,
            backpressure_retry_after: std::time::Duration::from_secs(2),
        }
    }
}
