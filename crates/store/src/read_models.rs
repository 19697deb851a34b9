//! The tenant read models' storage: the materializer's entity states and what it derives from
//! them (`analytics.sites/devices/sessions`, the typed extras, metric readings and
//! `analytics.metrics_min`), the source-to-read-model mappings people edit (audited), and the
//! checksums a rebuild is compared by.
//!
//! The materializer decides what to write (crate `pipeline`); this module only stores it. Rows
//! travel as JSON arrays expanded by `jsonb_to_recordset`, every value bound, none spliced.

use std::collections::{BTreeMap, HashMap};

use domain::{SourceId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{Database, StoreError, TenantTx};

/// One stored mapping of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRow {
    pub source_id: Uuid,
    /// `table` or `schema.table`.
    pub source_table: String,
    /// site, device, session, reading or ignore.
    pub entity_kind: String,
    /// The source column holding the entity (or reading) id; `None` = by convention.
    pub id_column: Option<String>,
    /// Source column -> typed column.
    pub columns: BTreeMap<String, String>,
    /// For readings: the kind of entity a reading belongs to (default device).
    pub reading_entity_kind: Option<String>,
}

/// The typed columns of each entity kind, with their types (`text`, `number`, `time`): what a
/// mapping may name. The materializer's `EntityKind::typed_columns` is the same table with
/// types it converts to (a pipeline test checks they agree).
pub const TYPED_COLUMNS: &[(&str, &[(&str, &str)])] = &[
    (
        "site",
        &[
            ("name", "text"),
            ("region", "text"),
            ("timezone", "text"),
            ("latitude", "number"),
            ("longitude", "number"),
        ],
    ),
    (
        "device",
        &[
            ("site_id", "text"),
            ("name", "text"),
            ("kind", "text"),
            ("model", "text"),
            ("status", "text"),
            ("firmware", "text"),
            ("last_seen_at", "time"),
        ],
    ),
    (
        "session",
        &[
            ("device_id", "text"),
            ("site_id", "text"),
            ("status", "text"),
            ("started_at", "time"),
            ("ended_at", "time"),
        ],
    ),
    (
        "reading",
        &[
            ("entity_id", "text"),
            ("metric_key", "text"),
            ("value", "number"),
            ("measured_at", "time"),
        ],
    ),
];

/// Checks a mapping before it is stored: a known kind, typed columns the kind has, no typed
/// column fed by two source columns, no id column that also feeds a typed column. The message
/// names columns, never values.
pub fn validate_mapping(row: &MappingRow) -> Result<(), String> {
    let name_ok = |name: &str| !name.is_empty() && name.chars().count() <= 200;
    if !name_ok(&row.source_table) {
        return Err("source_table must be 1 to 200 characters".into());
    }
    if row.entity_kind == "ignore" {
        if !row.columns.is_empty() || row.id_column.is_some() || row.reading_entity_kind.is_some() {
            return Err("an ignored table maps no columns".into());
        }
        return Ok(());
    }
    let Some((_, typed_columns)) = TYPED_COLUMNS
        .iter()
        .find(|(kind, _)| *kind == row.entity_kind)
    else {
        return Err("entity_kind must be one of site, device, session, reading, ignore".into());
    };
    if let Some(id_column) = &row.id_column {
        if !name_ok(id_column) {
            return Err("id_column must be 1 to 200 characters".into());
        }
        if row.columns.contains_key(id_column) {
            return Err(format!(
                "the id column {id_column:?} cannot also feed a typed column"
            ));
        }
    }
    match (row.reading_entity_kind.as_deref(), row.entity_kind.as_str()) {
        (None, _) => {}
        (Some("site" | "device" | "session"), "reading") => {}
        (Some(_), "reading") => {
            return Err("reading_entity_kind must be site, device or session".into());
        }
        (Some(_), _) => return Err("reading_entity_kind applies to readings only".into()),
    }
    let mut fed = BTreeMap::new();
    for (source_column, typed_column) in &row.columns {
        if !name_ok(source_column) {
            return Err("source column names must be 1 to 200 characters".into());
        }
        if !typed_columns.iter().any(|(name, _)| name == typed_column) {
            let known: Vec<&str> = typed_columns.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "{typed_column:?} is not a typed column of a {}: one of {}",
                row.entity_kind,
                known.join(", ")
            ));
        }
        if let Some(other) = fed.insert(typed_column.as_str(), source_column.as_str()) {
            return Err(format!(
                "mapping conflict: {typed_column:?} is fed by both {other:?} and {source_column:?}"
            ));
        }
    }
    Ok(())
}

