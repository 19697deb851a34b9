//! The demo `tributary up` sets up on a managed cluster: a tenant with a simulator source whose
//! agent runs inside the platform's process, an owner account to sign in to the web app with,
//! and an API token; beside it a cohort of light tenants, each with a simulator of its own, and
//! their metric keys allowlisted, so that the global console has cells to publish. Created on
//! the first start and kept in `<data-dir>/demo.json` (mode 0600); `--no-demo` skips it all.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use domain::{Email, Plan, Role, TenantAttributes};
use serde::{Deserialize, Serialize};
use store::{Actor, Database, Scope, TenantTx};

const DEMO_FILE: &str = "demo.json";
/// The demo owner's email (a reserved domain: no mail is ever sent there).
const DEMO_EMAIL: &str = "owner@demo.example.com";
/// The demo's internal operations account (staff, in no workspace).
const DEMO_OPS_EMAIL: &str = "ops@demo.example.com";

/// The cohort's tenants beside the demo workspace (Team, energy, eu-west): the first
/// `min_cohort` share its cell, so that cell has one tenant more than the disclosure rule's
/// minimum and is published; these three sit in cells of their own, which the rule withholds.
const COHORT_ELSEWHERE: [(Plan, &str, &str); 3] = [
    (Plan::Free, "energy", "us-east"),
    (Plan::Business, "manufacturing", "eu-west"),
    (Plan::Enterprise, "retail", "ap-south"),
];
/// The most tenants the cohort puts in the demo's cell, whatever the minimum cohort is set to.
const MAX_SHARED_CELL: usize = 20;
/// Each cohort simulator's events per second: enough for every minute to have readings.
const COHORT_EVENTS_PER_SECOND: u32 = 2;
/// The simulators' metric keys, allowlisted for cross-tenant rollups by the demo.
const ALLOWLISTED_KEYS: [&str; 3] = ["power_kw", "voltage_v", "energy_kwh"];

/// What the demo prints at every start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Demo {
    pub tenant_id: domain::TenantId,
    pub source_id: domain::SourceId,
    /// An admin API token of the demo tenant, for `/api/v1`.
    pub api_token: String,
    /// The demo tenant owner's sign-in for the web app. Absent in demos made before sign-in
    /// existed; the next start adds it.
    #[serde(default)]
    pub web_login: Option<WebLogin>,
    /// An internal operations account's sign-in (tenant registry, global analytics console).
    /// Absent in demos made before it existed; the next start adds it.
    #[serde(default)]
    pub ops_login: Option<WebLogin>,
    /// The cohort's tenants, each with a simulator source. Absent in demos made before it
    /// existed; the next start adds it.
    #[serde(default)]
    pub cohort: Vec<CohortTenant>,
}

/// A tenant of the demo's cohort and its simulator source, whose agent's credentials are in
/// `<data-dir>/demo-cohort/<source id>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CohortTenant {
    pub tenant_id: domain::TenantId,
    pub source_id: domain::SourceId,
}

/// An email and password to sign in with at `/auth`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebLogin {
    pub email: String,
    pub password: String,
}

/// Loads the demo, or creates it: tenant, source, pairing of the in-process agent (whose
/// credentials go to `<data-dir>/demo-agent`), API token.
pub async fn ensure(
    data_dir: &Path,
    database: &Database,
    edge: &Edge<'_>,
    min_cohort: i64,
) -> anyhow::Result<Demo> {
    let path = data_dir.join(DEMO_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        let mut demo: Demo = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is corrupt; remove it to set the demo up again",
                path.display()
            )
        })?;
        if demo.web_login.is_none() || demo.ops_login.is_none() || demo.cohort.is_empty() {
            if demo.web_login.is_none() {
                demo.web_login = Some(web_login(database, demo.tenant_id).await?);
            }
            if demo.ops_login.is_none() {
                demo.ops_login = Some(ops_login(database).await?);
            }
            if demo.cohort.is_empty() {
                demo.cohort = cohort(data_dir, database, edge, min_cohort).await?;
            }
            write_private(&path, &demo, false)?;
        }
        return Ok(demo);
    }
    let actor = Actor::System("demo");
    let attributes = TenantAttributes::parse("Demo Charging", Plan::Team, "energy", "eu-west")?;
    let tenant = store::control::create_tenant(&database.app, actor.clone(), &attributes).await?;
    let mut tx = TenantTx::begin(
        &database.app,
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

    edge.pair(&token.token, &data_dir.join("demo-agent"))
        .await
        .context("pairing the demo agent")?;

    let demo = Demo {
        tenant_id: tenant.tenant_id,
        source_id: source.source_id,
        api_token,
        web_login: Some(web_login(database, tenant.tenant_id).await?),
        ops_login: Some(ops_login(database).await?),
        cohort: cohort(data_dir, database, edge, min_cohort).await?,
    };
    write_private(&path, &demo, true)?;
    tracing::info!(tenant = %demo.tenant_id, "demo tenant and simulator source created");
    Ok(demo)
}

/// This platform's edge, where the demo's agents pair.
pub struct Edge<'a> {
    pub url: &'a str,
    pub ca_pem: &'a str,
}

