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

/// Streams each of `transactions` (lines made by [`crate::service::bronze::copy_text_row`])
/// into `bronze.cdc_events` with a `COPY` in a transaction of its own that waits for its
/// commit to be flushed, one after the other: the baseline of durable transactions of a given
/// size. Returns the rows copied.
pub async fn copy_bronze_in_transactions(
    database: &ServiceDb,
    transactions: &[Vec<u8>],
) -> Result<u64, StoreError> {
    let mut connection = database.pool().acquire().await?;
    let mut copied = 0;
    for text in transactions {
        let mut tx = connection.begin().await?;
        sqlx::query("set local synchronous_commit = on")
            .execute(&mut *tx)
            .await?;
        let mut copy = tx.copy_in_raw(crate::service::bronze::COPY_BRONZE).await?;
        if let Err(error) = copy.send(text.as_slice()).await {
            let _ = copy.abort("the benchmark's copy failed").await;
            return Err(error.into());
        }
        copied += copy.finish().await?;
        tx.commit().await?;
    }
    Ok(copied)
}

/// The cluster's current WAL insert position, in bytes from the start of the WAL: the
/// difference of two is the WAL written between them.
pub async fn wal_position(database: &ServiceDb) -> Result<u64, StoreError> {
    let position: i64 = sqlx::query_scalar("select (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
        .fetch_one(database.pool())
        .await?;
    Ok(u64::try_from(position).unwrap_or(0))
}

/// The server's values of the settings named (those it has), as `SHOW` prints them, in the
/// order asked.
pub async fn server_settings(
    database: &ServiceDb,
    names: &[&str],
) -> Result<Vec<(String, String)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select s.name, current_setting(s.name) from unnest($1::text[]) with ordinality as n(name, ord) \
         join pg_settings s on s.name = n.name order by n.ord",
    )
    .bind(names)
    .fetch_all(database.pool())
    .await?;
    Ok(rows)
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

