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
const LIMITS: [Limit; 11] = [
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
];

const fn limit(key: &'static str, min: u64, max: u64) -> Limit {
    Limit { key, min, max }
}

/// The edge's own defaults, in the order of [`LIMITS`].
fn edge_defaults() -> [u64; 11] {
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
    ]
}

/// The keys of the edge limits.
#[cfg(test)]
fn edge_keys() -> impl Iterator<Item = &'static str> {
    LIMITS.iter().map(|limit| limit.key)
}

impl OperationsArgs {
    fn edge_values(&self) -> [Option<u64>; 11] {
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

/// The edge's configuration from the settings: its address, names and limits.
pub fn edge_config(settings: &crate::Settings, listen: SocketAddr) -> edge::EdgeConfig {
    edge::EdgeConfig {
        listen,
        hostnames: settings.edge_hostnames.clone(),
        connections: settings.operations.edge_connections.clone(),
        body_budget: settings.operations.edge_body_budget.clone(),
        ..edge::EdgeConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    /// The settings of `tributary <args>` (`up` options when the command is `up`).
    fn resolve(args: &[&str]) -> anyhow::Result<crate::Settings> {
        let cli = Cli::try_parse_from(std::iter::once("tributary").chain(args.iter().copied()))?;
        let up = match &cli.command {
            Command::Up(up) => Some(up.as_ref()),
            _ => None,
        };
        crate::Settings::resolve(&cli.global, up)
    }

    fn config_file(text: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("tributary-ops-{}", store::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tributary.toml");
        std::fs::write(&path, text).unwrap();
        let text = path.to_str().unwrap().to_owned();
        (dir, text)
    }

    #[test]
    fn edge_limits_and_metrics_come_from_the_file_and_flags_and_reach_the_edge() {
        let defaults = resolve(&["up"]).unwrap();
        assert_eq!(
            defaults.operations.metrics_addr,
            DEFAULT_METRICS_ADDR.parse().unwrap()
        );
        assert!(defaults.operations.metrics_addr.ip().is_loopback());
        assert!(defaults.operations.metrics_token.is_none());
        let edge = edge_config(&defaults, "127.0.0.1:0".parse().unwrap());
        let stock = edge::EdgeConfig::default();
        assert_eq!(
            format!("{:?}{:?}", edge.connections, edge.body_budget),
            format!("{:?}{:?}", stock.connections, stock.body_budget),
            "the edge's own defaults"
        );

        let (dir, path) = config_file(
            "metrics_addr = \"127.0.0.1:9999\"\nmetrics_token = \"from-the-file-0123456789abcdef\"\n\
             edge_idle_timeout_secs = 30\nedge_handshake_timeout_secs = 4\n\
             edge_max_connections_per_address = 16\nedge_body_budget_bytes = 1073741824\n\
             edge_tenant_body_budget_bytes = 67108864\n",
        );
        let from_file = resolve(&["--config", &path, "up"]).unwrap();
        let operations = &from_file.operations;
        assert_eq!(operations.metrics_addr.port(), 9999);
        assert_eq!(
            operations.metrics_token.as_ref().unwrap().expose_secret(),
            "from-the-file-0123456789abcdef"
        );
        let edge = edge_config(&from_file, "127.0.0.1:0".parse().unwrap());
        assert_eq!(edge.connections.idle_timeout, Duration::from_secs(30));
        assert_eq!(edge.connections.handshake_timeout, Duration::from_secs(4));
        assert_eq!(edge.connections.max_connections_per_address, 16);
        assert_eq!(edge.body_budget.total_bytes, 1 << 30);
        assert_eq!(edge.body_budget.tenant_bytes, 64 << 20);
        assert_eq!(
            edge.connections.first_request_timeout, stock.connections.first_request_timeout,
            "a key not given keeps the edge's default"
        );

        // Flags over the file.
        let flagged = resolve(&[
            "--config",
            &path,
            "up",
            "--metrics-addr",
            "127.0.0.1:0",
            "--edge-idle-timeout-secs",
            "90",
            "--edge-max-certified-connections",
            "100",
            "--edge-body-budget-wait-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(flagged.operations.metrics_addr.port(), 0);
        let edge = edge_config(&flagged, "127.0.0.1:0".parse().unwrap());
        assert_eq!(edge.connections.idle_timeout, Duration::from_secs(90));
        assert_eq!(edge.connections.max_certified_connections, 100);
        assert_eq!(edge.connections.handshake_timeout, Duration::from_secs(4));
        assert_eq!(edge.body_budget.wait, Duration::from_millis(500));
        assert!(
            !format!("{flagged:?}").contains("from-the-file-0123456789abcdef"),
            "the token is never printed"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn zero_and_absurd_limits_are_refused_naming_the_setting() {
        for (flag, value, named) in [
            (
                "--edge-idle-timeout-secs",
                "0",
                "edge_idle_timeout_secs (TRIBUTARY_EDGE_IDLE_TIMEOUT_SECS / --edge-idle-timeout-secs)",
            ),
            (
                "--edge-handshake-timeout-secs",
                "36000",
                "edge_handshake_timeout_secs",
            ),
            (
                "--edge-max-connections-per-address",
                "0",
                "edge_max_connections_per_address",
            ),
            (
                "--edge-max-anonymous-connections",
                "100000000",
                "edge_max_anonymous_connections",
            ),
            ("--edge-body-budget-bytes", "0", "edge_body_budget_bytes"),
            (
                "--edge-body-budget-bytes",
                "1099511627776",
                "edge_body_budget_bytes",
            ),
            (
                "--edge-tenant-body-budget-bytes",
                "1024",
                "edge_tenant_body_budget_bytes",
            ),
            (
                "--edge-tenant-body-budget-bytes",
                "536870912",
                "edge_tenant_body_budget_bytes",
            ),
            (
                "--edge-body-budget-wait-ms",
                "0",
                "edge_body_budget_wait_ms",
            ),
            (
                "--metrics-token",
                "only-twenty-three-chars",
                "metrics_token (TRIBUTARY_METRICS_TOKEN / --metrics-token)",
            ),
        ] {
            let error = resolve(&["up", flag, value]).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(named), "{flag} {value}: {message}");
            if flag == "--metrics-token" {
                assert!(
                    !message.contains(value),
                    "the token is not echoed: {message}"
                );
            }
        }
        // From the file as well.
        let (dir, path) = config_file("edge_max_connections_per_source = 0\n");
        let error = resolve(&["--config", &path, "up"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("edge_max_connections_per_source"),
            "{error:#}"
        );
        std::fs::write(std::path::Path::new(&path), "edge_idle_timeout = 5\n").unwrap();
        let error = resolve(&["--config", &path, "up"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `edge_idle_timeout`"),
            "{error:#}"
        );
        // Negative numbers are not numbers of these settings.
        assert!(resolve(&["up", "--edge-idle-timeout-secs", "-1"]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_key_is_a_flag_of_up_with_its_environment_variable() {
        let command = Cli::command();
        let up = command.find_subcommand("up").expect("tributary up exists");
        let keys: Vec<&str> = ["metrics_addr", "metrics_token"]
            .into_iter()
            .chain(edge_keys())
            .collect();
        assert_eq!(keys.len(), 13);
        for key in keys {
            let flag = key.replace('_', "-");
            let argument = up
                .get_arguments()
                .find(|argument| argument.get_long() == Some(flag.as_str()))
                .unwrap_or_else(|| panic!("up has no --{flag}"));
            assert_eq!(
                argument.get_env().and_then(|env| env.to_str()),
                Some(format!("TRIBUTARY_{}", key.to_uppercase()).as_str()),
                "--{flag}"
            );
            // And the file takes the key: a zero is refused by name, not as an unknown field.
            if key != "metrics_addr" && key != "metrics_token" {
                let (dir, path) = config_file(&format!("{key} = 0\n"));
                let error = format!("{:#}", resolve(&["--config", &path, "up"]).unwrap_err());
                assert!(error.contains(&format!("{key} (TRIBUTARY_")), "{error}");
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let token = up
            .get_arguments()
            .find(|argument| argument.get_long() == Some("metrics-token"))
            .unwrap();
        assert!(
            token.is_hide_env_values_set(),
            "the token's value is never shown"
        );
    }
}
