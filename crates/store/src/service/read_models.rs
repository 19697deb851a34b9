//! The materializer's writes to the tenant read models (service handle): entity states and what
//! derives from them (`analytics.sites/devices/sessions`, the typed extras, metric readings and
//! `analytics.metrics_min` and its hourly rollup `analytics.metrics_hour`), the mappings it reads,
//! and the checksums a rebuild is compared by.
//!
//! The materializer decides what to write (crate `pipeline`); this module only stores it, a
//! whole batch per statement: rows travel as arrays expanded by `unnest` (typed rows as JSON
//! arrays expanded by `jsonb_to_recordset`), every value bound, none spliced.

use std::collections::{BTreeMap, HashMap};

use domain::TenantId;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::read_models::{MappingRow, StoredMapping};
use crate::{ServiceDb, StoreError};

/// Every mapping of the given tenants, for the materializer (service role).
pub async fn mappings_of(
    database: &ServiceDb,
    tenants: &[TenantId],
) -> Result<Vec<(TenantId, MappingRow)>, StoreError> {
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
    let rows: Vec<TenantMapping> = sqlx::query_as(
        "select tenant_id, source_id, source_table, entity_kind, id_column, columns, \
                reading_entity_kind \
         from control.read_model_mappings where tenant_id = any($1)",
    )
    .bind(&tenant_ids)
    .fetch_all(database.pool())
    .await?;
    rows.into_iter()
        .map(|row| Ok((row.tenant_id, MappingRow::try_from(row.mapping)?)))
        .collect()
}

/// A stored mapping with its tenant.
#[derive(sqlx::FromRow)]
struct TenantMapping {
    #[sqlx(try_from = "Uuid")]
    tenant_id: TenantId,
    #[sqlx(flatten)]
    mapping: StoredMapping,
}

/// An entity state's key: (tenant, kind, id).
pub type EntityKey = (TenantId, String, String);

/// One bucket of `analytics.metrics_min` (tenant, entity kind, entity id, metric key, minute),
/// or of `analytics.metrics_hour` (the same with the hour).
type BucketKey = (Uuid, String, String, String, OffsetDateTime);

/// A metric reading's row in `pipeline.metric_readings`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub tenant_id: Uuid,
    /// `<source>:<id>`: reading ids are only unique within their source.
    pub reading_id: String,
    pub entity_kind: &'static str,
    pub entity_id: String,
    pub metric_key: String,
    pub measured_at: OffsetDateTime,
    pub value: f64,
    pub pos_lsn: i64,
    pub pos_seq: i32,
    /// The reading's materialized state (JSON text), kept in its row rather than in
    /// `pipeline.entity_state`: a reading is written once, not twice.
    pub state: String,
}

/// Where an entity's materialized state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePlace {
    /// `pipeline.entity_state`: sites, devices, sessions, and readings without a reading row
    /// (deleted, or lacking a field a reading needs), or stored before reading rows kept theirs.
    Entities,
    /// The reading's own row in `pipeline.metric_readings`.
    ReadingRow,
}

/// A stored entity state: its JSON text and where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub text: String,
    pub place: StatePlace,
}

/// A typed extra's value; its variant is the extras table it lands in.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraValue {
    Text(String),
    Num(f64),
    Bool(bool),
    Time(OffsetDateTime),
}

/// One row of the typed extras.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraRow {
    pub tenant_id: Uuid,
    pub entity_kind: &'static str,
    pub entity_id: String,
    pub key: String,
    pub value: ExtraValue,
}

/// The newest truncate of a source table the materializer applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTruncate {
    pub tenant_id: TenantId,
    pub source_id: Uuid,
    /// `schema.table`, as the source named it.
    pub source_table: String,
    pub pos_lsn: i64,
    pub pos_seq: i32,
    pub truncated_at: OffsetDateTime,
}

