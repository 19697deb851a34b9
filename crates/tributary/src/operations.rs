//! Operational settings of `tributary up`: where `/metrics` is served (its own listener, and the
//! web listener only behind a token) and the edge's connection, time and memory limits. Each is
//! a key of the configuration file, a `TRIBUTARY_*` environment variable and a flag of `up`,
//! checked when the platform starts: a zero or absurd value is refused, naming the setting.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};

/// Where the metrics listener listens unless configured: loopback, never public.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// The flags of `tributary up` for these settings (each with its environment variable).
#[derive(Debug, Clone, Default, Args)]
pub struct OperationsArgs {
    /// Address of the metrics listener (`/metrics`, Prometheus text); port 0 picks a free port
    /// (the address is printed). [default: 127.0.0.1:9464]
    #[arg(long, env = "TRIBUTARY_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Also serve `/metrics` on the web listener, answered only to `Authorization: Bearer
    /// <token>`; at least 24 characters.
    #[arg(
        long,
        env = "TRIBUTARY_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Seconds from accept to the end of the edge's TLS handshake. [default: 10]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_HANDSHAKE_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub edge_handshake_timeout_secs: Option<u64>,
    /// Seconds from accept to the headers of a connection's first request. [default: 15]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_FIRST_REQUEST_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub edge_first_request_timeout_secs: Option<u64>,
    /// Seconds an edge connection may stay without a request in flight. [default: 60]
    #[arg(long, env = "TRIBUTARY_EDGE_IDLE_TIMEOUT_SECS", value_name = "SECONDS")]
    pub edge_idle_timeout_secs: Option<u64>,
    /// Seconds a request without a client certificate (pairing) may take. [default: 10]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_ANONYMOUS_REQUEST_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub edge_anonymous_request_timeout_secs: Option<u64>,
    /// Edge connections without a verified client certificate at once. [default: 1024]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_MAX_ANONYMOUS_CONNECTIONS",
        value_name = "N"
    )]
    pub edge_max_anonymous_connections: Option<u64>,
    /// Edge connections with a verified client certificate at once. [default: 4096]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_MAX_CERTIFIED_CONNECTIONS",
        value_name = "N"
    )]
    pub edge_max_certified_connections: Option<u64>,
    /// Edge connections at once from one IPv4 address or IPv6 /64. [default: 256]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N"
    )]
    pub edge_max_connections_per_address: Option<u64>,
    /// Edge connections at once with one source's certificate. [default: 64]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_MAX_CONNECTIONS_PER_SOURCE",
        value_name = "N"
    )]
    pub edge_max_connections_per_source: Option<u64>,
    /// Bytes of request bodies the edge holds at once, across all connections. [default:
    /// 268435456]
    #[arg(long, env = "TRIBUTARY_EDGE_BODY_BUDGET_BYTES", value_name = "BYTES")]
    pub edge_body_budget_bytes: Option<u64>,
    /// Bytes of request bodies one tenant may hold at once. [default: 134217728]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_TENANT_BODY_BUDGET_BYTES",
        value_name = "BYTES"
    )]
    pub edge_tenant_body_budget_bytes: Option<u64>,
    /// Milliseconds a request waits for room in the body budget before it is answered 503.
    /// [default: 2000]
    #[arg(long, env = "TRIBUTARY_EDGE_BODY_BUDGET_WAIT_MS", value_name = "MS")]
    pub edge_body_budget_wait_ms: Option<u64>,
    /// Backpressure: messages the bronze writer or the materializer may be behind on a bus
    /// partition before the edge answers that partition's batches 429 with `Retry-After`.
    /// [default: 500000]
    #[arg(long, env = "TRIBUTARY_EDGE_MAX_CONSUMER_LAG", value_name = "MESSAGES")]
    pub edge_max_consumer_lag: Option<u64>,
}

