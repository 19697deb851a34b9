//! What the web app's live pages read on every tick of their event streams: whether the session
//! behind a stream is still live (without extending it: a page left open is not activity), and
//! the workspace's recent event counts from bronze.

use domain::UserId;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Actor, AppDb, Scope, StoreError, TenantTx};

/// The account of session `token` if the session is live (not ended, within its idle and
/// absolute lifetimes, account not disabled). Unlike `accounts::find_session`, this does not
/// count as activity: the idle timeout still ends a session whose page streams updates.
pub async fn session_user(database: &AppDb, token: &str) -> Result<Option<UserId>, StoreError> {
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: None,
            actor: Actor::System("live"),
        },
    )
    .await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "select s.user_id from control.auth_sessions s \
         join control.users u on u.user_id = s.user_id \
         where s.session_hash = $1 and s.revoked_at is null \
           and s.idle_expires_at > now() and s.absolute_expires_at > now() \
           and u.disabled_at is null",
    )
    .bind(Sha256::digest(token.as_bytes()).to_vec())
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(user.map(UserId::from_uuid))
}

/// The workspace's recent ingest, as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventActivity {
    pub last_hour: i64,
    pub last_day: i64,
    /// The newest event of the last day: its commit time and `schema.table`.
    pub latest: Option<(OffsetDateTime, String)>,
}

/// Counts the transaction's tenant's bronze events of the last hour and the last day (by commit
/// time), and names the newest. Bounded to one day so it reads at most two daily partitions.
pub async fn event_activity(tx: &mut TenantTx) -> Result<EventActivity, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("this needs a tenant scope"))?;
    let (last_hour, last_day): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where event_time > now() - interval '1 hour') as last_hour, \
                count(*) as last_day \
         from bronze.cdc_events \
         where tenant_id = $1 and event_time > now() - interval '1 day'",
    )
    .bind(tenant.as_uuid())
    .fetch_one(tx.connection())
    .await?;
    let latest: Option<(OffsetDateTime, String)> = sqlx::query_as(
        "select event_time, schema_name || '.' || table_name as source_table \
         from bronze.cdc_events \
         where tenant_id = $1 and event_time > now() - interval '1 day' \
         order by event_time desc limit 1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    Ok(EventActivity {
        last_hour,
        last_day,
        latest,
    })
}