/// What the materializer writes for a set of entities, all in one transaction. Each entity,
/// reading and truncate appears at most once.
#[derive(Debug, Default)]
pub struct EntityWrites {
    /// New states (JSON text) of entities that had a stored state, by key.
    pub states: Vec<(EntityKey, String)>,
    /// States (JSON text) of entities that had none in `pipeline.entity_state`: inserted
    /// without looking for a conflict (the transaction holds the tenants' locks, so none can
    /// appear meanwhile).
    pub new_states: Vec<(EntityKey, String)>,
    /// Readings whose state moves from `pipeline.entity_state` into their reading row (written
    /// with [`EntityWrites::readings`]): removed from `entity_state`.
    pub moved_states: Vec<EntityKey>,
    /// Typed rows as JSON objects with the table's column names, per table
    /// (`sites`, `devices`, `sessions`).
    pub typed: BTreeMap<&'static str, Vec<serde_json::Value>>,
    /// Entities whose extras are replaced: (tenant, entity kind, entity id).
    pub extras_replaced: Vec<(TenantId, &'static str, String)>,
    /// Their new extras.
    pub extras: Vec<ExtraRow>,
    /// Readings whose stored row, if any, is replaced or removed: (tenant, reading id). A
    /// reading has a stored row only if it had a stored state, so new readings need not be
    /// listed.
    pub readings_replaced: Vec<(TenantId, String)>,
    /// New reading rows.
    pub readings: Vec<ReadingRow>,
    /// Truncates newer than the stored one of their table.
    pub truncates: Vec<SourceTruncate>,
    /// Events of tables with no mapping, counted per table: added to `pipeline.unmapped_tables`.
    pub unmapped: Vec<UnmappedCount>,
    /// Fields that landed in the typed extras, counted per field and JSON type: added to
    /// `pipeline.drift_fields` (the schema-drift inbox).
    pub drift: Vec<DriftCount>,
}

/// Events of one source table that carried one field the typed columns do not claim, with one
/// JSON type, seen in one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftCount {
    pub tenant_id: TenantId,
    pub source_id: Uuid,
    pub schema_name: String,
    pub table_name: String,
    /// site, device or session.
    pub entity_kind: &'static str,
    pub field_name: String,
    /// string, time, number, boolean, array or object.
    pub json_type: &'static str,
    pub events: i64,
    /// The oldest and newest of the events' own times.
    pub first_seen_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// Events of one source table that has no mapping, seen in one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmappedCount {
    pub tenant_id: TenantId,
    pub source_id: Uuid,
    pub schema_name: String,
    pub table_name: String,
    pub events: i64,
    /// The oldest and newest of the events' own times.
    pub first_seen_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// A transaction of the materializer (service role), holding its tenants' materializer locks.
///
/// Every statement covers the whole batch, whatever its tenants, joining the batch's keys
/// (`unnest` of arrays) with the tables. The transaction turns hash and merge joins off, so each
/// key is looked up through the table's index whatever the planner knows (or guesses, in a
/// cached plan) of the table's and the batch's sizes: a join that read the whole table would
/// cost as much as the table is large, every batch.
#[derive(Debug)]
pub struct MaterializeTx {
    transaction: Transaction<'static, Postgres>,
}

impl MaterializeTx {
    /// Begins, and takes the materializer lock of each tenant (in a fixed order, so two
    /// transactions never deadlock): one tenant's entities are written by one transaction at a
    /// time, whichever consumer, replay or rebuild it belongs to.
    pub async fn begin(database: &ServiceDb, tenants: &[TenantId]) -> Result<Self, StoreError> {
        let mut transaction = database.pool().begin().await?;
        let mut tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let tenants: Vec<String> = tenants.iter().map(Uuid::to_string).collect();
        // extra_float_digits > 0 makes `value::text` the shortest decimal that reads back as
        // the same double: the exact sums of metrics_min add those decimals.
        sqlx::query(
            "select set_config('synchronous_commit', 'on', true), \
                    set_config('enable_hashjoin', 'off', true), \
                    set_config('enable_mergejoin', 'off', true), \
                    set_config('extra_float_digits', '1', true), \
                    (select count(pg_advisory_xact_lock(hashtext('materializer'), hashtext(t))) \
                     from unnest($1::text[]) as locks(t))",
        )
        .bind(&tenants)
        .execute(&mut *transaction)
        .await?;
        Ok(Self { transaction })
    }

    /// The stored states of `keys`, from `pipeline.entity_state` or a reading's row; missing
    /// ones are absent.
    pub async fn load_states(
        &mut self,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, StoredState>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let tenants = column(keys, |key| *key.0.as_uuid());
        let kinds = column(keys, |key| key.1.as_str());
        let ids = column(keys, |key| key.2.as_str());
        // A reading's state is in one of the two places (a write that moves it removes the
        // other); when both answered, the reading row's is the one written last.
        let rows: Vec<(i64, String, bool)> = sqlx::query_as(
            "select k.n, s.state, s.in_row \
             from unnest($1::uuid[], $2::text[], $3::text[]) with ordinality \
                 as k(tenant_id, entity_kind, entity_id, n) \
             cross join lateral ( \
                 select e.state::text as state, false as in_row from pipeline.entity_state e \
                 where e.tenant_id = k.tenant_id and e.entity_kind = k.entity_kind \
                     and e.entity_id = k.entity_id \
                 union all \
                 select r.state, true from pipeline.metric_readings r \
                 where k.entity_kind = 'reading' and r.tenant_id = k.tenant_id \
                     and r.reading_id = k.entity_id and r.state is not null \
             ) s \
             order by k.n, s.in_row",
        )
        .bind(&tenants)
        .bind(&kinds)
        .bind(&ids)
        .fetch_all(&mut *self.transaction)
        .await?;
        let mut states = HashMap::with_capacity(rows.len());
        for (ordinal, text, in_row) in rows {
            let key = usize::try_from(ordinal - 1)
                .ok()
                .and_then(|index| keys.get(index))
                .ok_or_else(|| StoreError::Invalid("a state of a key not asked for".into()))?;
            let place = if in_row {
                StatePlace::ReadingRow
            } else {
                StatePlace::Entities
            };
            states.insert(key.clone(), StoredState { text, place });
        }
        Ok(states)
    }

