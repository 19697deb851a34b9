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
        }
    }
}
