//! The source-to-read-model mappings people edit (audited in the same transaction), and the
//! typed columns each read model has. What the materializer writes is in
//! [`crate::service::read_models`].

use std::collections::BTreeMap;

use domain::SourceId;
use domain::read_model::EntityKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};

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
    let Some(kind) = EntityKind::parse(&row.entity_kind) else {
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
        if kind.column_type(typed_column).is_none() {
            let known: Vec<&str> = kind.typed_columns().iter().map(|(name, _)| *name).collect();
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

/// A `control.read_model_mappings` row, before its columns are read as a map.
#[derive(sqlx::FromRow)]
pub(crate) struct StoredMapping {
    source_id: Uuid,
    source_table: String,
    entity_kind: String,
    id_column: Option<String>,
    columns: serde_json::Value,
    reading_entity_kind: Option<String>,
}

impl TryFrom<StoredMapping> for MappingRow {
    type Error = StoreError;

    fn try_from(row: StoredMapping) -> Result<Self, Self::Error> {
        Ok(MappingRow {
            source_id: row.source_id,
            source_table: row.source_table,
            entity_kind: row.entity_kind,
            id_column: row.id_column,
            columns: serde_json::from_value(row.columns).map_err(|_| {
                StoreError::Invalid("a stored mapping's columns are not a map".into())
            })?,
            reading_entity_kind: row.reading_entity_kind,
        })
    }
}

/// The transaction's tenant's mappings, by source and table.
pub async fn list_mappings(tx: &mut TenantTx) -> Result<Vec<MappingRow>, StoreError> {
    let rows: Vec<StoredMapping> = sqlx::query_as(
        "select source_id, source_table, entity_kind, id_column, columns, reading_entity_kind \
         from control.read_model_mappings order by tenant_id, source_id, source_table",
    )
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(MappingRow::try_from).collect()
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

/// A source table whose events no mapping applies to: they wait in bronze, counted, until the
/// table is mapped (then a rebuild applies them) or marked ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UnmappedTable {
    pub source_id: Uuid,
    pub schema_name: String,
    pub table_name: String,
    /// Events delivered of it (at least once: a redelivered event may count twice until a
    /// rebuild recounts).
    pub events: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: time::OffsetDateTime,
}

/// The workspace's unmapped tables, most recently seen first; a table mapped since (by
/// `schema.table` or `table`) is left out, its events wait for the next rebuild.
pub async fn list_unmapped_tables(tx: &mut TenantTx) -> Result<Vec<UnmappedTable>, StoreError> {
    Ok(sqlx::query_as(
        "select u.source_id, u.schema_name, u.table_name, u.events, u.first_seen_at, \
                u.last_seen_at \
         from pipeline.unmapped_tables u \
         where not exists (select 1 from control.read_model_mappings m \
             where m.tenant_id = u.tenant_id and m.source_id = u.source_id \
               and m.source_table in (u.schema_name || '.' || u.table_name, u.table_name)) \
         order by u.last_seen_at desc, u.source_id, u.schema_name, u.table_name \
         limit 1000",
    )
    .fetch_all(tx.connection())
    .await?)
}