    /// The stored states (JSON text) of `tenant`'s entities of `kind` that the source table
    /// `feed` fed (its name in the states' `feeds`): what a truncate of that table touches.
    pub async fn states_fed_by(
        &mut self,
        tenant: TenantId,
        kind: &str,
        feed: &str,
    ) -> Result<Vec<(EntityKey, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select entity_id, state::text from pipeline.entity_state \
             where tenant_id = $1 and entity_kind = $2 and state -> 'feeds' ? $3",
        )
        .bind(tenant.as_uuid())
        .bind(kind)
        .bind(feed)
        .fetch_all(&mut *self.transaction)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, state)| ((tenant, kind.to_owned(), id), state))
            .collect())
    }

    /// The newest truncate of each source table of `tenants` applied so far.
    pub async fn truncates(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<SourceTruncate>, StoreError> {
        let tenants: Vec<Uuid> = tenants.iter().map(|tenant| *tenant.as_uuid()).collect();
        let rows: Vec<(Uuid, Uuid, String, i64, i32, OffsetDateTime)> = sqlx::query_as(
            "select tenant_id, source_id, source_table, pos_lsn, pos_seq, truncated_at \
             from pipeline.source_truncates where tenant_id = any($1)",
        )
        .bind(&tenants)
        .fetch_all(&mut *self.transaction)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(tenant_id, source_id, source_table, pos_lsn, pos_seq, truncated_at)| {
                    SourceTruncate {
                        tenant_id: TenantId::from_uuid(tenant_id),
                        source_id,
                        source_table,
                        pos_lsn,
                        pos_seq,
                        truncated_at,
                    }
                },
            )
            .collect())
    }

    /// Writes everything the materializer derived, brings the touched minutes of
    /// `metrics_min` and their hours of `metrics_hour` up to date, and marks the minutes for the
    /// aggregator.
    pub async fn write(&mut self, writes: &EntityWrites) -> Result<(), StoreError> {
        let connection = &mut *self.transaction;
        write_states(
            connection,
            &writes.states,
            &writes.new_states,
            &writes.moved_states,
        )
        .await?;
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
        replace_extras(connection, &writes.extras_replaced, &writes.extras).await?;
        write_readings(connection, &writes.readings_replaced, &writes.readings).await?;
        write_truncates(connection, &writes.truncates).await?;
        count_unmapped(&mut *connection, &writes.unmapped).await?;
        count_drift(connection, &writes.drift).await
    }

    /// Deletes every read model of `tenant` (before a rebuild), marking its minutes for the
    /// aggregator. Other tenants' rows are not touched.
    pub async fn clear_tenant(&mut self, tenant: TenantId) -> Result<(), StoreError> {
        let connection = &mut *self.transaction;
        sqlx::query(
            "insert into pipeline.rollup_dirty (metric_key, minute) \
             select distinct metric_key, minute from analytics.metrics_min where tenant_id = $1",
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

const CLEAR_TENANT: [&str; 16] = [
    "delete from pipeline.entity_state where tenant_id = $1",
    // Recounted from bronze by the rebuild; a dismissal is kept, its count starts again.
    "delete from pipeline.drift_fields where tenant_id = $1 and dismissed_at is null",
    "update pipeline.drift_fields set row_count = 0 where tenant_id = $1",
    // Recounted from bronze by the rebuild: what is still unmapped after it.
    "delete from pipeline.unmapped_tables where tenant_id = $1",
    "delete from pipeline.metric_readings where tenant_id = $1",
    "delete from pipeline.source_truncates where tenant_id = $1",
    "delete from analytics.metrics_min where tenant_id = $1",
    "delete from analytics.metrics_hour where tenant_id = $1",
    "delete from analytics.metric_kinds where tenant_id = $1",
    "delete from analytics.sites where tenant_id = $1",
    "delete from analytics.devices where tenant_id = $1",
    "delete from analytics.sessions where tenant_id = $1",
    "delete from analytics.extras_text where tenant_id = $1",
    "delete from analytics.extras_num where tenant_id = $1",
    "delete from analytics.extras_bool where tenant_id = $1",
    "delete from analytics.extras_time where tenant_id = $1",
];

/// Updates the `stored` states, inserts the `new` ones (an insert that need not check for a
/// conflict first costs about half an upsert) and removes the `moved` ones.
async fn write_states(
    connection: &mut sqlx::PgConnection,
    stored: &[(EntityKey, String)],
    new: &[(EntityKey, String)],
    moved: &[EntityKey],
) -> Result<(), StoreError> {
    if !moved.is_empty() {
        sqlx::query(
            "delete from pipeline.entity_state e \
             using unnest($1::uuid[], $2::text[], $3::text[]) as m(tenant_id, entity_kind, entity_id) \
             where e.tenant_id = m.tenant_id and e.entity_kind = m.entity_kind \
                 and e.entity_id = m.entity_id",
        )
        .bind(column(moved, |key| *key.0.as_uuid()))
        .bind(column(moved, |key| key.1.as_str()))
        .bind(column(moved, |key| key.2.as_str()))
        .execute(&mut *connection)
        .await?;
    }
    for (states, statement) in [
        (
            stored,
            "update pipeline.entity_state e set state = s.state::jsonb \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
                 as s(tenant_id, entity_kind, entity_id, state) \
             where e.tenant_id = s.tenant_id and e.entity_kind = s.entity_kind \
                 and e.entity_id = s.entity_id",
        ),
        (
            new,
            "insert into pipeline.entity_state (tenant_id, entity_kind, entity_id, state) \
             select tenant_id, entity_kind, entity_id, state::jsonb \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
                 as s(tenant_id, entity_kind, entity_id, state)",
        ),
    ] {
        if states.is_empty() {
            continue;
        }
        let tenants = column(states, |(key, _)| *key.0.as_uuid());
        let kinds = column(states, |(key, _)| key.1.as_str());
        let ids = column(states, |(key, _)| key.2.as_str());
        let texts = column(states, |(_, state)| state.as_str());
        sqlx::query(statement)
            .bind(&tenants)
            .bind(&kinds)
            .bind(&ids)
            .bind(&texts)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Replaces the extras of `replaced` entities with `extras`: one statement deletes from the
/// four tables, one inserts into them.
async fn replace_extras(
    connection: &mut sqlx::PgConnection,
    replaced: &[(TenantId, &'static str, String)],
    extras: &[ExtraRow],
) -> Result<(), StoreError> {
    if !replaced.is_empty() {
        let tenants = column(replaced, |(tenant, _, _)| *tenant.as_uuid());
        let kinds = column(replaced, |(_, kind, _)| *kind);
        let ids = column(replaced, |(_, _, id)| id.as_str());
        sqlx::query(DELETE_EXTRAS)
            .bind(&tenants)
            .bind(&kinds)
            .bind(&ids)
            .execute(&mut *connection)
            .await?;
    }
    if extras.is_empty() {
        return Ok(());
    }
    /// One extras table's columns.
    struct Columns<'a, T> {
        tenants: Vec<Uuid>,
        kinds: Vec<&'a str>,
        ids: Vec<&'a str>,
        keys: Vec<&'a str>,
        values: Vec<T>,
    }
    impl<'a, T> Columns<'a, T> {
        fn new() -> Self {
            Self {
                tenants: Vec::new(),
                kinds: Vec::new(),
                ids: Vec::new(),
                keys: Vec::new(),
                values: Vec::new(),
            }
        }

        fn push(&mut self, row: &'a ExtraRow, value: T) {
            self.tenants.push(row.tenant_id);
            self.kinds.push(row.entity_kind);
            self.ids.push(&row.entity_id);
            self.keys.push(&row.key);
            self.values.push(value);
        }
    }
    let mut text: Columns<&str> = Columns::new();
    let mut num: Columns<f64> = Columns::new();
    let mut boolean: Columns<bool> = Columns::new();
    let mut time: Columns<OffsetDateTime> = Columns::new();
    for row in extras {
        match &row.value {
            ExtraValue::Text(value) => text.push(row, value.as_str()),
            ExtraValue::Num(value) => num.push(row, *value),
            ExtraValue::Bool(value) => boolean.push(row, *value),
            ExtraValue::Time(value) => time.push(row, *value),
        }
    }
    sqlx::query(INSERT_EXTRAS)
        .bind(&text.tenants)
        .bind(&text.kinds)
        .bind(&text.ids)
        .bind(&text.keys)
        .bind(&text.values)
        .bind(&num.tenants)
        .bind(&num.kinds)
        .bind(&num.ids)
        .bind(&num.keys)
        .bind(&num.values)
        .bind(&boolean.tenants)
        .bind(&boolean.kinds)
        .bind(&boolean.ids)
        .bind(&boolean.keys)
        .bind(&boolean.values)
        .bind(&time.tenants)
        .bind(&time.kinds)
        .bind(&time.ids)
        .bind(&time.keys)
        .bind(&time.values)
        .execute(connection)
        .await?;
    Ok(())
}

/// One column of `rows`, to bind as an array.
fn column<'a, T, U>(rows: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}

/// The columns of a list of buckets, to bind as arrays.
struct BucketColumns<'a> {
    tenants: Vec<Uuid>,
    kinds: Vec<&'a str>,
    ids: Vec<&'a str>,
    keys: Vec<&'a str>,
    minutes: Vec<OffsetDateTime>,
}

impl<'a> BucketColumns<'a> {
    fn of(buckets: &'a [BucketKey]) -> Self {
        BucketColumns {
            tenants: column(buckets, |bucket| bucket.0),
            kinds: column(buckets, |bucket| bucket.1.as_str()),
            ids: column(buckets, |bucket| bucket.2.as_str()),
            keys: column(buckets, |bucket| bucket.3.as_str()),
            minutes: column(buckets, |bucket| bucket.4),
        }
    }
}

/// Replaces and adds reading rows and brings their buckets of `metrics_min` and
/// `metrics_hour` up to date.
///
/// A bucket is a function of the readings it holds: count, exact sum, min, max, last. A bucket
/// that only gains new readings is updated by adding them (each reading counts once: a reading
/// without a stored row was never counted); a bucket that loses a reading (replaced or
/// deleted), or a row written before the exact sum was kept, is recomputed from its readings.
/// Either way the result depends only on the readings, not on the order they came in. Every
/// touched (key, minute) is marked for the aggregator in the same statement (the queue takes
/// duplicates, so marking never waits for another transaction). The hours take what their
/// minutes took; an hour holding a recomputed minute is recomputed from its minutes, so the
/// hourly rollup is exact in the same transaction.
async fn write_readings(
    connection: &mut sqlx::PgConnection,
    replaced: &[(TenantId, String)],
    readings: &[ReadingRow],
) -> Result<(), StoreError> {
    let mut recompute: Vec<BucketKey> = Vec::new();
    if !replaced.is_empty() {
        let tenants = column(replaced, |(tenant, _)| *tenant.as_uuid());
        let ids = column(replaced, |(_, id)| id.as_str());
        recompute = sqlx::query_as(
            "delete from pipeline.metric_readings r \
             using unnest($1::uuid[], $2::text[]) as d(tenant_id, reading_id) \
             where r.tenant_id = d.tenant_id and r.reading_id = d.reading_id \
             returning r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute",
        )
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut *connection)
        .await?;
        recompute.sort_unstable();
        recompute.dedup();
    }
    if readings.is_empty() && recompute.is_empty() {
        return Ok(());
    }
    let not_added: Vec<(Uuid, String, String, String, OffsetDateTime, bool)> =
        sqlx::query_as(ADD_READINGS)
            .bind(column(readings, |r| r.tenant_id))
            .bind(column(readings, |r| r.reading_id.as_str()))
            .bind(column(readings, |r| r.entity_kind))
            .bind(column(readings, |r| r.entity_id.as_str()))
            .bind(column(readings, |r| r.metric_key.as_str()))
            .bind(column(readings, |r| r.measured_at))
            .bind(column(readings, |r| r.value))
            .bind(column(readings, |r| r.pos_lsn))
            .bind(column(readings, |r| r.pos_seq))
            .bind(column(readings, |r| r.state.as_str()))
            .bind(column(&recompute, |bucket| bucket.3.as_str()))
            .bind(column(&recompute, |bucket| bucket.4))
            .fetch_all(&mut *connection)
            .await?;
    // Hours that took what their minutes took are current; those of recomputed minutes and
    // those that could not take it are recomputed from their minutes.
    let mut hours: Vec<BucketKey> = Vec::new();
    for (tenant, kind, id, key, at, is_hour) in not_added {
        if is_hour {
            hours.push((tenant, kind, id, key, at));
        } else {
            recompute.push((tenant, kind, id, key, at));
        }
    }
    recompute.sort_unstable();
    recompute.dedup();
    if !recompute.is_empty() {
        let buckets = BucketColumns::of(&recompute);
        sqlx::query(RECOMPUTE_BUCKETS)
            .bind(&buckets.tenants)
            .bind(&buckets.kinds)
            .bind(&buckets.ids)
            .bind(&buckets.keys)
            .bind(&buckets.minutes)
            .execute(&mut *connection)
            .await?;
    }
    hours.extend(
        recompute
            .into_iter()
            .map(|(tenant, kind, id, key, minute)| (tenant, kind, id, key, hour_of(minute))),
    );
    // Sorted, so concurrent transactions write the hours in one order.
    hours.sort_unstable();
    hours.dedup();
    if hours.is_empty() {
        return Ok(());
    }
    let hours = BucketColumns::of(&hours);
    sqlx::query(RECOMPUTE_HOURS)
        .bind(&hours.tenants)
        .bind(&hours.kinds)
        .bind(&hours.ids)
        .bind(&hours.keys)
        .bind(&hours.minutes)
        .execute(connection)
        .await?;
    Ok(())
}

/// The start of the UTC hour holding `at`.
fn hour_of(at: OffsetDateTime) -> OffsetDateTime {
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(3_600)).unwrap_or(at)
}

async fn write_truncates(
    connection: &mut sqlx::PgConnection,
    truncates: &[SourceTruncate],
) -> Result<(), StoreError> {
    if truncates.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into pipeline.source_truncates as t (tenant_id, source_id, source_table, \
             pos_lsn, pos_seq, truncated_at) \
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int4[], \
             $6::timestamptz[]) \
         on conflict (tenant_id, source_id, source_table) do update \
             set pos_lsn = excluded.pos_lsn, pos_seq = excluded.pos_seq, \
                 truncated_at = excluded.truncated_at \
             where (excluded.pos_lsn, excluded.pos_seq) > (t.pos_lsn, t.pos_seq)",
    )
    .bind(column(truncates, |t| *t.tenant_id.as_uuid()))
    .bind(column(truncates, |t| t.source_id))
    .bind(column(truncates, |t| t.source_table.as_str()))
    .bind(column(truncates, |t| t.pos_lsn))
    .bind(column(truncates, |t| t.pos_seq))
    .bind(column(truncates, |t| t.truncated_at))
    .execute(connection)
    .await?;
    Ok(())
}

