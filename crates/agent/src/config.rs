//! The agent's configuration file (TOML), with `TRIBUTARY_AGENT_*` environment overrides.

use std::path::{Path, PathBuf};

use anyhow::Context;
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `simulator` (a PostgreSQL source comes with later work).
    pub kind: String,
    /// Simulator: events per second.
    #[serde(default = "default_rate")]
    pub events_per_second: u32,
    /// Simulator: devices simulated.
    #[serde(default = "default_devices")]
    pub devices: u32,
}

fn default_rate() -> u32 {
    50
}

fn default_devices() -> u32 {
    20
}

impl Config {
    /// A simulator agent for `edge`, keeping its state in `state_dir`.
    pub fn simulator(edge: String, state_dir: PathBuf, events_per_second: u32) -> Self {
        Self {
            edge,
            state_dir,
            source: SourceConfig {
                kind: "simulator".into(),
                events_per_second,
                devices: default_devices(),
            },
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("in the configuration {}", path.display()))?;
        if let Ok(edge) = std::env::var("TRIBUTARY_AGENT_EDGE") {
            config.edge = edge;
        }
        if let Ok(state_dir) = std::env::var("TRIBUTARY_AGENT_STATE_DIR") {
            config.state_dir = state_dir.into();
        }
        if config.source.kind != "simulator" {
            anyhow::bail!(
                "source kind {:?} is not supported by this agent yet: use \"simulator\"",
                config.source.kind
            );
        }
        Ok(config)
    }
}
