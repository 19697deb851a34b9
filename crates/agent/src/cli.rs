//! The command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_client::ServerTrust;

use crate::config::Config;

/// The Tributary agent: runs beside your database and ships its changes to the platform,
/// outbound only, over mutual TLS. Pair once with a one-time token, then run.
#[derive(Debug, Parser)]
#[command(name = "tributary-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair with the platform: a key is generated here, a certificate comes back; both are kept
    /// in the state directory (mode 0600).
    Pair {
        /// The edge's URL, e.g. https://platform.example:8443.
        #[arg(long, env = "TRIBUTARY_AGENT_EDGE")]
        edge: String,
        /// The one-time pairing token from `tributary source create` or the web app.
        #[arg(long, env = "TRIBUTARY_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Where to keep the credentials.
        #[arg(long, env = "TRIBUTARY_AGENT_STATE_DIR")]
        state_dir: PathBuf,
        /// The platform's CA certificate (PEM file). Without it, the first connection trusts
        /// the edge's certificate and pins the CA it returns (only on a network you trust).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Read the source and ship its changes until SIGINT or SIGTERM.
    Run {
        /// The configuration file (see agent.example.toml).
        #[arg(long, env = "TRIBUTARY_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Check the configuration, that the edge accepts this agent's certificate, and the
    /// source's prerequisites (wal_level, REPLICATION, slots, publication, keys); says exactly
    /// what to fix, and exits 1 when something must be fixed.
    Check {
        #[arg(long, env = "TRIBUTARY_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// What the agent is doing: pairing, spool depth, positions, lag, slot health, last error.
    Status {
        #[arg(long, env = "TRIBUTARY_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// After the source invalidated or lost the replication slot: drop the slot and forget the
    /// source's positions, so the next run takes a new snapshot. Spooled batches are kept and
    /// still sent. Stop the agent first.
    Resync {
        #[arg(long, env = "TRIBUTARY_AGENT_CONFIG")]
        config: PathBuf,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pair {
            edge,
            token,
            state_dir,
            ca,
        } => {
            let ca_pem = ca
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))
                })
                .transpose()?;
            let trust = match &ca_pem {
                Some(pem) => ServerTrust::Ca(pem),
                None => ServerTrust::TrustOnFirstUse,
            };
            let credentials = edge_client::pair(&edge, trust, &token)
                .await
                .context("pairing with the edge")?;
            std::fs::create_dir_all(&state_dir)?;
            credentials.save(&state_dir)?;
            println!(
                "paired: tenant {}, source {}; credentials in {}",
                credentials.tenant_id,
                credentials.source_id,
                state_dir.display()
            );
        }
        Command::Run { config } => crate::run::run(Config::load(&config)?).await?,
        Command::Check { config } => {
            let (report, ready) = crate::run::check(&Config::load(&config)?).await;
            println!("{report}");
            if !ready {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Resync { config } => {
            let config = Config::load(&config)?;
            anyhow::ensure!(
                config.source.kind == "postgres",
                "resync applies to a postgres source"
            );
            println!(
                "{}",
                crate::postgres::resync(&config.postgres()?, &config.state_dir).await?
            );
        }
        Command::Status { config } => println!("{}", crate::run::status(&Config::load(&config)?)?),
    }
    Ok(ExitCode::SUCCESS)
}
