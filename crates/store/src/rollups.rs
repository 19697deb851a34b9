//! The global rollups: the aggregator's recomputation of `global_analytics.rollup_min/rollup_hr`
//! from every tenant's `analytics.metrics_min` (allowlisted keys only, broken down by the tenant
//! attributes on `control.dim_tenant`), the allowlist internal operations manage (audited in the
//! platform chain), and the internal console's query, which never returns a cell with fewer than
//! `k` distinct tenants.

use domain::TenantId;
use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;

use crate::audit::{self, AuditEntry};
use crate::{Database, StoreError, TenantTx};

/// The default minimum cohort: the console shows no cell of fewer distinct tenants.
pub const DEFAULT_MIN_COHORT: i64 = 5;

/// What one aggregation round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// (key, minute) pairs taken from the queue.
    pub minutes: u64,
    /// Keys whose history was purged.
    pub purged: u64,
    /// Keys newly allowlisted whose history was queued.
    pub backfilled: u64,
}

/// One aggregation round (service role): purges the history of keys removed with a purge,
/// queues the whole history of newly allowlisted keys, then recomputes up to `limit` queued
/// (key, minute) pairs and their hours from `metrics_min`. A pair of a key that is not
/// allowlisted is dropped from the queue without writing anything.
pub async fn aggregate_round(database: &Database, limit: i64) -> Result<RoundOutcome, StoreError> {
    let mut outcome = RoundOutcome::default();
    let mut tx = database.service_pool().begin().await?;
    // The rollups' only writer is the aggregator role; the service login holds none of its
    // privileges until it switches (migration 0013).
    sqlx::query("set local role tributary_aggregator")
        .execute(&mut *tx)
        .await?;
    // One aggregator at a time; a second one waits rather than recomputing the same buckets.
    sqlx::query("select pg_advisory_xact_lock(hashtext('aggregator'))")
        .execute(&mut *tx)
        .await?;
    let purged: Vec<String> = sqlx::query_scalar(
        "update control.global_rollup_key_allowlist set purge_requested = false \
         where purge_requested returning key",
    )
    .fetch_all(&mut *tx)
    .await?;
    for key in &purged {
        sqlx::query("delete from global_analytics.rollup_min where key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from global_analytics.rollup_hr where key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    outcome.purged = purged.len() as u64;
    let backfilled: Vec<String> = sqlx::query_scalar(
        "update control.global_rollup_key_allowlist set backfilled_at = now() \
         where retired_at is null and backfilled_at is null returning key",
    )
    .fetch_all(&mut *tx)
    .await?;
    if !backfilled.is_empty() {
        sqlx::query(
            "insert into pipeline.rollup_dirty (metric_key, minute) \
             select distinct metric_key, minute from analytics.metrics_min \
             where metric_key = any($1) on conflict do nothing",
        )
        .bind(&backfilled)
        .execute(&mut *tx)
        .await?;
    }
    outcome.backfilled = backfilled.len() as u64;
    let taken: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "delete from pipeline.rollup_dirty d using ( \
             select metric_key, minute from pipeline.rollup_dirty \
             order by minute, metric_key limit $1 for update skip locked) t \
         where d.metric_key = t.metric_key and d.minute = t.minute \
         returning d.metric_key, d.minute",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    outcome.minutes = taken.len() as u64;
    if !taken.is_empty() {
        let keys: Vec<&str> = taken.iter().map(|(key, _)| key.as_str()).collect();
        let minutes: Vec<OffsetDateTime> = taken.iter().map(|(_, minute)| *minute).collect();
        for statement in RECOMPUTE {
            sqlx::query(statement)
                .bind(&keys)
                .bind(&minutes)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Recomputes the minutes and hours of `($1 keys, $2 minutes)` for allowlisted keys. Sums are
/// taken in a fixed order, so a recomputation gives the same bits.
const RECOMPUTE: [&str; 4] = [
    "delete from global_analytics.rollup_min r \
     using unnest($1::text[], $2::timestamptz[]) as t(key, minute) \
     where r.key = t.key and r.bucket = t.minute \
       and exists (select 1 from control.global_rollup_key_allowlist a \
                   where a.key = t.key and a.retired_at is null)",
    "insert into global_analytics.rollup_min (bucket, key, plan, industry, region, value_sum, \
         value_count, tenant_count) \
     select m.minute, m.metric_key, d.plan, d.industry, d.region, \
            sum(m.value_sum order by m.tenant_id, m.entity_kind, m.entity_id), \
            sum(m.value_count), count(distinct m.tenant_id) \
     from (select distinct key, minute from unnest($1::text[], $2::timestamptz[]) \
               as t(key, minute)) t \
     join control.global_rollup_key_allowlist a on a.key = t.key and a.retired_at is null \
     join analytics.metrics_min m on m.metric_key = t.key and m.minute = t.minute \
     join control.dim_tenant d on d.tenant_id = m.tenant_id \
     group by m.minute, m.metric_key, d.plan, d.industry, d.region",
    "delete from global_analytics.rollup_hr r \
     using unnest($1::text[], $2::timestamptz[]) as t(key, minute) \
     where r.key = t.key and r.bucket = date_trunc('hour', t.minute) \
       and exists (select 1 from control.global_rollup_key_allowlist a \
                   where a.key = t.key and a.retired_at is null)",
    "insert into global_analytics.rollup_hr (bucket, key, plan, industry, region, value_sum, \
         value_count, tenant_count) \
     select t.hour, m.metric_key, d.plan, d.industry, d.region, \
            sum(m.value_sum order by m.tenant_id, m.entity_kind, m.entity_id, m.minute), \
            sum(m.value_count), count(distinct m.tenant_id) \
     from (select distinct key, date_trunc('hour', minute) as hour \
           from unnest($1::text[], $2::timestamptz[]) as t(key, minute)) t \
     join control.global_rollup_key_allowlist a on a.key = t.key and a.retired_at is null \
     join analytics.metrics_min m on m.metric_key = t.key and m.minute >= t.hour \
          and m.minute < t.hour + interval '1 hour' \
     join control.dim_tenant d on d.tenant_id = m.tenant_id \
     group by t.hour, m.metric_key, d.plan, d.industry, d.region",
];

/// How many (key, minute) pairs wait for the aggregator.
pub async fn queued(database: &Database) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("select count(*) from pipeline.rollup_dirty")
            .fetch_one(database.service_pool())
            .await?,
    )
}

/// An allowlisted (or retired) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    let rows = sqlx::query(
        "select key, added_by, added_at, retired_at from control.global_rollup_key_allowlist \
         order by key",
    )
    .fetch_all(tx.connection())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AllowlistEntry {
                key: row.try_get("key")?,
                added_by: row.try_get("added_by")?,
                added_at: row.try_get("added_at")?,
                retired_at: row.try_get("retired_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Minute or hour buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
}

/// One cell of the console: a bucket of a key for one (plan, industry, region).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The console's query (internal operations): the cells of `key` in `[from, to)` with at least
/// `min_cohort` distinct tenants (never fewer than 2, whatever is asked). Cells below are left
/// out, so no tenant can be singled out.
pub async fn cells(
    tx: &mut TenantTx,
    granularity: Granularity,
    key: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    min_cohort: i64,
) -> Result<Vec<RollupCell>, StoreError> {
    let statement = match granularity {
        Granularity::Minute => {
            "select bucket, key, plan, industry, region, value_sum, value_count, tenant_count \
             from global_analytics.rollup_min \
             where key = $1 and bucket >= $2 and bucket < $3 and tenant_count >= $4 \
             order by bucket, plan, industry, region limit 10000"
        }
        Granularity::Hour => {
            "select bucket, key, plan, industry, region, value_sum, value_count, tenant_count \
             from global_analytics.rollup_hr \
             where key = $1 and bucket >= $2 and bucket < $3 and tenant_count >= $4 \
             order by bucket, plan, industry, region limit 10000"
        }
    };
    let rows = sqlx::query(statement)
        .bind(key)
        .bind(from)
        .bind(to)
        .bind(min_cohort.max(2))
        .fetch_all(tx.connection())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RollupCell {
                bucket: row.try_get("bucket")?,
                key: row.try_get("key")?,
                plan: row.try_get("plan")?,
                industry: row.try_get("industry")?,
                region: row.try_get("region")?,
                value_sum: row.try_get("value_sum")?,
                value_count: row.try_get("value_count")?,
                tenant_count: row.try_get("tenant_count")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