/// Every mapping of the given tenants, for the materializer (service role).
pub async fn mappings_of(
    database: &Database,
    tenants: &[TenantId],
) -> Result<Vec<(TenantId, MappingRow)>, StoreError> {
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    let rows = sqlx::query(
        "select tenant_id, source_id, source_table, entity_kind, id_column, columns, \
                reading_entity_kind \
         from control.read_model_mappings where tenant_id = any($1)",
    )
    .bind(&tenant_ids)
    .fetch_all(database.service_pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                TenantId::from_uuid(row.try_get("tenant_id")?),
                mapping_from_row(row)?,
            ))
        })
        .collect()
}

fn mapping_from_row(row: &sqlx::postgres::PgRow) -> Result<MappingRow, StoreError> {
    let columns: serde_json::Value = row.try_get("columns")?;
    Ok(MappingRow {
        source_id: row.try_get("source_id")?,
        source_table: row.try_get("source_table")?,
        entity_kind: row.try_get("entity_kind")?,
        id_column: row.try_get("id_column")?,
        columns: serde_json::from_value(columns)
            .map_err(|_| StoreError::Invalid("a stored mapping's columns are not a map".into()))?,
        reading_entity_kind: row.try_get("reading_entity_kind")?,
    })
}

/// The transaction's tenant's mappings, by source and table.
pub async fn list_mappings(tx: &mut TenantTx) -> Result<Vec<MappingRow>, StoreError> {
    let rows = sqlx::query(
        "select source_id, source_table, entity_kind, id_column, columns, reading_entity_kind \
         from control.read_model_mappings order by tenant_id, source_id, source_table",
    )
    .fetch_all(tx.connection())
    .await?;
    rows.iter().map(mapping_from_row).collect()
}

/// Creates or replaces the mapping of one source table, once [`validate_mapping`] accepts it;
/// audited.
pub async fn put_mapping(tx: &mut TenantTx, mapping: &MappingRow) -> Result<(), StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a mapping needs a tenant scope"))?;
    validate_mapping(mapping).map_err(StoreError::Invalid)?;
    let columns = serde_json::to_value(&mapping.columns)
        .map_err(|_| StoreError::Invalid("columns".into()))?;
    sqlx::query(
        "insert into control.read_model_mappings (tenant_id, source_id, source_table, \
             entity_kind, id_column, columns, reading_entity_kind) \
         values ($1, $2, $3, $4, $5, $6, $7) \
         on conflict (tenant_id, source_id, source_table) do update \
             set entity_kind = excluded.entity_kind, id_column = excluded.id_column, \
                 columns = excluded.columns, \
                 reading_entity_kind = excluded.reading_entity_kind, updated_at = now()",
    )
    .bind(tenant.as_uuid())
    .bind(mapping.source_id)
    .bind(&mapping.source_table)
    .bind(&mapping.entity_kind)
    .bind(&mapping.id_column)
    .bind(&columns)
    .bind(&mapping.reading_entity_kind)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new(
            "mapping.put",
            format!("{}/{}", mapping.source_id, mapping.source_table),
        )
        .details(serde_json::json!({
            "entity_kind": mapping.entity_kind,
            "id_column": mapping.id_column,
            "columns": mapping.columns,
            "reading_entity_kind": mapping.reading_entity_kind,
        })),
    )
    .await?;
    Ok(())
}

/// Removes the mapping of one source table (it maps by convention again); audited.
pub async fn delete_mapping(
    tx: &mut TenantTx,
    source: SourceId,
    source_table: &str,
) -> Result<(), StoreError> {
    let deleted = sqlx::query(
        "delete from control.read_model_mappings where source_id = $1 and source_table = $2",
    )
    .bind(source.as_uuid())
    .bind(source_table)
    .execute(tx.connection())
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("mapping"));
    }
    audit::append(
        tx,
        AuditEntry::new("mapping.delete", format!("{source}/{source_table}")),
    )
    .await?;
    Ok(())
}