/// The readings a tenant's `metrics_min` counts for `metric_key`, those every tenant's count,
/// and those the global `rollup_min` and `rollup_hr` count for it (all tenants).
pub async fn metric_counts(
    database: &ServiceDb,
    tenant: TenantId,
    metric_key: &str,
) -> Result<(i64, i64, i64, i64), StoreError> {
    let mut tx = as_aggregator(database).await?;
    let counts = sqlx::query_as(
        "select (select coalesce(sum(value_count), 0)::bigint from analytics.metrics_min \
                 where tenant_id = $1 and metric_key = $2), \
                (select coalesce(sum(value_count), 0)::bigint from analytics.metrics_min \
                 where metric_key = $2), \
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

/// The read models `tributary-bench dashboard` seeds for one tenant: sites, devices (every
/// 97th deleted) and sessions, one reading per minute row of `power_kw` from devices and of
/// `energy_kwh` from sessions, spread evenly over `days` days before `end`, the hourly rollup
/// of those minutes, and a few typed extras.
#[derive(Debug, Clone)]
pub struct DashboardShape {
    pub source: Uuid,
    pub sites: i64,
    pub devices: i64,
    pub sessions: i64,
    pub device_readings: i64,
    pub session_readings: i64,
    /// The hour the readings end at (exclusive); aligned to the hour in UTC.
    pub end: time::OffsetDateTime,
    pub days: i64,
}

impl DashboardShape {
    /// The id of site `index` (1-based), as seeded.
    pub fn site_id(index: i64) -> String {
        format!("site-{index:04}")
    }

    /// The id of device `index` (1-based), as seeded.
    pub fn device_id(index: i64) -> String {
        format!("device-{index:06}")
    }

    /// The id of session `index` (1-based), as seeded.
    pub fn session_id(index: i64) -> String {
        format!("session-{index:08}")
    }
}

/// How many rows of each read model one tenant's seed wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeededRows {
    pub entities: u64,
    pub minutes: u64,
    pub hours: u64,
    pub extras: u64,
}

/// Seeds `shape` for `tenant`, set-based (`generate_series`), as the administrative login (the
/// read models are written by the pipeline only; a benchmark writes them directly). The minute
/// rows are written in `chunks` slices of time; `progress` is called after each statement with
/// what it wrote.
pub async fn seed_dashboard_tenant(
    settings: &ConnectionSettings,
    tenant: TenantId,
    shape: &DashboardShape,
    chunks: i64,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<SeededRows, StoreError> {
    let mut connection = admin(settings).await?;
    // A seed that is lost in a crash is simply run again.
    sqlx::query("set synchronous_commit = off")
        .execute(&mut connection)
        .await?;
    let tenant = *tenant.as_uuid();
    let mut seeded = SeededRows::default();
    let sites = sqlx::query(
        "insert into analytics.sites (tenant_id, site_id, source_id, name, region, timezone, \
             latitude, longitude, pos_lsn, pos_seq, updated_at) \
         select $1, 'site-' || lpad(i::text, 4, '0'), $2, 'Site ' || i, \
             (array['north', 'south', 'east', 'west'])[1 + i % 4], 'Europe/Berlin', \
             45 + (i % 10) * 0.5, 8 + (i % 7) * 0.5, i, 0, $3 - make_interval(mins => i::int) \
         from generate_series(1, $4::bigint) i",
    )
    .bind(tenant)
    .bind(shape.source)
    .bind(shape.end)
    .bind(shape.sites)
    .execute(&mut connection)
    .await?
    .rows_affected();
    let devices = sqlx::query(
        "insert into analytics.devices (tenant_id, device_id, source_id, site_id, name, kind, \
             model, status, firmware, last_seen_at, pos_lsn, pos_seq, deleted_at, updated_at) \
         select $1, 'device-' || lpad(i::text, 6, '0'), $2, \
             'site-' || lpad((1 + i % $4)::text, 4, '0'), 'Device ' || i, \
             (array['meter', 'inverter', 'charger'])[1 + i % 3], 'M-' || (i % 5), \
             (array['online', 'online', 'online', 'offline', 'maintenance'])[1 + i % 5], \
             '1.' || (i % 4), $3 - make_interval(secs => (i * 7)::float8), i, 0, \
             case when i % 97 = 0 then $3 end, $3 - make_interval(mins => (i % 1440)::int) \
         from generate_series(1, $5::bigint) i",
    )
    .bind(tenant)
    .bind(shape.source)
    .bind(shape.end)
    .bind(shape.sites)
    .bind(shape.devices)
    .execute(&mut connection)
    .await?
    .rows_affected();
    // Sessions start evenly over the range and last an hour; every third has a site of its own.
    let sessions = sqlx::query(
        "insert into analytics.sessions (tenant_id, session_id, source_id, device_id, site_id, \
             status, started_at, ended_at, pos_lsn, pos_seq, updated_at) \
         select $1, 'session-' || lpad(i::text, 8, '0'), $2, \
             'device-' || lpad((1 + i % $4)::text, 6, '0'), \
             case when i % 3 = 0 then 'site-' || lpad((1 + i % $5)::text, 4, '0') end, \
             case when started_at + interval '1 hour' > $3 then 'active' else 'completed' end, \
             started_at, \
             case when started_at + interval '1 hour' <= $3 then started_at + interval '1 hour' end, \
             i, 0, least(started_at + interval '1 hour', $3) \
         from generate_series(1, $6::bigint) i, \
             lateral (select $3 - make_interval(days => $7::int) \
                 + make_interval(secs => (i - 1) * ($7 * 86400.0 / $6)) as started_at) s",
    )
    .bind(tenant)
    .bind(shape.source)
    .bind(shape.end)
    .bind(shape.devices)
    .bind(shape.sites)
    .bind(shape.sessions)
    .bind(shape.days)
    .execute(&mut connection)
    .await?
    .rows_affected();
    seeded.entities = sites + devices + sessions;
    progress(&format!(
        "{sites} sites, {devices} devices, {sessions} sessions"
    ));
    seeded.extras = sqlx::query(
        "with device_extras as ( \
             insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
             select tenant_id, 'device', device_id, 'vendor', 'Vendor ' || (pos_lsn % 7) \
             from analytics.devices where tenant_id = $1 returning 1 \
         ), capacities as ( \
             insert into analytics.extras_num (tenant_id, entity_kind, entity_id, key, value) \
             select tenant_id, 'device', device_id, 'capacity_kw', 5 + pos_lsn % 20 \
             from analytics.devices where tenant_id = $1 returning 1 \
         ), tariffs as ( \
             insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
             select tenant_id, 'session', session_id, 'tariff', \
                 (array['day', 'night', 'flat'])[1 + pos_lsn % 3] \
             from analytics.sessions where tenant_id = $1 returning 1 \
         ) \
         select (select count(*) from device_extras) + (select count(*) from capacities) \
             + (select count(*) from tariffs)",
    )
    .bind(tenant)
    .fetch_one(&mut connection)
    .await
    .map(|row: sqlx::postgres::PgRow| sqlx::Row::get::<i64, _>(&row, 0) as u64)?;

    // Reading j of entity e of n is at minute floor(j * minutes / per_entity) of the range,
    // staggered by the entity so that entities do not all report in the same minute; each a
    // reading of its own (count 1). Written a slice of j at a time, in time order.
    let minutes = shape.days * 1440;
    for (kind, key, entities, readings) in [
        ("device", "power_kw", shape.devices, shape.device_readings),
        (
            "session",
            "energy_kwh",
            shape.sessions,
            shape.session_readings,
        ),
    ] {
        if entities == 0 || readings == 0 {
            continue;
        }
        let per_entity = (readings / entities).clamp(1, minutes);
        let chunks = chunks.clamp(1, per_entity);
        for chunk in 0..chunks {
            let (low, high) = (
                per_entity * chunk / chunks,
                per_entity * (chunk + 1) / chunks,
            );
            let written = sqlx::query(
                "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, \
                     metric_key, minute, value_sum, value_sum_exact, value_count, value_min, \
                     value_max, last_value, last_pos_lsn, last_pos_seq, last_measured_at, \
                     last_reading_id) \
                 select $1, $2, entity_id, $3, minute, v, v::text::numeric, 1, v, v, v, \
                     e * $7 + j, 0, minute + make_interval(secs => (e % 60)::float8), \
                     'r-' || e || '-' || j \
                 from generate_series($8::bigint, $9::bigint - 1) j, \
                     generate_series(1, $4::bigint) e, \
                     lateral (select \
                         case $2 when 'device' then 'device-' || lpad(e::text, 6, '0') \
                             else 'session-' || lpad(e::text, 8, '0') end as entity_id, \
                         $5 - make_interval(days => $6::int) + make_interval(mins => \
                             (j * $10 / $7 + e % greatest(1, $10 / $7))::int) as minute, \
                         round((10 + e % 40 + 5 * sin(j / 12.0) + (j % 7) * 0.25)::numeric, 2) \
                             ::float8 as v) r \
                 order by minute, entity_id",
            )
            .bind(tenant)
            .bind(kind)
            .bind(key)
            .bind(entities)
            .bind(shape.end)
            .bind(shape.days)
            .bind(per_entity)
            .bind(low)
            .bind(high)
            .bind(minutes)
            .execute(&mut connection)
            .await?
            .rows_affected();
            seeded.minutes += written;
            progress(&format!(
                "{key}: {written} minute rows ({} of {} slices)",
                chunk + 1,
                chunks
            ));
        }
        // The hourly rollup exactly as migration 0022 computes it from the minutes.
        let hours = sqlx::query(
            "insert into analytics.metrics_hour (tenant_id, entity_kind, entity_id, metric_key, \
                 hour, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
                 last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
             select tenant_id, entity_kind, entity_id, metric_key, \
                 date_trunc('hour', minute, 'UTC'), sum(value_sum_exact)::float8, \
                 sum(value_sum_exact), sum(value_count)::bigint, min(value_min), max(value_max), \
                 (array_agg(last_value order by last_measured_at desc, last_pos_lsn desc, \
                     last_pos_seq desc, last_reading_id collate \"C\" desc))[1], \
                 (array_agg(last_pos_lsn order by last_measured_at desc, last_pos_lsn desc, \
                     last_pos_seq desc, last_reading_id collate \"C\" desc))[1], \
                 (array_agg(last_pos_seq order by last_measured_at desc, last_pos_lsn desc, \
                     last_pos_seq desc, last_reading_id collate \"C\" desc))[1], \
                 max(last_measured_at), \
                 (array_agg(last_reading_id order by last_measured_at desc, last_pos_lsn desc, \
                     last_pos_seq desc, last_reading_id collate \"C\" desc))[1] \
             from analytics.metrics_min where tenant_id = $1 and metric_key = $2 \
             group by tenant_id, entity_kind, entity_id, metric_key, \
                 date_trunc('hour', minute, 'UTC')",
        )
        .bind(tenant)
        .bind(key)
        .execute(&mut connection)
        .await?
        .rows_affected();
        seeded.hours += hours;
        progress(&format!("{key}: {hours} hour rows"));
    }
    connection.close().await?;
    Ok(seeded)
}

/// Refreshes the planner's statistics of the read models after a seed, as autovacuum would
/// once it noticed, so that the figures are of settled tables.
pub async fn analyze_read_models(settings: &ConnectionSettings) -> Result<(), StoreError> {
    let mut connection = admin(settings).await?;
    sqlx::query(
        "vacuum (analyze) analytics.sites, analytics.devices, analytics.sessions, \
             analytics.metrics_min, analytics.metrics_hour, analytics.extras_text, \
             analytics.extras_num, analytics.extras_bool, analytics.extras_time",
    )
    .execute(&mut connection)
    .await?;
    connection.close().await?;
    Ok(())
}

/// Scans of a table so far, from `pg_stat_user_tables`: sequential and index scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableScans {
    pub seq_scan: i64,
    pub idx_scan: i64,
}

impl TableScans {
    pub fn total(self) -> i64 {
        self.seq_scan + self.idx_scan
    }
}

/// The scans of `analytics.metrics_min` and `analytics.metrics_hour` so far, by every backend
/// (each flushes its counts to the statistics within about a second of going idle).
pub async fn rollup_scans(
    settings: &ConnectionSettings,
) -> Result<(TableScans, TableScans), StoreError> {
    let mut connection = admin(settings).await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select relname::text, coalesce(seq_scan, 0), coalesce(idx_scan, 0) \
         from pg_stat_user_tables \
         where schemaname = 'analytics' and relname in ('metrics_min', 'metrics_hour')",
    )
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    let scans = |table: &str| {
        rows.iter()
            .find(|(name, _, _)| name == table)
            .map(|(_, seq_scan, idx_scan)| TableScans {
                seq_scan: *seq_scan,
                idx_scan: *idx_scan,
            })
            .unwrap_or_default()
    };
    Ok((scans("metrics_min"), scans("metrics_hour")))
}

/// The tables the plan of the series statement the read layer runs for `query` reads (from
/// `EXPLAIN`), in `tx`, with the same parameters.
pub async fn explain_series(
    tx: &mut crate::TenantTx,
    query: &crate::analytics::SeriesQuery,
) -> Result<Vec<String>, StoreError> {
    crate::analytics::explain_series(tx, query).await
}

/// A bound value of a hand-written statement of a benchmark.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Time(time::OffsetDateTime),
    Int(i64),
    Float(f64),
}