impl Edge<'_> {
    /// Pairs an agent with the one-time `token`; its credentials go to `agent_dir`.
    async fn pair(&self, token: &str, agent_dir: &Path) -> anyhow::Result<()> {
        let credentials =
            edge_client::pair(self.url, edge_client::ServerTrust::Ca(self.ca_pem), token).await?;
        std::fs::create_dir_all(agent_dir)?;
        credentials.save(agent_dir)?;
        Ok(())
    }
}

/// Creates the cohort: `min_cohort` tenants in the demo workspace's cell (at most
/// [`MAX_SHARED_CELL`]) and those of [`COHORT_ELSEWHERE`], each with a paired simulator
/// source, and allowlists the simulators' keys, as internal operations would.
async fn cohort(
    data_dir: &Path,
    database: &Database,
    edge: &Edge<'_>,
    min_cohort: i64,
) -> anyhow::Result<Vec<CohortTenant>> {
    let actor = Actor::System("demo");
    let shared = usize::try_from(min_cohort)
        .unwrap_or(0)
        .clamp(1, MAX_SHARED_CELL);
    let cells = std::iter::repeat_n((Plan::Team, "energy", "eu-west"), shared)
        .chain(COHORT_ELSEWHERE.iter().copied());
    let mut cohort = Vec::new();
    for (n, (plan, industry, region)) in cells.enumerate() {
        let name = format!("Demo Cohort {}", n + 1);
        let attributes = TenantAttributes::parse(&name, plan, industry, region)?;
        let tenant =
            store::control::create_tenant(&database.app, actor.clone(), &attributes).await?;
        let mut tx = TenantTx::begin(
            &database.app,
            Scope::Control {
                tenant: Some(tenant.tenant_id),
                actor: actor.clone(),
            },
        )
        .await?;
        let (source, token) =
            store::sources::create_source(&mut tx, "cohort simulator", "simulator").await?;
        tx.commit().await?;
        edge.pair(&token.token, &cohort_agent_dir(data_dir, source.source_id))
            .await
            .with_context(|| format!("pairing the agent of {name}"))?;
        cohort.push(CohortTenant {
            tenant_id: tenant.tenant_id,
            source_id: source.source_id,
        });
    }
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(domain::TenantId::PLATFORM),
            actor,
        },
    )
    .await?;
    for key in ALLOWLISTED_KEYS {
        store::rollups::allow_key(&mut tx, key).await?;
    }
    tx.commit().await?;
    tracing::info!(
        tenants = cohort.len(),
        "demo cohort created and its metric keys allowlisted"
    );
    Ok(cohort)
}

fn cohort_agent_dir(data_dir: &Path, source: domain::SourceId) -> std::path::PathBuf {
    data_dir.join("demo-cohort").join(source.to_string())
}

fn write_private(path: &Path, demo: &Demo, create_new: bool) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(create_new)
        .truncate(!create_new)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(&serde_json::to_vec_pretty(demo)?)?;
    Ok(())
}

/// The demo tenant's owner account with a fresh random password (the account is made if
/// missing, and made owner of the demo tenant).
async fn web_login(database: &Database, tenant: domain::TenantId) -> anyhow::Result<WebLogin> {
    let (email, login) = account_with_password(database, DEMO_EMAIL, "Demo Owner").await?;
    store::control::set_member(
        &database.app,
        Actor::System("demo"),
        tenant,
        &email,
        Role::Owner,
    )
    .await?;
    Ok(login)
}

/// The demo's internal operations account, with a fresh random password.
async fn ops_login(database: &Database) -> anyhow::Result<WebLogin> {
    let (email, login) = account_with_password(database, DEMO_OPS_EMAIL, "Demo Operations").await?;
    store::accounts::grant_staff(&database.app, Actor::System("demo"), &email).await?;
    Ok(login)
}

/// The account of `address` (made if missing) with a fresh random password.
async fn account_with_password(
    database: &Database,
    address: &str,
    display_name: &str,
) -> anyhow::Result<(Email, WebLogin)> {
    let email = Email::parse(address)?;
    let user = match store::accounts::credentials(&database.app, &email).await? {
        Some(existing) => existing.user_id,
        None => {
            store::control::create_user(&database.app, Actor::System("demo"), &email, display_name)
                .await?
                .user_id
        }
    };
    let password = store::random_token(12);
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || web::auth::password::hash(&password)).await?
    };
    store::accounts::set_password_hash(&database.app, user, &hash).await?;
    Ok((
        email,
        WebLogin {
            email: address.to_owned(),
            password,
        },
    ))
}

/// The demo agent's configuration: the simulator, sending to this platform's edge.
pub fn agent_config(data_dir: &Path, edge_url: &str) -> agent::config::Config {
    agent::config::Config::simulator(edge_url.to_owned(), data_dir.join("demo-agent"), 20)
}

/// The cohort agents' configurations: light simulators, each with its own seed (so their
/// values differ), sending to this platform's edge.
pub fn cohort_agent_configs(
    data_dir: &Path,
    edge_url: &str,
    demo: &Demo,
) -> Vec<agent::config::Config> {
    demo.cohort
        .iter()
        .zip(1u64..)
        .map(|(member, seed)| {
            let mut config = agent::config::Config::simulator(
                edge_url.to_owned(),
                cohort_agent_dir(data_dir, member.source_id),
                COHORT_EVENTS_PER_SECOND,
            );
            config.source.seed = seed;
            config
        })
        .collect()
}