/// Adds `counts` (one per table, sorted by key so concurrent transactions lock rows in one
/// order) to the stored counts of unmapped tables.
async fn count_unmapped(
    connection: &mut sqlx::PgConnection,
    counts: &[UnmappedCount],
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut counts: Vec<&UnmappedCount> = counts.iter().collect();
    counts.sort_unstable_by(|a, b| {
        (
            a.tenant_id.as_uuid(),
            &a.source_id,
            &a.schema_name,
            &a.table_name,
        )
            .cmp(&(
                b.tenant_id.as_uuid(),
                &b.source_id,
                &b.schema_name,
                &b.table_name,
            ))
    });
    sqlx::query(
        "insert into pipeline.unmapped_tables as u (tenant_id, source_id, schema_name, \
             table_name, events, first_seen_at, last_seen_at) \
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], \
             $6::timestamptz[], $7::timestamptz[]) \
         on conflict (tenant_id, source_id, schema_name, table_name) do update \
             set events = u.events + excluded.events, \
                 first_seen_at = least(u.first_seen_at, excluded.first_seen_at), \
                 last_seen_at = greatest(u.last_seen_at, excluded.last_seen_at)",
    )
    .bind(column(&counts, |c| *c.tenant_id.as_uuid()))
    .bind(column(&counts, |c| c.source_id))
    .bind(column(&counts, |c| c.schema_name.as_str()))
    .bind(column(&counts, |c| c.table_name.as_str()))
    .bind(column(&counts, |c| c.events))
    .bind(column(&counts, |c| c.first_seen_at))
    .bind(column(&counts, |c| c.last_seen_at))
    .execute(connection)
    .await?;
    Ok(())
}

