//! The demo `tributary up` sets up on a managed cluster: a tenant with a simulator source whose
//! agent runs inside the platform's process, an owner account to sign in to the web app with,
//! and an API token. Created on the first start and kept in `<data-dir>/demo.json` (mode 0600);
//! `--no-demo` skips it all.

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
    edge_url: &str,
    ca_pem: &str,
) -> anyhow::Result<Demo> {
    let path = data_dir.join(DEMO_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        let mut demo: Demo = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is corrupt; remove it to set the demo up again",
                path.display()
            )
        })?;
        if demo.web_login.is_none() || demo.ops_login.is_none() {
            if demo.web_login.is_none() {
                demo.web_login = Some(web_login(database, demo.tenant_id).await?);
            }
            if demo.ops_login.is_none() {
                demo.ops_login = Some(ops_login(database).await?);
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
        web_login: Some(web_login(database, tenant.tenant_id).await?),
        ops_login: Some(ops_login(database).await?),
    };
    write_private(&path, &demo, true)?;
    tracing::info!(tenant = %demo.tenant_id, "demo tenant and simulator source created");
    Ok(demo)
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
