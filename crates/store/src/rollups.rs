//! The global rollups: the aggregator's recomputation of `global_analytics.rollup_min/rollup_hr`
//! from every tenant's `analytics.metrics_min` (allowlisted keys only, broken down by the tenant
//! attributes on `control.dim_tenant`), the allowlist internal operations manage (audited in the
//! platform chain), and the internal console's query, which never returns a cell with fewer than
//! `k` distinct tenants.

use domain::TenantId;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{self, AuditEntry};
use crate::cohort;
use crate::{StoreError, TenantTx};

/// The default minimum cohort: the console shows no cell of fewer distinct tenants.
pub const DEFAULT_MIN_COHORT: i64 = 5;

/// An allowlisted (or retired) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AllowlistEntry {
    pub key: String,
    pub added_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
}

fn internal_ops(tx: &TenantTx) -> Result<(), StoreError> {
    // The allowlist's own policy admits only internal operations; this only makes the audit
    // entry land in the platform chain.
    if tx.tenant() != Some(TenantId::PLATFORM) {
        return Err(StoreError::Forbidden(
            "the allowlist is managed by internal operations in the platform scope",
        ));
    }
    Ok(())
}

/// Checks a metric key's shape (the allowlist's own check, with a clear message).
pub fn parse_key(key: &str) -> Result<&str, StoreError> {
    let valid = (1..=100).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if valid {
        Ok(key)
    } else {
        Err(StoreError::Invalid(
            "a metric key is 1 to 100 of a-z, 0-9, '_' and '.', starting with a letter".into(),
        ))
    }
}

/// Adds `key` to the allowlist (or brings a retired key back); its history is then aggregated.
/// Internal operations only (the database refuses anyone else); audited in the platform chain.
pub async fn allow_key(tx: &mut TenantTx, key: &str) -> Result<(), StoreError> {
    internal_ops(tx)?;
    let key = parse_key(key)?;
    let actor = tx.actor().id();
    sqlx::query(
        "insert into control.global_rollup_key_allowlist (key, added_by) values ($1, $2) \
         on conflict (key) do update set added_by = excluded.added_by, added_at = now(), \
             retired_at = null, retired_by = null, purge_requested = false, \
             backfilled_at = null",
    )
    .bind(key)
    .bind(&actor)
    .execute(tx.connection())
    .await?;
    audit::append(tx, AuditEntry::new("rollup_allowlist.add", key)).await
}

/// Removes `key`: its aggregation stops at once (the database refuses further rollup writes of
/// it); with `purge`, the aggregator deletes its history too. Audited in the platform chain.
pub async fn remove_key(tx: &mut TenantTx, key: &str, purge: bool) -> Result<(), StoreError> {
    internal_ops(tx)?;
    let key = parse_key(key)?;
    let actor = tx.actor().id();
    let updated = sqlx::query(
        "update control.global_rollup_key_allowlist \
         set retired_at = coalesce(retired_at, now()), retired_by = $2, \
             purge_requested = purge_requested or $3 \
         where key = $1",
    )
    .bind(key)
    .bind(&actor)
    .bind(purge)
    .execute(tx.connection())
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("allowlisted key"));
    }
    audit::append(
        tx,
        AuditEntry::new("rollup_allowlist.remove", key)
            .details(serde_json::json!({ "purge": purge })),
    )
    .await
}

/// The allowlist, retired keys included.
pub async fn list_keys(tx: &mut TenantTx) -> Result<Vec<AllowlistEntry>, StoreError> {
    Ok(sqlx::query_as(
        "select key, added_by, added_at, retired_at from control.global_rollup_key_allowlist \
         order by key",
    )
    .fetch_all(tx.connection())
    .await?)
}

/// Minute or hour buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
}

/// One cell of the console: a bucket of a key for one (plan, industry, region).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RollupCell {
    #[serde(with = "time::serde::rfc3339")]
    pub bucket: OffsetDateTime,
    pub key: String,
    pub plan: String,
    pub industry: String,
    pub region: String,
    pub value_sum: f64,
    pub value_count: i64,
    pub tenant_count: i32,
}

/// The most cells one console query returns (the earliest).
const CELL_LIMIT: i64 = 10_000;

/// The console's query (internal operations): the cells of `key` in `[from, to)` that the
/// disclosure rule publishes ([`crate::cohort`]): none of fewer than `min_cohort` distinct
/// tenants (never fewer than 2, whatever is asked), and none from which such a cell could be
/// recovered by subtracting other published cells. At most 10,000 cells, the earliest.
pub async fn cells(
    tx: &mut TenantTx,
    granularity: Granularity,
    key: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    min_cohort: i64,
) -> Result<Vec<RollupCell>, StoreError> {
    let min_cohort = min_cohort.max(cohort::COHORT_FLOOR);
    let statement = match granularity {
        // The rule never withholds an hour, so hours need no minutes.
        Granularity::Hour => {
            "select true as hourly, bucket, key, plan, industry, region, value_sum, value_count, \
                 tenant_count \
             from global_analytics.rollup_hr \
             where key = $1 and bucket >= $2 and bucket < $3 and tenant_count >= $4 \
             order by bucket, plan, industry, region limit $5"
        }
        // Minutes are decided with every minute of their hour and the hour itself, read in one
        // statement (one snapshot): the window's first `$5` candidates, extended by an hour
        // each way so that every hour touching them is whole, whatever the hours' alignment.
        Granularity::Minute => {
            "with window_end as ( \
                 select coalesce(( \
                     select bucket + interval '1 minute' from global_analytics.rollup_min \
                     where key = $1 and bucket >= $2 and bucket < $3 and tenant_count >= $4 \
                     order by bucket, plan, industry, region offset $5 - 1 limit 1), $3) \
                     as bucket) \
             select false as hourly, bucket, key, plan, industry, region, value_sum, \
                 value_count, tenant_count \
             from global_analytics.rollup_min \
             where key = $1 and tenant_count >= $4 and bucket > $2 - interval '1 hour' \
               and bucket < (select bucket from window_end) + interval '1 hour' \
             union all \
             select true, bucket, key, plan, industry, region, value_sum, value_count, \
                 tenant_count \
             from global_analytics.rollup_hr \
             where key = $1 and tenant_count >= $4 and bucket > $2 - interval '1 hour' \
               and bucket < (select bucket from window_end) + interval '1 hour'"
        }
    };
    let rows: Vec<ConsoleRow> = sqlx::query_as(statement)
        .bind(key)
        .bind(from)
        .bind(to)
        .bind(min_cohort)
        .bind(CELL_LIMIT)
        .fetch_all(tx.connection())
        .await?;
    let mut hours = Vec::new();
    let mut minutes = Vec::new();
    for row in rows {
        if row.hourly {
            hours.push(row.cell);
        } else {
            minutes.push(row.cell);
        }
    }
    let published = cohort::publishable(hours, minutes, min_cohort);
    let mut shown = match granularity {
        Granularity::Hour => published.hours,
        Granularity::Minute => published.minutes,
    };
    shown.retain(|cell| cell.bucket >= from && cell.bucket < to);
    shown.sort_by(|a, b| {
        (a.bucket, &a.plan, &a.industry, &a.region).cmp(&(
            b.bucket,
            &b.plan,
            &b.industry,
            &b.region,
        ))
    });
    shown.truncate(CELL_LIMIT as usize);
    Ok(shown)
}

/// A console candidate: a minute or an hour cell.
#[derive(sqlx::FromRow)]
struct ConsoleRow {
    hourly: bool,
    #[sqlx(flatten)]
    cell: RollupCell,
}