/// The same keys as the configuration file gives them.
#[derive(Debug, Clone, Default)]
pub struct OperationsFile {
    pub metrics_addr: Option<SocketAddr>,
    pub metrics_token: Option<String>,
    /// Each edge limit by its key (`edge_idle_timeout_secs`, ...).
    pub edge: Vec<(&'static str, Option<u64>)>,
}

/// One edge limit: its key and its bounds (its default is the edge's own).
struct Limit {
    key: &'static str,
    min: u64,
    max: u64,
}

const HOUR: u64 = 3600;
const GIB: u64 = 1024 * 1024 * 1024;

/// Every edge limit, in the order [`OperationsArgs`] lists them. A limit of zero would refuse
/// everything (or time out at once); the maximum is past any sane value, so that a typo such as
/// an extra zero is caught at start rather than found under load.
const LIMITS: [Limit; 12] = [
    limit("edge_handshake_timeout_secs", 1, HOUR),
    limit("edge_first_request_timeout_secs", 1, HOUR),
    limit("edge_idle_timeout_secs", 1, 24 * HOUR),
    limit("edge_anonymous_request_timeout_secs", 1, HOUR),
    limit("edge_max_anonymous_connections", 1, 1_000_000),
    limit("edge_max_certified_connections", 1, 1_000_000),
    limit("edge_max_connections_per_address", 1, 1_000_000),
    limit("edge_max_connections_per_source", 1, 10_000),
    limit("edge_body_budget_bytes", 1, 64 * GIB),
    limit("edge_tenant_body_budget_bytes", 1, 64 * GIB),
    limit("edge_body_budget_wait_ms", 1, 60_000),
    limit("edge_max_consumer_lag", 1, 1_000_000_000),
];

const fn limit(key: &'static str, min: u64, max: u64) -> Limit {
    Limit { key, min, max }
}

/// The edge's own defaults, in the order of [`LIMITS`].
fn edge_defaults() -> [u64; 12] {
    let connections = edge::config::ConnectionLimits::default();
    let budget = edge::config::BodyBudget::default();
    let wide = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    [
        connections.handshake_timeout.as_secs(),
        connections.first_request_timeout.as_secs(),
        connections.idle_timeout.as_secs(),
        connections.anonymous_request_timeout.as_secs(),
        wide(connections.max_anonymous_connections),
        wide(connections.max_certified_connections),
        wide(connections.max_connections_per_address),
        wide(connections.max_connections_per_source),
        wide(budget.total_bytes),
        wide(budget.tenant_bytes),
        u64::try_from(budget.wait.as_millis()).unwrap_or(u64::MAX),
        edge::EdgeConfig::default().max_consumer_lag,
    ]
}

impl OperationsArgs {
    fn edge_values(&self) -> [Option<u64>; 12] {
        [
            self.edge_handshake_timeout_secs,
            self.edge_first_request_timeout_secs,
            self.edge_idle_timeout_secs,
            self.edge_anonymous_request_timeout_secs,
            self.edge_max_anonymous_connections,
            self.edge_max_certified_connections,
            self.edge_max_connections_per_address,
            self.edge_max_connections_per_source,
            self.edge_body_budget_bytes,
            self.edge_tenant_body_budget_bytes,
            self.edge_body_budget_wait_ms,
            self.edge_max_consumer_lag,
        ]
    }
}

/// How a setting is named in an error: the key, its variable and its flag.
fn setting(key: &str) -> String {
    format!(
        "{key} (TRIBUTARY_{} / --{})",
        key.to_uppercase(),
        key.replace('_', "-")
    )
}

/// The resolved operational settings.
#[derive(Debug, Clone)]
pub struct OperationsSettings {
    /// Where the metrics listener listens.
    pub metrics_addr: SocketAddr,
    /// The token `/metrics` is served behind on the web listener; `None`: not served there.
    pub metrics_token: Option<SecretString>,
    pub edge_connections: edge::config::ConnectionLimits,
    pub edge_body_budget: edge::config::BodyBudget,
    pub edge_max_consumer_lag: u64,
}

impl OperationsSettings {
    /// Flags (and their environment variables) over the file over the defaults, each checked.
    pub fn resolve(args: Option<&OperationsArgs>, file: OperationsFile) -> anyhow::Result<Self> {
        let metrics_addr = args
            .and_then(|args| args.metrics_addr)
            .or(file.metrics_addr)
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("a valid default"));
        let metrics_token = args
            .and_then(|args| args.metrics_token.clone())
            .or(file.metrics_token)
            .map(SecretString::from);
        if let Some(token) = &metrics_token
            && token.expose_secret().trim().chars().count() < web::metrics::MIN_TOKEN_CHARS
        {
            anyhow::bail!(
                "{} must be at least {} characters",
                setting("metrics_token"),
                web::metrics::MIN_TOKEN_CHARS
            );
        }
        let flags = args.map(OperationsArgs::edge_values).unwrap_or_default();
        let mut values = edge_defaults();
        for (index, limit) in LIMITS.iter().enumerate() {
            let from_file = file
                .edge
                .iter()
                .find(|(key, _)| *key == limit.key)
                .and_then(|(_, value)| *value);
            let value = flags[index].or(from_file).unwrap_or(values[index]);
            if !(limit.min..=limit.max).contains(&value) {
                anyhow::bail!(
                    "{} must be between {} and {}; {value} given",
                    setting(limit.key),
                    limit.min,
                    limit.max
                );
            }
            values[index] = value;
        }
        let [
            handshake,
            first_request,
            idle,
            anonymous_request,
            anonymous,
            certified,
            per_address,
            per_source,
            body_total,
            body_tenant,
            body_wait,
            max_consumer_lag,
        ] = values;
        if body_tenant > body_total {
            anyhow::bail!(
                "{} must not be larger than edge_body_budget_bytes ({body_total})",
                setting("edge_tenant_body_budget_bytes")
            );
        }
        let largest_body = edge::EdgeConfig::default().limits.max_body_bytes as u64;
        if body_tenant < largest_body {
            anyhow::bail!(
                "{} must hold at least one largest batch body ({largest_body} bytes)",
                setting("edge_tenant_body_budget_bytes")
            );
        }
        let count = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        Ok(Self {
            metrics_addr,
            metrics_token,
            edge_connections: edge::config::ConnectionLimits {
                handshake_timeout: Duration::from_secs(handshake),
                first_request_timeout: Duration::from_secs(first_request),
                idle_timeout: Duration::from_secs(idle),
                anonymous_request_timeout: Duration::from_secs(anonymous_request),
                max_anonymous_connections: count(anonymous),
                max_certified_connections: count(certified),
                max_connections_per_address: count(per_address),
                max_connections_per_source: count(per_source),
            },
            edge_body_budget: edge::config::BodyBudget {
                total_bytes: count(body_total),
                tenant_bytes: count(body_tenant),
                wait: Duration::from_millis(body_wait),
            },
            edge_max_consumer_lag: max_consumer_lag,
        })
    }
}

