//! The aggregator's recomputation of the global rollups from every tenant's `metrics_min` (service handle, switched to `tributary_aggregator`).

use time::OffsetDateTime;

use crate::{ServiceDb, StoreError};

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
pub async fn aggregate_round(database: &ServiceDb, limit: i64) -> Result<RoundOutcome, StoreError> {
    let mut outcome = RoundOutcome::default();
    let mut tx = database.pool().begin().await?;
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
             where metric_key = any($1)",
        )
        .bind(&backfilled)
        .execute(&mut *tx)
        .await?;
    }
    outcome.backfilled = backfilled.len() as u64;
    // The queue holds a pair once per transaction that marked it (migration 0040): every copy
    // of the pairs taken goes. A copy committed after this statement began stays for the next
    // round, which sees what its transaction wrote.
    let mut taken: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "delete from pipeline.rollup_dirty d using ( \
             select distinct metric_key, minute from ( \
                 select metric_key, minute from pipeline.rollup_dirty \
                 order by minute, metric_key limit $1) oldest) t \
         where d.metric_key = t.metric_key and d.minute = t.minute \
         returning d.metric_key, d.minute",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    taken.sort_unstable();
    taken.dedup();
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

/// Recomputes the minutes and hours of `($1 keys, $2 minutes)` for allowlisted keys: a minute
/// from `metrics_min`, an hour from `metrics_hour` (the materializer keeps each tenant's hour
/// exactly the sum of its minutes, in the transaction that writes them), each read through an
/// index leading on (key, bucket) (migration 0033), so a round costs what it recomputes. Sums
/// are taken in a fixed order, so a recomputation gives the same bits.
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
     where r.key = t.key and r.bucket = date_trunc('hour', t.minute, 'UTC') \
       and exists (select 1 from control.global_rollup_key_allowlist a \
                   where a.key = t.key and a.retired_at is null)",
    "insert into global_analytics.rollup_hr (bucket, key, plan, industry, region, value_sum, \
         value_count, tenant_count) \
     select t.hour, h.metric_key, d.plan, d.industry, d.region, \
            sum(h.value_sum order by h.tenant_id, h.entity_kind, h.entity_id), \
            sum(h.value_count), count(distinct h.tenant_id) \
     from (select distinct key, date_trunc('hour', minute, 'UTC') as hour \
           from unnest($1::text[], $2::timestamptz[]) as t(key, minute)) t \
     join control.global_rollup_key_allowlist a on a.key = t.key and a.retired_at is null \
     join analytics.metrics_hour h on h.metric_key = t.key and h.hour = t.hour \
     join control.dim_tenant d on d.tenant_id = h.tenant_id \
     group by t.hour, h.metric_key, d.plan, d.industry, d.region",
];

/// How many (key, minute) pairs wait for the aggregator.
pub async fn queued(database: &ServiceDb) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(*) from (select distinct metric_key, minute from pipeline.rollup_dirty) q",
    )
    .fetch_one(database.pool())
    .await?)
}