/// An entity state's key: (tenant, kind, id).
pub type EntityKey = (TenantId, String, String);

/// One bucket of `analytics.metrics_min`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bucket {
    pub tenant_id: Uuid,
    pub entity_kind: String,
    pub entity_id: String,
    pub metric_key: String,
    /// RFC 3339, whole minute.
    pub minute: String,
}

/// What the materializer writes for a set of entities, all in one transaction.
#[derive(Debug, Default)]
pub struct EntityWrites {
    /// New states, by key.
    pub states: Vec<(EntityKey, serde_json::Value)>,
    /// Typed rows as JSON objects with the table's column names, per table
    /// (`sites`, `devices`, `sessions`).
    pub typed: BTreeMap<&'static str, Vec<serde_json::Value>>,
    /// Entities whose extras are replaced: (tenant, entity kind, entity id).
    pub extras_replaced: Vec<(TenantId, &'static str, String)>,
    /// New extras per table (`text`, `num`, `bool`, `time`):
    /// `{tenant_id, entity_kind, entity_id, key, value}` objects.
    pub extras: BTreeMap<&'static str, Vec<serde_json::Value>>,
    /// Readings whose stored row is replaced: (tenant, reading id).
    pub readings_replaced: Vec<(TenantId, String)>,
    /// New reading rows (`pipeline.metric_readings` columns).
    pub readings: Vec<serde_json::Value>,
}

/// A transaction of the materializer (service role), holding its tenants' materializer locks.
#[derive(Debug)]
pub struct MaterializeTx {
    transaction: Transaction<'static, Postgres>,
}

impl MaterializeTx {
    /// Begins, and takes the materializer lock of each tenant (in a fixed order, so two
    /// transactions never deadlock): one tenant's entities are written by one transaction at a
    /// time, whichever consumer, replay or rebuild it belongs to.
    pub async fn begin(database: &Database, tenants: &[TenantId]) -> Result<Self, StoreError> {
        let mut transaction = database.service_pool().begin().await?;
        sqlx::query("set local synchronous_commit = on")
            .execute(&mut *transaction)
            .await?;
        let mut tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            sqlx::query("select pg_advisory_xact_lock(hashtext('materializer'), hashtext($1))")
                .bind(tenant.to_string())
                .execute(&mut *transaction)
                .await?;
        }
        Ok(Self { transaction })
    }

    /// The stored states of `keys` (missing ones are absent). Looked up per (tenant, kind) with
    /// `= any(ids)`, which PostgreSQL always answers from the primary key, whatever it knows of
    /// the table's size (a join with the batch might scan the whole table).
    pub async fn load_states(
        &mut self,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, serde_json::Value>, StoreError> {
        let mut groups: BTreeMap<(Uuid, &str), Vec<&str>> = BTreeMap::new();
        for (tenant, kind, id) in keys {
            groups
                .entry((*tenant.as_uuid(), kind.as_str()))
                .or_default()
                .push(id.as_str());
        }
        let mut states = HashMap::with_capacity(keys.len());
        for ((tenant, kind), ids) in groups {
            let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
                "select entity_id, state from pipeline.entity_state \
                 where tenant_id = $1 and entity_kind = $2 and entity_id = any($3)",
            )
            .bind(tenant)
            .bind(kind)
            .bind(&ids)
            .fetch_all(&mut *self.transaction)
            .await?;
            for (id, state) in rows {
                states.insert((TenantId::from_uuid(tenant), kind.to_owned(), id), state);
            }
        }
        Ok(states)
    }

