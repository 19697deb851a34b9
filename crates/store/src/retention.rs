//! Bronze retention: each tenant keeps its events for its own number of days; partitions that
//! no tenant needs any more are dropped whole.

use domain::TenantId;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{Database, StoreError, TenantTx};

/// What one retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_events: u64,
    pub dropped_partitions: Vec<String>,
}

/// Rows deleted per statement, so a large backlog never holds long locks.
const DELETE_BATCH: i64 = 10_000;

/// Days kept when no tenant exists to say otherwise.
const DEFAULT_DAYS: i32 = 30;

/// Sets the transaction's tenant's bronze retention (audited).
pub async fn set_days(tx: &mut TenantTx, days: i32) -> Result<(), StoreError> {
    if !(1..=3650).contains(&days) {
        return Err(StoreError::Invalid(
            "retention is between 1 and 3650 days".into(),
        ));
    }
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("retention needs a tenant scope"))?;
    let previous: Option<i32> = sqlx::query_scalar(
        "update control.tenant_settings set bronze_retention_days = $2, updated_at = now() \
         where tenant_id = $1 returning (select bronze_retention_days from control.tenant_settings \
                                         where tenant_id = $1)",
    )
    .bind(tenant.as_uuid())
    .bind(days)
    .fetch_optional(tx.connection())
    .await?;
    let Some(previous) = previous else {
        return Err(StoreError::NotFound("tenant"));
    };
    audit::append(
        tx,
        AuditEntry::new("retention.set", tenant.to_string())
            .details(serde_json::json!({ "bronze_days": days, "previous_bronze_days": previous })),
    )
    .await
}

/// The transaction's tenant's bronze retention, in days.
pub async fn days(tx: &mut TenantTx) -> Result<i32, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("retention needs a tenant scope"))?;
    sqlx::query_scalar(
        "select bronze_retention_days from control.tenant_settings where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("tenant"))
}

/// Deletes every tenant's bronze events older than its retention, then drops the daily
/// partitions older than the longest retention of any tenant. Runs as the pipeline.
pub async fn enforce(database: &Database) -> Result<RetentionReport, StoreError> {
    let pool = database.service_pool();
    let tenants: Vec<(Uuid, i32)> = sqlx::query_as(
        "select tenant_id, bronze_retention_days from control.tenant_settings order by tenant_id",
    )
    .fetch_all(pool)
    .await?;
    let now = OffsetDateTime::now_utc();
    let mut report = RetentionReport::default();
    for (tenant, days) in &tenants {
        let cutoff = now - Duration::days(i64::from(*days));
        loop {
            let deleted = sqlx::query(
                "delete from bronze.cdc_events where (tenant_id, event_id, event_time) in ( \
                     select tenant_id, event_id, event_time from bronze.cdc_events \
                     where tenant_id = $1 and event_time < $2 limit $3)",
            )
            .bind(tenant)
            .bind(cutoff)
            .bind(DELETE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            report.deleted_events += deleted;
            if deleted < DELETE_BATCH as u64 {
                break;
            }
        }
        if report.deleted_events > 0 {
            tracing::debug!(tenant = %TenantId::from_uuid(*tenant), days, "bronze retention applied");
        }
    }
    let longest = tenants
        .iter()
        .map(|(_, days)| *days)
        .max()
        .unwrap_or(DEFAULT_DAYS);
    let cutoff_day = (now - Duration::days(i64::from(longest))).date();
    report.dropped_partitions = sqlx::query_scalar("select bronze.drop_partitions_before($1)")
        .bind(cutoff_day)
        .fetch_all(pool)
        .await?;
    Ok(report)
}