/// Runs a benchmark's hand-written `statement` (constant text of the benchmark, never input)
/// in `tx`, with the transaction's tenant as $1 and `binds` after it; returns its rows.
pub async fn fetch_hand_written(
    tx: &mut crate::TenantTx,
    statement: &str,
    binds: &[Bind],
) -> Result<usize, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a hand-written read needs a tenant"))?;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(*tenant.as_uuid());
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text.clone()),
            Bind::Time(at) => query.bind(*at),
            Bind::Int(number) => query.bind(*number),
            Bind::Float(number) => query.bind(*number),
        };
    }
    Ok(query.fetch_all(tx.connection()).await?.len())
}

/// What [`seed_alert_rules`] made for one tenant.
#[derive(Debug, Clone, Copy)]
pub struct AlertSeed {
    pub metric_rules: u64,
    pub pipeline_rules: u64,
}

/// Seeds, as the administrative login, `tenant` with what `tributary-bench alerts` evaluates:
/// `devices` devices reading `power_kw`, `voltage_v` and `temp_c` every minute of the half hour
/// before `now`, one active source that last reported a minute before `now`, a webhook channel,
/// and `rules` rules due at `now`: 85 % on a metric (a device's, a site's or the workspace's,
/// every aggregation; some breach), 15 % on the source's health, every tenth notifying the
/// channel.
pub async fn seed_alert_rules(
    settings: &ConnectionSettings,
    tenant: TenantId,
    rules: u64,
    devices: u32,
    now: time::OffsetDateTime,
) -> Result<AlertSeed, StoreError> {
    let mut connection = admin(settings).await?;
    let source = uuid::Uuid::new_v4();
    let channel = uuid::Uuid::new_v4();
    let statements = [
        "insert into control.sources (tenant_id, source_id, name, kind, status) \
         values ($1, $2, 'bench source', 'postgres', 'active')",
        "insert into control.source_status (tenant_id, source_id, reported_at, agent_version, \
           source_kind, state) values ($1, $2, $3 - interval '1 minute', 'bench', 'postgres', \
           'streaming')",
        "insert into analytics.devices (tenant_id, device_id, source_id, site_id, name, status, \
           pos_lsn, pos_seq) \
         select $1, 'd' || n, $2, 's' || (n % 5), 'device ' || n, 'online', 1, 0 \
         from generate_series(1, $4) n",
        "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
           minute, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
           last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select $1, 'device', 'd' || n, key, date_trunc('minute', $3) - make_interval(mins => m), \
           v, v, 1, v, v, v, 1, 0, date_trunc('minute', $3) - make_interval(mins => m), \
           'r' || n || key || m \
         from generate_series(1, $4) n, generate_series(0, 29) m, \
              unnest(array['power_kw', 'voltage_v', 'temp_c']) key, \
              lateral (select (n * 7 + m * 3) % 100 + 0.5 as v) value",
        "insert into control.alert_channels (tenant_id, channel_id, name, kind, target, \
           secret_ciphertext, secret_nonce) \
         values ($1, $5, 'bench hook', 'webhook', 'https://hooks.example.com/bench', \
           '\\x00', '\\x00')",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(tenant.as_uuid())
            .bind(source)
            .bind(now)
            .bind(devices as i32)
            .bind(channel)
            .execute(&mut connection)
            .await?;
    }
    let pipeline_rules = rules * 15 / 100;
    let metric_rules = rules - pipeline_rules;
    sqlx::query(
        "insert into control.alert_rules (tenant_id, name, kind, metric_key, aggregation, \
           window_secs, site_id, device_id, comparison, threshold, channel_ids, \
           next_evaluation_at) \
         select $1, 'metric rule ' || i, 'metric', \
           (array['power_kw', 'voltage_v', 'temp_c'])[i % 3 + 1], \
           (array['avg', 'min', 'max', 'sum', 'count', 'last'])[i % 6 + 1], \
           (array[60, 300, 900])[i % 3 + 1], \
           case when i % 10 = 1 then 's' || (i % 5) end, \
           case when i % 10 > 3 then 'd' || (i % $4 + 1) end, \
           (array['>', '<'])[i % 2 + 1], (i * 13) % 100, \
           case when i % 10 = 0 then array[$3::uuid] else '{}' end, $5 \
         from generate_series(1, $2) i",
    )
    .bind(tenant.as_uuid())
    .bind(metric_rules as i64)
    .bind(channel)
    .bind(devices as i32)
    .bind(now)
    .execute(&mut connection)
    .await?;
    sqlx::query(
        "insert into control.alert_rules (tenant_id, name, kind, condition, threshold, \
           next_evaluation_at) \
         select $1, 'health rule ' || i, 'pipeline', \
           (array['source_disconnected', 'lag_above', 'retained_wal_above', 'slot_at_risk'])[i % 4 + 1], \
           case when i % 4 <> 3 then 5 end, $3 \
         from generate_series(1, $2) i",
    )
    .bind(tenant.as_uuid())
    .bind(pipeline_rules as i64)
    .bind(now)
    .execute(&mut connection)
    .await?;
    connection.close().await?;
    Ok(AlertSeed {
        metric_rules,
        pipeline_rules,
    })
}