/// The aggregates of a bucket over readings `r`, in the column order of `metrics_min_columns!`
/// after the key. The last value is the reading measured last, then at the newest position,
/// then of the greatest id (in byte order, whatever the database's collation).
macro_rules! bucket_aggregates {
    () => {
        "sum(r.value::text::numeric)::float8, sum(r.value::text::numeric), count(*), \
         min(r.value), max(r.value), \
         (array_agg(r.value order by r.measured_at desc, r.pos_lsn desc, r.pos_seq desc, \
             r.reading_id collate \"C\" desc))[1], \
         (array_agg(r.pos_lsn order by r.measured_at desc, r.pos_lsn desc, r.pos_seq desc, \
             r.reading_id collate \"C\" desc))[1], \
         (array_agg(r.pos_seq order by r.measured_at desc, r.pos_lsn desc, r.pos_seq desc, \
             r.reading_id collate \"C\" desc))[1], \
         (array_agg(r.measured_at order by r.measured_at desc, r.pos_lsn desc, \
             r.pos_seq desc, r.reading_id collate \"C\" desc))[1], \
         (array_agg(r.reading_id order by r.measured_at desc, r.pos_lsn desc, \
             r.pos_seq desc, r.reading_id collate \"C\" desc))[1]"
    };
}

/// The newest of `$column` among a group of minutes `g`: of their last readings, the one
/// measured last, then at the newest position, then of the greatest id.
macro_rules! hour_last {
    ($column:literal) => {
        concat!(
            "(array_agg(",
            $column,
            " order by g.last_measured_at desc, g.last_pos_lsn desc, g.last_pos_seq desc, \
             g.last_reading_id collate \"C\" desc))[1]"
        )
    };
}