    /// Writes everything the materializer derived, recomputes the touched minutes of
    /// `metrics_min` from the readings, and marks them for the aggregator.
    pub async fn write(&mut self, writes: &EntityWrites) -> Result<(), StoreError> {
        let connection = &mut *self.transaction;
        if !writes.states.is_empty() {
            let tenants: Vec<Uuid> = writes.states.iter().map(|(k, _)| *k.0.as_uuid()).collect();
            let kinds: Vec<&str> = writes.states.iter().map(|(k, _)| k.1.as_str()).collect();
            let ids: Vec<&str> = writes.states.iter().map(|(k, _)| k.2.as_str()).collect();
            let states: Vec<&serde_json::Value> = writes.states.iter().map(|(_, s)| s).collect();
            sqlx::query(
                "insert into pipeline.entity_state (tenant_id, entity_kind, entity_id, state) \
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) \
                 on conflict (tenant_id, entity_kind, entity_id) \
                 do update set state = excluded.state",
            )
            .bind(&tenants)
            .bind(&kinds)
            .bind(&ids)
            .bind(&states)
            .execute(&mut *connection)
            .await?;
        }
        for (table, rows) in &writes.typed {
            if rows.is_empty() {
                continue;
            }
            let statement = match *table {
                "sites" => UPSERT_SITES,
                "devices" => UPSERT_DEVICES,
                "sessions" => UPSERT_SESSIONS,
                _ => return Err(StoreError::Invalid(format!("no typed table {table}"))),
            };
            sqlx::query(statement)
                .bind(serde_json::Value::Array(rows.clone()))
                .execute(&mut *connection)
                .await?;
        }
        let mut replaced: BTreeMap<(Uuid, &str), Vec<&str>> = BTreeMap::new();
        for (tenant, kind, id) in &writes.extras_replaced {
            replaced
                .entry((*tenant.as_uuid(), *kind))
                .or_default()
                .push(id.as_str());
        }
        for ((tenant, kind), ids) in &replaced {
            for statement in DELETE_EXTRAS {
                sqlx::query(statement)
                    .bind(tenant)
                    .bind(kind)
                    .bind(ids)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        for (table, rows) in &writes.extras {
            if rows.is_empty() {
                continue;
            }
            let statement = match *table {
                "text" => INSERT_EXTRAS_TEXT,
                "num" => INSERT_EXTRAS_NUM,
                "bool" => INSERT_EXTRAS_BOOL,
                "time" => INSERT_EXTRAS_TIME,
                _ => return Err(StoreError::Invalid(format!("no extras table {table}"))),
            };
            sqlx::query(statement)
                .bind(serde_json::Value::Array(rows.clone()))
                .execute(&mut *connection)
                .await?;
        }
        if writes.readings_replaced.is_empty() && writes.readings.is_empty() {
            return Ok(());
        }
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut replaced: BTreeMap<Uuid, Vec<&str>> = BTreeMap::new();
        for (tenant, reading) in &writes.readings_replaced {
            replaced
                .entry(*tenant.as_uuid())
                .or_default()
                .push(reading.as_str());
        }
        for (tenant, readings) in &replaced {
            let old: Vec<(Uuid, String, String, String, time::OffsetDateTime)> = sqlx::query_as(
                "delete from pipeline.metric_readings \
                 where tenant_id = $1 and reading_id = any($2) \
                 returning tenant_id, entity_kind, entity_id, metric_key, minute",
            )
            .bind(tenant)
            .bind(readings)
            .fetch_all(&mut *connection)
            .await?;
            for (tenant_id, entity_kind, entity_id, metric_key, minute) in old {
                buckets.push(Bucket {
                    tenant_id,
                    entity_kind,
                    entity_id,
                    metric_key,
                    minute: minute
                        .format(&time::format_description::well_known::Rfc3339)
                        .map_err(|_| StoreError::Invalid("a stored minute".into()))?,
                });
            }
        }
        if !writes.readings.is_empty() {
            let new: Vec<(Uuid, String, String, String, time::OffsetDateTime)> = sqlx::query_as(
                "insert into pipeline.metric_readings (tenant_id, reading_id, entity_kind, \
                     entity_id, metric_key, minute, measured_at, value, pos_lsn, pos_seq) \
                 select tenant_id, reading_id, entity_kind, entity_id, metric_key, \
                        date_trunc('minute', measured_at), measured_at, value, pos_lsn, pos_seq \
                 from jsonb_to_recordset($1) as r(tenant_id uuid, reading_id text, \
                     entity_kind text, entity_id text, metric_key text, measured_at timestamptz, \
                     value double precision, pos_lsn bigint, pos_seq integer) \
                 returning tenant_id, entity_kind, entity_id, metric_key, minute",
            )
            .bind(serde_json::Value::Array(writes.readings.clone()))
            .fetch_all(&mut *connection)
            .await?;
            for (tenant_id, entity_kind, entity_id, metric_key, minute) in new {
                buckets.push(Bucket {
                    tenant_id,
                    entity_kind,
                    entity_id,
                    metric_key,
                    minute: minute
                        .format(&time::format_description::well_known::Rfc3339)
                        .map_err(|_| StoreError::Invalid("a stored minute".into()))?,
                });
            }
        }
        buckets.sort();
        buckets.dedup();
        recompute_buckets(connection, &buckets).await
    }

    /// Deletes every read model of `tenant` (before a rebuild), marking its minutes for the
    /// aggregator. Other tenants' rows are not touched.
    pub async fn clear_tenant(&mut self, tenant: TenantId) -> Result<(), StoreError> {
        let connection = &mut *self.transaction;
        sqlx::query(
            "insert into pipeline.rollup_dirty (metric_key, minute) \
             select distinct metric_key, minute from analytics.metrics_min where tenant_id = $1 \
             order by metric_key, minute on conflict do nothing",
        )
        .bind(tenant.as_uuid())
        .execute(&mut *connection)
        .await?;
        for statement in CLEAR_TENANT {
            sqlx::query(statement)
                .bind(tenant.as_uuid())
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }
}

const CLEAR_TENANT: [&str; 10] = [
    "delete from pipeline.entity_state where tenant_id = $1",
    "delete from pipeline.metric_readings where tenant_id = $1",
    "delete from analytics.metrics_min where tenant_id = $1",
    "delete from analytics.sites where tenant_id = $1",
    "delete from analytics.devices where tenant_id = $1",
    "delete from analytics.sessions where tenant_id = $1",
    "delete from analytics.extras_text where tenant_id = $1",
    "delete from analytics.extras_num where tenant_id = $1",
    "delete from analytics.extras_bool where tenant_id = $1",
    "delete from analytics.extras_time where tenant_id = $1",
];

/// Recomputes `buckets` of `metrics_min` from the stored readings (a bucket left without
/// readings disappears), and marks their (key, minute) for the aggregator (in one order, so two
/// transactions marking the same minutes wait for each other instead of deadlocking).
///
/// Per tenant, the statements select by `= any` on each key column (entity kinds, ids, metric
/// keys, minutes), which PostgreSQL answers from the index whatever it knows of the table's size.
/// That covers every touched bucket and possibly some untouched ones of the same entities and
/// minutes: recomputing those gives the same rows again, so the result is exact either way. Sums
/// are taken in a fixed order, so the same readings give the same bits.
async fn recompute_buckets(
    connection: &mut sqlx::PgConnection,
    buckets: &[Bucket],
) -> Result<(), StoreError> {
    if buckets.is_empty() {
        return Ok(());
    }
    type Columns<'a> = (
        std::collections::BTreeSet<&'a str>,
        std::collections::BTreeSet<&'a str>,
        std::collections::BTreeSet<&'a str>,
        std::collections::BTreeSet<&'a str>,
    );
    let mut per_tenant: BTreeMap<Uuid, Columns<'_>> = BTreeMap::new();
    for bucket in buckets {
        let columns = per_tenant.entry(bucket.tenant_id).or_default();
        columns.0.insert(&bucket.entity_kind);
        columns.1.insert(&bucket.entity_id);
        columns.2.insert(&bucket.metric_key);
        columns.3.insert(&bucket.minute);
    }
    for (tenant, (kinds, ids, keys, minutes)) in &per_tenant {
        let kinds: Vec<&str> = kinds.iter().copied().collect();
        let ids: Vec<&str> = ids.iter().copied().collect();
        let keys: Vec<&str> = keys.iter().copied().collect();
        let minutes = minutes
            .iter()
            .map(|minute| {
                time::OffsetDateTime::parse(minute, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| StoreError::Invalid("a bucket minute".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query(
            "delete from analytics.metrics_min \
             where tenant_id = $1 and entity_kind = any($2) and entity_id = any($3) \
               and metric_key = any($4) and minute = any($5)",
        )
        .bind(tenant)
        .bind(&kinds)
        .bind(&ids)
        .bind(&keys)
        .bind(&minutes)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
                 minute, value_sum, value_count, value_min, value_max, last_value, last_pos_lsn, \
                 last_pos_seq) \
             select r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute, \
                    sum(r.value order by r.reading_id), count(*), min(r.value), max(r.value), \
                    (array_agg(r.value order by r.measured_at desc, r.pos_lsn desc, \
                               r.pos_seq desc, r.reading_id desc))[1], \
                    (array_agg(r.pos_lsn order by r.measured_at desc, r.pos_lsn desc, \
                               r.pos_seq desc, r.reading_id desc))[1], \
                    (array_agg(r.pos_seq order by r.measured_at desc, r.pos_lsn desc, \
                               r.pos_seq desc, r.reading_id desc))[1] \
             from pipeline.metric_readings r \
             where r.tenant_id = $1 and r.entity_kind = any($2) and r.entity_id = any($3) \
               and r.metric_key = any($4) and r.minute = any($5) \
             group by r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute",
        )
        .bind(tenant)
        .bind(&kinds)
        .bind(&ids)
        .bind(&keys)
        .bind(&minutes)
        .execute(&mut *connection)
        .await?;
    }
    let buckets =
        serde_json::to_value(buckets).map_err(|_| StoreError::Invalid("bucket".into()))?;
    sqlx::query(
        "insert into pipeline.rollup_dirty (metric_key, minute) \
         select distinct metric_key, minute from jsonb_to_recordset($1) \
             as b(metric_key text, minute timestamptz) \
         order by metric_key, minute \
         on conflict do nothing",
    )
    .bind(&buckets)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

const UPSERT_SITES: &str = "insert into analytics.sites (tenant_id, site_id, source_id, name, \
         region, timezone, latitude, longitude, pos_lsn, pos_seq, deleted_at) \
     select * from jsonb_to_recordset($1) as r(tenant_id uuid, site_id text, source_id uuid, \
         name text, region text, timezone text, latitude double precision, \
         longitude double precision, pos_lsn bigint, pos_seq integer, deleted_at timestamptz) \
     on conflict (tenant_id, site_id) do update set source_id = excluded.source_id, \
         name = excluded.name, region = excluded.region, timezone = excluded.timezone, \
         latitude = excluded.latitude, longitude = excluded.longitude, \
         pos_lsn = excluded.pos_lsn, pos_seq = excluded.pos_seq, \
         deleted_at = excluded.deleted_at, updated_at = now()";

const UPSERT_DEVICES: &str = "insert into analytics.devices (tenant_id, device_id, source_id, \
         site_id, name, kind, model, status, firmware, last_seen_at, pos_lsn, pos_seq, deleted_at) \
     select * from jsonb_to_recordset($1) as r(tenant_id uuid, device_id text, source_id uuid, \
         site_id text, name text, kind text, model text, status text, firmware text, \
         last_seen_at timestamptz, pos_lsn bigint, pos_seq integer, deleted_at timestamptz) \
     on conflict (tenant_id, device_id) do update set source_id = excluded.source_id, \
         site_id = excluded.site_id, name = excluded.name, kind = excluded.kind, \
         model = excluded.model, status = excluded.status, firmware = excluded.firmware, \
         last_seen_at = excluded.last_seen_at, pos_lsn = excluded.pos_lsn, \
         pos_seq = excluded.pos_seq, deleted_at = excluded.deleted_at, updated_at = now()";

const UPSERT_SESSIONS: &str = "insert into analytics.sessions (tenant_id, session_id, \
         source_id, device_id, site_id, status, started_at, ended_at, pos_lsn, pos_seq, \
         deleted_at) \
     select * from jsonb_to_recordset($1) as r(tenant_id uuid, session_id text, source_id uuid, \
         device_id text, site_id text, status text, started_at timestamptz, \
         ended_at timestamptz, pos_lsn bigint, pos_seq integer, deleted_at timestamptz) \
     on conflict (tenant_id, session_id) do update set source_id = excluded.source_id, \
         device_id = excluded.device_id, site_id = excluded.site_id, status = excluded.status, \
         started_at = excluded.started_at, ended_at = excluded.ended_at, \
         pos_lsn = excluded.pos_lsn, pos_seq = excluded.pos_seq, \
         deleted_at = excluded.deleted_at, updated_at = now()";

const DELETE_EXTRAS: [&str; 4] = [
    "delete from analytics.extras_text \
     where tenant_id = $1 and entity_kind = $2 and entity_id = any($3)",
    "delete from analytics.extras_num \
     where tenant_id = $1 and entity_kind = $2 and entity_id = any($3)",
    "delete from analytics.extras_bool \
     where tenant_id = $1 and entity_kind = $2 and entity_id = any($3)",
    "delete from analytics.extras_time \
     where tenant_id = $1 and entity_kind = $2 and entity_id = any($3)",
];

const INSERT_EXTRAS_TEXT: &str = "insert into analytics.extras_text \
     (tenant_id, entity_kind, entity_id, key, value) \
     select * from jsonb_to_recordset($1) \
         as r(tenant_id uuid, entity_kind text, entity_id text, key text, value text)";
const INSERT_EXTRAS_NUM: &str = "insert into analytics.extras_num \
     (tenant_id, entity_kind, entity_id, key, value) \
     select * from jsonb_to_recordset($1) \
         as r(tenant_id uuid, entity_kind text, entity_id text, key text, \
              value double precision)";
const INSERT_EXTRAS_BOOL: &str = "insert into analytics.extras_bool \
     (tenant_id, entity_kind, entity_id, key, value) \
     select * from jsonb_to_recordset($1) \
         as r(tenant_id uuid, entity_kind text, entity_id text, key text, value boolean)";
const INSERT_EXTRAS_TIME: &str = "insert into analytics.extras_time \
     (tenant_id, entity_kind, entity_id, key, value) \
     select * from jsonb_to_recordset($1) \
         as r(tenant_id uuid, entity_kind text, entity_id text, key text, value timestamptz)";

/// A content checksum of each of a tenant's read models (everything but the write time and the
/// tenant id), by table: what a rebuild must reproduce exactly.
pub async fn checksums(
    database: &Database,
    tenant: TenantId,
) -> Result<BTreeMap<&'static str, (i64, String)>, StoreError> {
    let mut checksums = BTreeMap::new();
    for (table, statement) in CHECKSUMS {
        let (count, checksum): (i64, Option<String>) = sqlx::query_as(statement)
            .bind(tenant.as_uuid())
            .fetch_one(database.service_pool())
            .await?;
        checksums.insert(table, (count, checksum.unwrap_or_default()));
    }
    Ok(checksums)
}

const CHECKSUMS: [(&str, &str); 8] = [
    (
        "analytics.sites",
        "select count(*), md5(string_agg(row(site_id, source_id, name, region, timezone, \
             latitude, longitude, pos_lsn, pos_seq, deleted_at)::text, '|' order by site_id)) \
         from analytics.sites where tenant_id = $1",
    ),
    (
        "analytics.devices",
        "select count(*), md5(string_agg(row(device_id, source_id, site_id, name, kind, model, \
             status, firmware, last_seen_at, pos_lsn, pos_seq, deleted_at)::text, '|' \
             order by device_id)) \
         from analytics.devices where tenant_id = $1",
    ),
    (
        "analytics.sessions",
        "select count(*), md5(string_agg(row(session_id, source_id, device_id, site_id, status, \
             started_at, ended_at, pos_lsn, pos_seq, deleted_at)::text, '|' \
             order by session_id)) \
         from analytics.sessions where tenant_id = $1",
    ),
    (
        "analytics.metrics_min",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, metric_key, minute, \
             value_sum, value_count, value_min, value_max, last_value, last_pos_lsn, \
             last_pos_seq)::text, '|' order by entity_kind, entity_id, metric_key, minute)) \
         from analytics.metrics_min where tenant_id = $1",
    ),
    (
        "analytics.extras_text",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, key, value)::text, '|' \
             order by entity_kind, entity_id, key)) \
         from analytics.extras_text where tenant_id = $1",
    ),
    (
        "analytics.extras_num",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, key, value)::text, '|' \
             order by entity_kind, entity_id, key)) \
         from analytics.extras_num where tenant_id = $1",
    ),
    (
        "analytics.extras_bool",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, key, value)::text, '|' \
             order by entity_kind, entity_id, key)) \
         from analytics.extras_bool where tenant_id = $1",
    ),
    (
        "analytics.extras_time",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, key, value)::text, '|' \
             order by entity_kind, entity_id, key)) \
         from analytics.extras_time where tenant_id = $1",
    ),
];
