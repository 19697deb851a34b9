//! What `tributary bench ingest` and the fault tests need from the database beyond the
//! platform's own queries: the raw `COPY` baseline into bronze, counting and fingerprinting what
//! bronze holds, emptying bronze of a benchmark's tenants afterwards, and what the materializer
//! benchmark and the end-to-end test compare read models with. Never used by the
//! running platform.

use domain::{EventId, TenantId};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use time::Date;
use uuid::Uuid;

use crate::{ConnectionSettings, ServiceDb, StoreError};

/// Streams `chunks` (lines made by [`crate::service::bronze::copy_text_row`]) into `bronze.cdc_events`
/// with one `COPY`, one transaction, as the pipeline's role; returns the rows copied. The
/// partitions must exist ([`ensure_bronze_days`]).
pub async fn copy_bronze(database: &ServiceDb, chunks: &[Vec<u8>]) -> Result<u64, StoreError> {
    let mut connection = database.pool().acquire().await?;
    let mut copy = connection
        .copy_in_raw(crate::service::bronze::COPY_BRONZE)
        .await?;
    for chunk in chunks {
        if let Err(error) = copy.send(chunk.as_slice()).await {
            let _ = copy.abort("the benchmark's copy failed").await;
            return Err(error.into());
        }
    }
    Ok(copy.finish().await?)
}

/// Creates the daily bronze partitions `days` fall in, as the bronze writer does before it
/// inserts.
pub async fn ensure_bronze_days(
    database: &ServiceDb,
    days: impl IntoIterator<Item = Date>,
) -> Result<(), StoreError> {
    crate::service::bronze::ensure_days(database, days.into_iter()).await
}

/// How many bronze rows the given tenants have together.
pub async fn bronze_count(database: &ServiceDb, tenants: &[TenantId]) -> Result<i64, StoreError> {
    let tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    Ok(
        sqlx::query_scalar("select count(*) from bronze.cdc_events where tenant_id = any($1)")
            .bind(&tenants)
            .fetch_one(database.pool())
            .await?,
    )
}

/// Rows of `tenant` beyond the first with the same event id: `count(*) - count(distinct
/// event_id)`, zero when bronze holds every event once.
pub async fn bronze_duplicates(database: &ServiceDb, tenant: TenantId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(*) - count(distinct event_id) from bronze.cdc_events where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(database.pool())
    .await?)
}

/// The count and checksum [`crate::service::bronze::tenant_fingerprint`] computes, over a list of ids
/// (what a client acknowledged), computed the same way by the same server.
pub async fn fingerprint_of(
    database: &ServiceDb,
    event_ids: &[EventId],
) -> Result<(i64, String), StoreError> {
    let ids: Vec<Uuid> = event_ids.iter().map(|id| *id.as_uuid()).collect();
    let (count, checksum): (i64, Option<String>) = sqlx::query_as(
        "select count(*), md5(string_agg(event_id::text, ',' order by event_id)) \
         from unnest($1::uuid[]) as acked(event_id)",
    )
    .bind(&ids)
    .fetch_one(database.pool())
    .await?;
    Ok((count, checksum.unwrap_or_default()))
}

/// A connection as the administrative login (bootstrap superuser of a managed cluster).
async fn admin(settings: &ConnectionSettings) -> Result<PgConnection, StoreError> {
    Ok(PgConnection::connect_with(&settings.admin).await?)
}

/// Removes the given tenants' bronze rows and vacuums bronze, as the administrative login, so
/// that a later phase of a benchmark starts from a table without dead rows. Returns the rows
/// removed.
pub async fn empty_bronze(
    settings: &ConnectionSettings,
    tenants: &[TenantId],
) -> Result<u64, StoreError> {
    let tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    let mut connection = admin(settings).await?;
    let removed = sqlx::query("delete from bronze.cdc_events where tenant_id = any($1)")
        .bind(&tenants)
        .execute(&mut connection)
        .await?
        .rows_affected();
    sqlx::query("vacuum (analyze) bronze.cdc_events")
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(removed)
}

/// Forces a checkpoint, so that a timed phase does not pay for the previous phase's dirty
/// pages. Needs a superuser (or `pg_checkpoint`) login: callers treat a failure as a note.
pub async fn checkpoint(settings: &ConnectionSettings) -> Result<(), StoreError> {
    let mut connection = admin(settings).await?;
    sqlx::query("checkpoint").execute(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

/// Seconds from each of `tenant`'s events' commit at the source to its row in bronze, for
/// events of `op`.
pub async fn bronze_commit_latencies(
    database: &ServiceDb,
    tenant: TenantId,
    op: &str,
) -> Result<Vec<f64>, StoreError> {
    Ok(sqlx::query_scalar(
        "select extract(epoch from ingest_time - event_time)::float8 from bronze.cdc_events \
         where tenant_id = $1 and op = $2",
    )
    .bind(tenant.as_uuid())
    .bind(op)
    .fetch_all(database.pool())
    .await?)
}

/// Which of `device_ids` of `tenant` are visible in `analytics.devices` (the materializer
/// benchmark's probes).
pub async fn visible_devices(
    database: &ServiceDb,
    tenant: TenantId,
    device_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "select device_id from analytics.devices where tenant_id = $1 and device_id = any($2)",
    )
    .bind(tenant.as_uuid())
    .bind(device_ids)
    .fetch_all(database.pool())
    .await?)
}

/// Which of `minutes` have a `global_analytics.rollup_min` row of `key` (the aggregator's
/// probes).
pub async fn visible_rollup_minutes(
    database: &ServiceDb,
    key: &str,
    minutes: &[time::OffsetDateTime],
) -> Result<Vec<time::OffsetDateTime>, StoreError> {
    let mut tx = as_aggregator(database).await?;
    let minutes = sqlx::query_scalar(
        "select distinct bucket from global_analytics.rollup_min \
         where key = $1 and bucket = any($2)",
    )
    .bind(key)
    .bind(minutes)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(minutes)
}

/// A read-only look at the rollups, as the one role that may read them besides internal
/// operations (the service login itself holds no privilege on them).
async fn as_aggregator(
    database: &ServiceDb,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = database.pool().begin().await?;
    sqlx::query("set local role tributary_aggregator")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// How many distinct values of key column `key_column` the events of `table` have in a tenant's
/// bronze: what the read models must hold one row (or reading) for.
pub async fn bronze_distinct_keys(
    database: &ServiceDb,
    tenant: TenantId,
    table: &str,
    key_column: &str,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(distinct payload->'key'->>$3) from bronze.cdc_events \
         where tenant_id = $1 and table_name = $2",
    )
    .bind(tenant.as_uuid())
    .bind(table)
    .bind(key_column)
    .fetch_one(database.pool())
    .await?)
}

/// The readings a tenant's `metrics_min` counts for `metric_key`, and those the global
/// `rollup_min` and `rollup_hr` count for it (all tenants).
pub async fn metric_counts(
    database: &ServiceDb,
    tenant: TenantId,
    metric_key: &str,
) -> Result<(i64, i64, i64), StoreError> {
    let mut tx = as_aggregator(database).await?;
    let counts = sqlx::query_as(
        "select (select coalesce(sum(value_count), 0)::bigint from analytics.metrics_min \
                 where tenant_id = $1 and metric_key = $2), \
                (select coalesce(sum(value_count), 0)::bigint from global_analytics.rollup_min \
                 where key = $2), \
                (select coalesce(sum(value_count), 0)::bigint from global_analytics.rollup_hr \
                 where key = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(metric_key)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(counts)
}
