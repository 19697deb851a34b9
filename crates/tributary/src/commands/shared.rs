//! What the operator commands share: the database for the length of one command, tenant ids
//! from the command line, the transactions of the control and internal-operations scopes, and
//! the exit status of a check that found problems.

use domain::TenantId;
use store::Actor;

use crate::connection::Connected;
use crate::settings::Settings;

/// Exit status of a check that ran and found problems.
pub const EXIT_CHECK_FAILED: u8 = 3;

/// Runs `action` against the database, then releases it (stopping a managed server this
/// command started).
pub async fn with_database<T>(
    settings: &Settings,
    action: impl AsyncFnOnce(&Connected) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let connected = Connected::open(settings, false).await?;
    let result = action(&connected).await;
    connected.close().await?;
    result
}

pub fn parse_tenant(given: &str) -> anyhow::Result<TenantId> {
    Ok(given.parse()?)
}

pub async fn control_tx(
    connected: &Connected,
    tenant: TenantId,
) -> anyhow::Result<store::TenantTx> {
    Ok(store::TenantTx::begin(
        &connected.database.app,
        store::Scope::Control {
            tenant: Some(tenant),
            actor: Actor::current_cli_user(),
        },
    )
    .await?)
}

pub async fn ops_tx(connected: &Connected) -> anyhow::Result<store::TenantTx> {
    Ok(store::TenantTx::begin(
        &connected.database.app,
        store::Scope::InternalOps {
            tenant: Some(TenantId::PLATFORM),
            actor: Actor::current_cli_user(),
        },
    )
    .await?)
}