/// Makes every enabled rule due at `at` (the next benchmark round).
pub async fn make_rules_due(
    database: &ServiceDb,
    at: time::OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("update control.alert_rules set next_evaluation_at = $1 where enabled")
            .bind(at)
            .execute(database.pool())
            .await?
            .rows_affected(),
    )
}

/// Seeds, as the administrative login, `tenant` with what `tributary-bench export` exports:
/// `devices` devices reading `power_kw` and `voltage_v` every minute of the `minutes` before
/// `now` (`2 × devices × minutes` rows of `analytics.metrics_min`), and analyzes the table.
pub async fn seed_metric_minutes(
    settings: &ConnectionSettings,
    tenant: TenantId,
    devices: i32,
    minutes: i32,
    now: time::OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut connection = admin(settings).await?;
    let inserted = sqlx::query(
        "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
           minute, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
           last_pos_lsn, last_pos_seq) \
         select $1, 'device', 'd' || n, key, date_trunc('minute', $4) - make_interval(mins => m), \
           n * 1.5 + m * 0.25, n * 1.5 + m * 0.25, 1 + m % 4, n + 0.5, n + m * 0.01, m * 0.125, \
           m, 0 \
         from generate_series(1, $2) n, generate_series(1, $3) m, \
           unnest(array['power_kw', 'voltage_v']) key",
    )
    .bind(tenant.as_uuid())
    .bind(devices)
    .bind(minutes)
    .bind(now)
    .execute(&mut connection)
    .await?
    .rows_affected();
    sqlx::query("analyze analytics.metrics_min")
        .execute(&mut connection)
        .await?;
    Ok(inserted)
}