/// The `do update` of a bucket `m` (a minute or an hour) that `excluded` adds readings to:
/// sums and counts added, the extremes kept, the newer last reading. A bucket without an exact
/// sum or a last reading (an older row) cannot be added to: its `last_measured_at` is left null,
/// which [`ADD_READINGS`] returns for the caller to recompute the bucket, overwriting what this
/// wrote. No conflict filter decides that instead: a bucket the filter skipped would have to be
/// found by joining what was proposed with what was written, a nested loop over the batch's
/// buckets.
macro_rules! add_to_bucket {
    () => {
        "value_sum = coalesce((m.value_sum_exact + excluded.value_sum_exact)::float8, \
                 m.value_sum), \
             value_sum_exact = m.value_sum_exact + excluded.value_sum_exact, \
             value_count = m.value_count + excluded.value_count, \
             value_min = least(m.value_min, excluded.value_min), \
             value_max = greatest(m.value_max, excluded.value_max), \
             (last_value, last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) = \
                 (select value, pos_lsn, pos_seq, \
                      case when m.value_sum_exact is not null \
                          and m.last_measured_at is not null \
                          and m.last_reading_id is not null then measured_at end, \
                      reading_id \
                  from (values \
                     (m.last_value, m.last_pos_lsn, m.last_pos_seq, m.last_measured_at, \
                      m.last_reading_id), \
                     (excluded.last_value, excluded.last_pos_lsn, excluded.last_pos_seq, \
                      excluded.last_measured_at, excluded.last_reading_id)) \
                     as candidate(value, pos_lsn, pos_seq, measured_at, reading_id) \
                  order by measured_at desc, pos_lsn desc, pos_seq desc, \
                      reading_id collate \"C\" desc \
                  limit 1)"
    };
}

macro_rules! metrics_min_columns {
    () => {
        "tenant_id, entity_kind, entity_id, metric_key, minute, value_sum, value_sum_exact, \
         value_count, value_min, value_max, last_value, last_pos_lsn, last_pos_seq, \
         last_measured_at, last_reading_id"
    };
}

/// Inserts the new readings ($1-$9, their states $10), adds them to their minutes and what
/// they added to those minutes to their hours, marks every touched (key, minute) for the
/// aggregator (the new readings' and those of the minutes that lost a reading, $11-$12), and
/// returns the minutes (`false`) and the hours (`true`) it could not add to (rows without an
/// exact sum), to be recomputed. Adding gives what recomputing would: sums are exact
/// (`numeric`), and the last value is the greatest by one order however the readings are
/// grouped.
///
/// A minute that lost a reading, and every minute and hour that cannot be added to, is
/// recomputed afterwards, which overwrites what this added: so nothing here needs to know which
/// they are, and no step joins two CTEs (with hash and merge joins off in the transaction, see
/// [`MaterializeTx`], such a join loops over one for each row of the other).
const ADD_READINGS: &str = concat!(
    "with input as ( \
         select tenant_id, reading_id, entity_kind, entity_id, metric_key, \
                date_trunc('minute', measured_at) as minute, measured_at, value, pos_lsn, \
                pos_seq, state \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::timestamptz[], $7::float8[], $8::int8[], $9::int4[], $10::text[]) \
             as r(tenant_id, reading_id, entity_kind, entity_id, metric_key, measured_at, value, \
                  pos_lsn, pos_seq, state) \
     ), \
     new as ( \
         insert into pipeline.metric_readings (tenant_id, reading_id, entity_kind, entity_id, \
             metric_key, minute, measured_at, value, pos_lsn, pos_seq, state) \
         select tenant_id, reading_id, entity_kind, entity_id, metric_key, minute, measured_at, \
             value, pos_lsn, pos_seq, state \
         from input \
     ), \
     lost as ( \
         select * from unnest($11::text[], $12::timestamptz[]) as l(metric_key, minute) \
     ), \
     gained (",
    metrics_min_columns!(),
    ") as ( \
         select r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute, ",
    bucket_aggregates!(),
    " \
         from input r \
         group by r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute \
     ), \
     added as ( \
         insert into analytics.metrics_min as m (",
    metrics_min_columns!(),
    ") \
         select * from gained \
         on conflict (tenant_id, entity_kind, entity_id, metric_key, minute) do update set ",
    add_to_bucket!(),
    " \
         returning m.tenant_id, m.entity_kind, m.entity_id, m.metric_key, m.minute, \
             m.last_measured_at is null as stale \
     ), \
     hour_gained as ( \
         select g.tenant_id, g.entity_kind, g.entity_id, g.metric_key, \
             date_trunc('hour', g.minute, 'UTC') as hour, \
             sum(g.value_sum_exact)::float8, sum(g.value_sum_exact), \
             sum(g.value_count)::bigint, min(g.value_min), max(g.value_max), ",
    hour_last!("g.last_value"),
    ", ",
    hour_last!("g.last_pos_lsn"),
    ", ",
    hour_last!("g.last_pos_seq"),
    ", ",
    hour_last!("g.last_measured_at"),
    ", ",
    hour_last!("g.last_reading_id"),
    " \
         from gained g \
         group by 1, 2, 3, 4, 5 \
     ), \
     hours_added as ( \
         insert into analytics.metrics_hour as m (tenant_id, entity_kind, entity_id, \
             metric_key, hour, value_sum, value_sum_exact, value_count, value_min, value_max, \
             last_value, last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select * from hour_gained \
         on conflict (tenant_id, entity_kind, entity_id, metric_key, hour) do update set ",
    add_to_bucket!(),
    " \
         returning m.tenant_id, m.entity_kind, m.entity_id, m.metric_key, m.hour, \
             m.last_measured_at is null as stale \
     ), \
     marked as ( \
         insert into pipeline.rollup_dirty (metric_key, minute) \
         select distinct metric_key, minute from ( \
             select metric_key, minute from input union all select metric_key, minute from lost \
         ) touched \
     ) \
     select tenant_id, entity_kind, entity_id, metric_key, minute, false from added where stale \
     union all \
     select tenant_id, entity_kind, entity_id, metric_key, hour, true from hours_added \
     where stale"
);