/// The metrics listener, bound before anything else starts, so a taken address stops the start.
pub async fn bind_metrics(
    settings: &OperationsSettings,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics ({})",
                settings.metrics_addr,
                setting("metrics_addr")
            )
        })
}

/// Waits for the metrics listener to finish after the shutdown signal (scrapes are short).
pub async fn stop_metrics(server: tokio::task::JoinHandle<std::io::Result<()>>) {
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, "the metrics listener ended with an error"),
        Err(_) => tracing::warn!("a metrics scrape still in flight after 5s; closing anyway"),
        _ => {}
    }
}

/// `/metrics` on the web listener: only with a metrics token.
pub fn web_metrics(
    settings: &OperationsSettings,
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<Option<web::metrics::TokenMetrics>> {
    match (&settings.metrics_token, handle) {
        (Some(token), Some(handle)) => Ok(Some(
            web::metrics::TokenMetrics::new(handle, token)
                .with_context(|| setting("metrics_token"))?,
        )),
        _ => Ok(None),
    }
}

/// The edge's configuration: its address, the names its certificate is valid for, and these
/// settings' limits.
pub fn edge_config(
    operations: &OperationsSettings,
    hostnames: &[String],
    listen: SocketAddr,
) -> edge::EdgeConfig {
    edge::EdgeConfig {
        listen,
        hostnames: hostnames.to_vec(),
        connections: operations.edge_connections.clone(),
        body_budget: operations.edge_body_budget.clone(),
        max_consumer_lag: operations.edge_max_consumer_lag,
        ..edge::EdgeConfig::default()
    }
}

/// The keys of the edge limits.
#[cfg(test)]
pub fn edge_keys() -> impl Iterator<Item = &'static str> {
    LIMITS.iter().map(|limit| limit.key)
}
