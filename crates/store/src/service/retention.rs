//! Enforcing bronze retention: every tenant's expired events deleted, partitions no tenant needs dropped (service handle).

use domain::TenantId;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::retention::DEFAULT_DAYS;

use crate::{ServiceDb, StoreError};

/// What one retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_events: u64,
    pub dropped_partitions: Vec<String>,
}

/// Rows deleted per statement, so a large backlog never holds long locks.
const DELETE_BATCH: i64 = 10_000;
/// Deletes every tenant's bronze events older than its retention, then drops the daily
/// partitions older than the longest retention of any tenant. Runs as the pipeline.
pub async fn enforce(database: &ServiceDb) -> Result<RetentionReport, StoreError> {
    let pool = database.pool();
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
