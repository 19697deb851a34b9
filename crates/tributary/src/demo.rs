//! The demo `tributary up` sets up on a managed cluster: a tenant with a simulator source whose
//! agent runs inside the platform's process, and an API token to look at it with. Created on
//! the first start and kept in `<data-dir>/demo.json` (mode 0600); `--no-demo` skips it all.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use domain::{Plan, Role, TenantAttributes};
use serde::{Deserialize, Serialize};
use store::{Actor, Database, Scope, TenantTx};

const DEMO_FILE: &str = "demo.json";

/// What the demo prints at every start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Demo {
    pub tenant_id: domain::TenantId,
    pub source_id: domain::SourceId,
    /// An admin API token of the demo tenant, for `/api/v1`.
    pub api_token: String,
}

/// Loads the demo, or creates it: tenant, source, pairing of the in-process agent (whose
/// credentials go to `<data-dir>/demo-agent`), API token.
pub async fn ensure(
    data_dir: &Path,
    database: &Database,
    edge_url: &str,
    ca_pem: &str,
) -> anyhow::Result<Demo> {
    let path = data_dir.join(DEMO_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        return serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is corrupt; remove it to set the demo up again",
                path.display()
            )
        });
    }
    let actor = Actor::System("demo");
    let attributes = TenantAttributes::parse("Demo Charging", Plan::Team, "energy", "eu-west")?;
    let tenant = store::control::create_tenant(database, actor.clone(), &attributes).await?;
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: Some(tenant.tenant_id),
            actor,
        },
    )
    .await?;
    let (source, token) =
        store::sources::create_source(&mut tx, "demo simulator", "simulator").await?;
    let (_, api_token) =
        store::api_tokens::create(&mut tx, "demo", Role::Admin, time::Duration::days(366)).await?;
    tx.commit().await?;

    let credentials =
        edge_client::pair(edge_url, edge_client::ServerTrust::Ca(ca_pem), &token.token)
            .await
            .context("pairing the demo agent")?;
    let agent_dir = data_dir.join("demo-agent");
    std::fs::create_dir_all(&agent_dir)?;
    credentials.save(&agent_dir)?;

    let demo = Demo {
        tenant_id: tenant.tenant_id,
        source_id: source.source_id,
        api_token,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&serde_json::to_vec_pretty(&demo)?)?;
    tracing::info!(tenant = %demo.tenant_id, "demo tenant and simulator source created");
    Ok(demo)
}

/// The demo agent's configuration: the simulator, sending to this platform's edge.
pub fn agent_config(data_dir: &Path, edge_url: &str) -> agent::config::Config {
    agent::config::Config::simulator(edge_url.to_owned(), data_dir.join("demo-agent"), 20)
}
