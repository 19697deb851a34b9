//! The agent's configuration file (TOML), with `TRIBUTARY_AGENT_*` environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `agent.toml`; see `agent.example.toml` at the repository's root.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The edge's URL, e.g. `https://platform.example:8443`.
    pub edge: String,
    /// Certificate, key, spool and positions.
    pub state_dir: PathBuf,
    pub source: SourceConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub health: HealthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres` or `simulator`.
    pub kind: String,
    /// PostgreSQL: `postgres://user:password@host:port/database?sslmode=...`
    /// (or `TRIBUTARY_AGENT_SOURCE_URL`, to keep the password out of the file).
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: `schema.table` names to capture; empty or absent: all tables.
    #[serde(default)]
    pub tables: Vec<String>,
    /// PostgreSQL: the replication slot's name.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// PostgreSQL: the publication's name (created when missing).
    #[serde(default = "default_slot")]
    pub publication: String,
    /// PostgreSQL: seconds between heartbeats and slot health checks.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Simulator: events per second.
    #[serde(default = "default_rate")]
    pub events_per_second: u32,
    /// Simulator: devices simulated.
    #[serde(default = "default_devices")]
    pub devices: u32,
    /// Simulator: the seed its values follow from.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The spool's bound: beyond it the source is not read until the edge takes batches.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// The longest wait, in seconds, between attempts to send a batch the edge did not take
    /// (unreachable, or the source paused): the wait doubles from 250 ms up to this.
    #[serde(default = "default_retry_max_seconds")]
    pub retry_max_seconds: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_spool_bytes(),
            retry_max_seconds: default_retry_max_seconds(),
        }
    }
}

impl SpoolConfig {
    /// [`SpoolConfig::retry_max_seconds`], at least one second.
    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.retry_max_seconds.max(1))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `127.0.0.1:9187`: serve `/healthz` and `/metrics` there. Loopback addresses only.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

fn default_slot() -> String {
    "tributary".into()
}

fn default_heartbeat() -> u64 {
    10
}

fn default_rate() -> u32 {
    50
}

fn default_devices() -> u32 {
    20
}

fn default_spool_bytes() -> u64 {
    1 << 30
}

fn default_retry_max_seconds() -> u64 {
    30
}

impl Config {
    /// A simulator agent for `edge`, keeping its state in `state_dir`.
    pub fn simulator(edge: String, state_dir: PathBuf, events_per_second: u32) -> Self {
        Self {
            edge,
            state_dir,
            source: SourceConfig {
                kind: "simulator".into(),
                url: None,
                tables: Vec::new(),
                slot: default_slot(),
                publication: default_slot(),
                heartbeat_seconds: default_heartbeat(),
                events_per_second,
                devices: default_devices(),
                seed: 0,
            },
            spool: SpoolConfig::default(),
            health: HealthConfig::default(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("in the configuration {}", path.display()))?;
        config.apply_environment()?;
        config.validate()?;
        Ok(config)
    }

    fn apply_environment(&mut self) -> anyhow::Result<()> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        if let Some(edge) = variable("TRIBUTARY_AGENT_EDGE") {
            self.edge = edge;
        }
        if let Some(state_dir) = variable("TRIBUTARY_AGENT_STATE_DIR") {
            self.state_dir = state_dir.into();
        }
        if let Some(url) = variable("TRIBUTARY_AGENT_SOURCE_URL") {
            self.source.url = Some(url);
        }
        if let Some(bytes) = variable("TRIBUTARY_AGENT_SPOOL_MAX_BYTES") {
            self.spool.max_bytes = bytes
                .parse()
                .context("TRIBUTARY_AGENT_SPOOL_MAX_BYTES must be a number of bytes")?;
        }
        if let Some(seconds) = variable("TRIBUTARY_AGENT_SPOOL_RETRY_MAX_SECONDS") {
            self.spool.retry_max_seconds = seconds
                .parse()
                .context("TRIBUTARY_AGENT_SPOOL_RETRY_MAX_SECONDS must be a number of seconds")?;
        }
        if let Some(listen) = variable("TRIBUTARY_AGENT_HEALTH_LISTEN") {
            self.health.listen =
                Some(listen.parse().context(
                    "TRIBUTARY_AGENT_HEALTH_LISTEN must be an address like 127.0.0.1:9187",
                )?);
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        match self.source.kind.as_str() {
            "simulator" => {}
            "postgres" => {
                if self.source.url.is_none() {
                    bail!(
                        "a postgres source needs `url` in [source] or TRIBUTARY_AGENT_SOURCE_URL"
                    );
                }
                self.postgres()?.validate()?;
            }
            other => bail!("source kind {other:?} is not one of \"postgres\", \"simulator\""),
        }
        if let Some(listen) = self.health.listen
            && !listen.ip().is_loopback()
        {
            bail!(
                "health.listen must be a loopback address: the agent accepts no outside connections"
            );
        }
        if self.spool.max_bytes < 1 << 20 {
            bail!("spool.max_bytes must be at least 1 MiB");
        }
        Ok(())
    }

    /// The PostgreSQL source's settings.
    pub fn postgres(&self) -> anyhow::Result<crate::postgres::Settings> {
        Ok(crate::postgres::Settings {
            url: self
                .source
                .url
                .clone()
                .context("a postgres source needs `url`")?,
            tables: self.source.tables.clone(),
            slot: self.source.slot.clone(),
            publication: self.source.publication.clone(),
            heartbeat: Duration::from_secs(self.source.heartbeat_seconds.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Config> {
        let path = std::env::temp_dir().join(format!(
            "tributary-agent-config-{}.toml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(&path);
        let _ = std::fs::remove_file(&path);
        loaded
    }

    const BASE: &str = "edge = \"https://edge:8443\"\nstate_dir = \"/tmp/a\"\n";

    #[test]
    fn the_example_configuration_loads() {
        let example = include_str!("../../../agent.example.toml");
        let config = load(example).unwrap();
        assert_eq!(config.source.kind, "postgres");
        assert_eq!(config.source.tables.len(), 4);
        assert_eq!(config.spool.max_bytes, 1 << 30);
    }

    #[test]
    fn the_health_port_listens_on_loopback_only() {
        let error = load(&format!(
            "{BASE}[health]\nlisten = \"0.0.0.0:9187\"\n[source]\nkind = \"simulator\"\n"
        ))
        .unwrap_err();
        assert!(error.to_string().contains("loopback"), "{error}");
        assert!(
            load(&format!(
                "{BASE}[health]\nlisten = \"127.0.0.1:9187\"\n[source]\nkind = \"simulator\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let missing_url = load(&format!("{BASE}[source]\nkind = \"postgres\"\n")).unwrap_err();
        assert!(format!("{missing_url:#}").contains("TRIBUTARY_AGENT_SOURCE_URL"));
        let bad_slot = load(&format!(
            "{BASE}[source]\nkind = \"postgres\"\nurl = \"postgres://h/d\"\nslot = \"My-Slot\"\n"
        ))
        .unwrap_err();
        assert!(
            format!("{bad_slot:#}").contains("a-z, 0-9 and _"),
            "{bad_slot:#}"
        );
        let unknown = load(&format!("{BASE}[source]\nkind = \"mysql\"\n")).unwrap_err();
        assert!(format!("{unknown:#}").contains("\"postgres\", \"simulator\""));
        let typo = load(&format!("{BASE}[source]\nkind = \"simulator\"\nrate = 5\n")).unwrap_err();
        assert!(format!("{typo:#}").contains("unknown field"), "{typo:#}");
    }
}