/// Recomputes the buckets $1-$5 (distinct) from their readings; a bucket left without
/// readings disappears (found through the readings' bucket index: a join with the recount, a
/// CTE, would loop over it once per bucket).
const RECOMPUTE_BUCKETS: &str = concat!(
    "with buckets as ( \
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
             $5::timestamptz[]) as b(tenant_id, entity_kind, entity_id, metric_key, minute) \
     ), \
     counted as ( \
         select r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute, ",
    bucket_aggregates!(),
    " \
         from buckets b join pipeline.metric_readings r on r.tenant_id = b.tenant_id \
             and r.entity_kind = b.entity_kind and r.entity_id = b.entity_id \
             and r.metric_key = b.metric_key and r.minute = b.minute \
         group by r.tenant_id, r.entity_kind, r.entity_id, r.metric_key, r.minute \
     ), \
     written as ( \
         insert into analytics.metrics_min (",
    metrics_min_columns!(),
    ") \
         select * from counted \
         on conflict (tenant_id, entity_kind, entity_id, metric_key, minute) do update set \
             value_sum = excluded.value_sum, value_sum_exact = excluded.value_sum_exact, \
             value_count = excluded.value_count, value_min = excluded.value_min, \
             value_max = excluded.value_max, last_value = excluded.last_value, \
             last_pos_lsn = excluded.last_pos_lsn, last_pos_seq = excluded.last_pos_seq, \
             last_measured_at = excluded.last_measured_at, \
             last_reading_id = excluded.last_reading_id \
     ) \
     delete from analytics.metrics_min m using buckets b \
     where m.tenant_id = b.tenant_id and m.entity_kind = b.entity_kind \
         and m.entity_id = b.entity_id and m.metric_key = b.metric_key and m.minute = b.minute \
         and not exists (select 1 from pipeline.metric_readings r \
             where r.tenant_id = m.tenant_id and r.entity_kind = m.entity_kind \
                 and r.entity_id = m.entity_id and r.metric_key = m.metric_key \
                 and r.minute = m.minute)"
);