/// PostgreSQL's own `COPY (query) TO STDOUT (FORMAT csv, HEADER)` of the rows a
/// `metrics_minute` report of `tenant` over `from`-`to` selects, as the service role, read to
/// the end and dropped: the export benchmark's baseline. Returns the rows and bytes.
pub async fn copy_out_metric_minutes(
    database: &ServiceDb,
    tenant: TenantId,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> Result<(u64, u64), StoreError> {
    use futures_util::TryStreamExt;
    let format = time::format_description::well_known::Rfc3339;
    let (from, to) = (
        from.format(&format)
            .map_err(|_| StoreError::Invalid("from".into()))?,
        to.format(&format)
            .map_err(|_| StoreError::Invalid("to".into()))?,
    );
    // COPY takes no parameters: the tenant and the range are formatted values, never input.
    let statement = format!(
        "copy (select minute, entity_kind, entity_id, metric_key, value_count, value_sum, \
             value_min, value_max, value_sum / value_count, last_value \
           from analytics.metrics_min where tenant_id = '{}' and minute >= '{from}' \
             and minute < '{to}' order by minute, entity_kind, entity_id, metric_key) \
         to stdout (format csv, header)",
        tenant.as_uuid()
    );
    let mut connection = database.pool().acquire().await?;
    let mut stream = connection.copy_out_raw(&statement).await?;
    let (mut bytes, mut lines) = (0_u64, 0_u64);
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|byte| **byte == b'\n').count() as u64;
    }
    Ok((lines.saturating_sub(1), bytes))
}