/// Recomputes the hours $1-$5 (distinct, sorted) of `metrics_hour` from their minutes of
/// `metrics_min`; an hour left without minutes disappears. Each hour's minutes are read through
/// the primary key of `metrics_min`, by range, both to recompute it and to find it empty.
const RECOMPUTE_HOURS: &str = "with hours as ( \
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
             $5::timestamptz[]) as h(tenant_id, entity_kind, entity_id, metric_key, hour) \
     ), \
     rolled as ( \
         select h.tenant_id, h.entity_kind, h.entity_id, h.metric_key, h.hour, \
             sum(coalesce(m.value_sum_exact, m.value_sum::text::numeric))::float8 as value_sum, \
             sum(coalesce(m.value_sum_exact, m.value_sum::text::numeric)) as value_sum_exact, \
             sum(m.value_count)::bigint as value_count, \
             min(m.value_min) as value_min, max(m.value_max) as value_max, \
             (array_agg(m.last_value order by m.last_measured_at desc nulls last, \
                 m.last_pos_lsn desc, m.last_pos_seq desc, \
                 m.last_reading_id collate \"C\" desc nulls last))[1] as last_value, \
             (array_agg(m.last_pos_lsn order by m.last_measured_at desc nulls last, \
                 m.last_pos_lsn desc, m.last_pos_seq desc, \
                 m.last_reading_id collate \"C\" desc nulls last))[1] as last_pos_lsn, \
             (array_agg(m.last_pos_seq order by m.last_measured_at desc nulls last, \
                 m.last_pos_lsn desc, m.last_pos_seq desc, \
                 m.last_reading_id collate \"C\" desc nulls last))[1] as last_pos_seq, \
             (array_agg(m.last_measured_at order by m.last_measured_at desc nulls last, \
                 m.last_pos_lsn desc, m.last_pos_seq desc, \
                 m.last_reading_id collate \"C\" desc nulls last))[1] as last_measured_at, \
             (array_agg(m.last_reading_id order by m.last_measured_at desc nulls last, \
                 m.last_pos_lsn desc, m.last_pos_seq desc, \
                 m.last_reading_id collate \"C\" desc nulls last))[1] as last_reading_id \
         from hours h join analytics.metrics_min m on m.tenant_id = h.tenant_id \
             and m.entity_kind = h.entity_kind and m.entity_id = h.entity_id \
             and m.metric_key = h.metric_key and m.minute >= h.hour \
             and m.minute < h.hour + interval '1 hour' \
         group by h.tenant_id, h.entity_kind, h.entity_id, h.metric_key, h.hour \
     ), \
     written as ( \
         insert into analytics.metrics_hour (tenant_id, entity_kind, entity_id, metric_key, \
             hour, value_sum, value_sum_exact, value_count, value_min, value_max, last_value, \
             last_pos_lsn, last_pos_seq, last_measured_at, last_reading_id) \
         select * from rolled \
         on conflict (tenant_id, entity_kind, entity_id, metric_key, hour) do update set \
             value_sum = excluded.value_sum, value_sum_exact = excluded.value_sum_exact, \
             value_count = excluded.value_count, value_min = excluded.value_min, \
             value_max = excluded.value_max, last_value = excluded.last_value, \
             last_pos_lsn = excluded.last_pos_lsn, last_pos_seq = excluded.last_pos_seq, \
             last_measured_at = excluded.last_measured_at, \
             last_reading_id = excluded.last_reading_id \
     ) \
     delete from analytics.metrics_hour x using hours h \
     where x.tenant_id = h.tenant_id and x.entity_kind = h.entity_kind \
         and x.entity_id = h.entity_id and x.metric_key = h.metric_key and x.hour = h.hour \
         and not exists (select 1 from analytics.metrics_min m where m.tenant_id = x.tenant_id \
             and m.entity_kind = x.entity_kind and m.entity_id = x.entity_id \
             and m.metric_key = x.metric_key and m.minute >= x.hour \
             and m.minute < x.hour + interval '1 hour')";

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

/// Deletes the extras of the entities $1-$3 from the four tables.
const DELETE_EXTRAS: &str = "with replaced as ( \
         select * from unnest($1::uuid[], $2::text[], $3::text[]) \
             as r(tenant_id, entity_kind, entity_id) \
     ), \
     text_rows as ( \
         delete from analytics.extras_text x using replaced r where x.tenant_id = r.tenant_id \
             and x.entity_kind = r.entity_kind and x.entity_id = r.entity_id \
     ), \
     num_rows as ( \
         delete from analytics.extras_num x using replaced r where x.tenant_id = r.tenant_id \
             and x.entity_kind = r.entity_kind and x.entity_id = r.entity_id \
     ), \
     bool_rows as ( \
         delete from analytics.extras_bool x using replaced r where x.tenant_id = r.tenant_id \
             and x.entity_kind = r.entity_kind and x.entity_id = r.entity_id \
     ) \
     delete from analytics.extras_time x using replaced r where x.tenant_id = r.tenant_id \
         and x.entity_kind = r.entity_kind and x.entity_id = r.entity_id";

/// Inserts extras into the four tables: text $1-$5, num $6-$10, bool $11-$15, time $16-$20.
const INSERT_EXTRAS: &str = "with text_rows as ( \
         insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) \
     ), \
     num_rows as ( \
         insert into analytics.extras_num (tenant_id, entity_kind, entity_id, key, value) \
         select * from unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::float8[]) \
     ), \
     bool_rows as ( \
         insert into analytics.extras_bool (tenant_id, entity_kind, entity_id, key, value) \
         select * from unnest($11::uuid[], $12::text[], $13::text[], $14::text[], $15::bool[]) \
     ) \
     insert into analytics.extras_time (tenant_id, entity_kind, entity_id, key, value) \
     select * from unnest($16::uuid[], $17::text[], $18::text[], $19::text[], \
         $20::timestamptz[])";

/// A content checksum of each of a tenant's read models (everything but the write time and the
/// tenant id), by table: what a rebuild must reproduce exactly.
pub async fn checksums(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<BTreeMap<&'static str, (i64, String)>, StoreError> {
    let mut checksums = BTreeMap::new();
    for (table, statement) in CHECKSUMS {
        let (count, checksum): (i64, Option<String>) = sqlx::query_as(statement)
            .bind(tenant.as_uuid())
            .fetch_one(database.pool())
            .await?;
        checksums.insert(table, (count, checksum.unwrap_or_default()));
    }
    Ok(checksums)
}

const CHECKSUMS: [(&str, &str); 10] = [
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
        "analytics.metrics_hour",
        "select count(*), md5(string_agg(row(entity_kind, entity_id, metric_key, hour, \
             value_sum, value_count, value_min, value_max, last_value, last_pos_lsn, \
             last_pos_seq)::text, '|' order by entity_kind, entity_id, metric_key, hour)) \
         from analytics.metrics_hour where tenant_id = $1",
    ),
    (
        "analytics.metric_series",
        "select count(*), md5(string_agg(row(metric_key, entity_kind, entity_id, readings)::text, \
             '|' order by metric_key, entity_kind, entity_id)) \
         from analytics.metric_series where tenant_id = $1",
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

/// Adds a batch's drift counts to `pipeline.drift_fields`, in one statement, in key order (so
/// two transactions adding to the same rows wait for each other instead of deadlocking). A row
/// whose count a rebuild reset starts its times again too.
async fn count_drift(
    connection: &mut sqlx::PgConnection,
    counts: &[DriftCount],
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut counts: Vec<&DriftCount> = counts.iter().collect();
    counts.sort_unstable_by(|a, b| {
        let key = |c: &DriftCount| {
            (
                *c.tenant_id.as_uuid(),
                c.source_id,
                c.schema_name.clone(),
                c.table_name.clone(),
                c.entity_kind,
                c.field_name.clone(),
                c.json_type,
            )
        };
        key(a).cmp(&key(b))
    });
    sqlx::query(
        "insert into pipeline.drift_fields as d (tenant_id, source_id, schema_name, \
             table_name, entity_kind, field_name, json_type, row_count, first_seen_at, \
             last_seen_at) \
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::int8[], $9::timestamptz[], $10::timestamptz[]) \
         on conflict (tenant_id, source_id, schema_name, table_name, entity_kind, field_name, \
             json_type) \
         do update set \
             first_seen_at = case when d.row_count = 0 then excluded.first_seen_at \
                 else least(d.first_seen_at, excluded.first_seen_at) end, \
             last_seen_at = case when d.row_count = 0 then excluded.last_seen_at \
                 else greatest(d.last_seen_at, excluded.last_seen_at) end, \
             row_count = d.row_count + excluded.row_count",
    )
    .bind(column(&counts, |c| *c.tenant_id.as_uuid()))
    .bind(column(&counts, |c| c.source_id))
    .bind(column(&counts, |c| c.schema_name.as_str()))
    .bind(column(&counts, |c| c.table_name.as_str()))
    .bind(column(&counts, |c| c.entity_kind))
    .bind(column(&counts, |c| c.field_name.as_str()))
    .bind(column(&counts, |c| c.json_type))
    .bind(column(&counts, |c| c.events))
    .bind(column(&counts, |c| c.first_seen_at))
    .bind(column(&counts, |c| c.last_seen_at))
    .execute(connection)
    .await?;
    Ok(())
}
