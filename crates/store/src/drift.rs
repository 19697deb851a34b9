//! The schema-drift inbox: source fields that no typed column claims, which the materializer
//! keeps in the typed extras and counts in `pipeline.drift_fields`
//! ([`crate::service::read_models::DriftCount`]). Owners and admins list them, promote one to a
//! typed column (a mapping edit and a rebuild request, in one audited transaction) or dismiss
//! one until the field shows a type not seen before. docs/materializer.md.

use domain::read_model::{ColumnType, EntityKind};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::read_models::{self, MappingRow, StoredMapping};
use crate::replay::{self, ReplayError, ReplayKind};
use crate::{StoreError, TenantTx};

/// The JSON types a drift field is counted by: a string that reads as an ISO-8601 time is a
/// `time` (it lands in the time extras).
pub const JSON_TYPES: [&str; 6] = ["string", "time", "number", "boolean", "array", "object"];

/// One field of one source table, with one JSON type, in the typed extras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DriftField {
    pub drift_id: Uuid,
    pub source_id: Uuid,
    pub schema_name: String,
    pub table_name: String,
    /// site, device or session.
    pub entity_kind: String,
    pub field_name: String,
    /// One of [`JSON_TYPES`].
    pub json_type: String,
    /// Events that carried the field with this type (as delivered, at least once; a rebuild
    /// recounts from bronze).
    pub rows: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
}

/// The transaction's tenant's drift fields, most recently seen first: those not dismissed that
/// the table's stored mapping (by `schema.table`, else `table`, as the materializer resolves
/// it) still leaves to the extras. A field the mapping now claims, or a table now ignored or
/// mapped as another kind, waits for the next rebuild to recount it.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<DriftField>, StoreError> {
    Ok(sqlx::query_as(
        "select d.drift_id, d.source_id, d.schema_name, d.table_name, d.entity_kind, \
                d.field_name, d.json_type, d.row_count as rows, d.first_seen_at, d.last_seen_at \
         from pipeline.drift_fields d \
         left join lateral (select m.entity_kind, m.id_column, m.columns \
             from control.read_model_mappings m \
             where m.tenant_id = d.tenant_id and m.source_id = d.source_id \
               and m.source_table in (d.schema_name || '.' || d.table_name, d.table_name) \
             order by m.source_table = d.schema_name || '.' || d.table_name desc limit 1) m \
             on true \
         where d.dismissed_at is null and d.row_count > 0 \
           and (m.entity_kind is null or (m.entity_kind = d.entity_kind \
               and not m.columns ? d.field_name \
               and m.id_column is distinct from d.field_name)) \
         order by d.last_seen_at desc, d.source_id, d.schema_name, d.table_name, \
             d.entity_kind, d.field_name, d.json_type \
         limit 1000",
    )
    .fetch_all(tx.connection())
    .await?)
}

/// Why a drift action was refused.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// No drift field of the transaction's tenant has this id.
    #[error("no drift field has this id")]
    NotFound,
    /// The table maps by convention: promoting would replace the convention with a stored
    /// mapping that names one column, so its table must be mapped first.
    #[error(
        "the table maps by convention: save its mapping first (PUT \
         /api/v1/sources/{{source}}/mappings/{{table}}), then promote"
    )]
    MappedByConvention,
    /// The table's stored mapping no longer maps it as the field's entity kind.
    #[error("the table is no longer mapped as a {0}")]
    KindChanged(String),
    /// A type the field was seen with cannot always be converted to the typed column's type.
    #[error("{0}")]
    Incompatible(String),
    /// The edited mapping is refused by the mapping rules.
    #[error("{0}")]
    InvalidMapping(String),
    /// A bronze replay or rebuild of the tenant is under way.
    #[error(
        "a bronze replay or rebuild of this workspace is already under way: try again once it finishes"
    )]
    RebuildUnderWay,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DriftError {
    fn from(error: sqlx::Error) -> Self {
        DriftError::Store(error.into())
    }
}

/// Whether every value of a JSON type converts to a typed column of `column_type` (as the
/// materializer converts): a promotion must not send the field's events to the dead letters.
pub fn converts(json_type: &str, column_type: ColumnType) -> bool {
    match column_type {
        ColumnType::Text => matches!(json_type, "string" | "time" | "number" | "boolean"),
        ColumnType::Num => json_type == "number",
        ColumnType::Time => json_type == "time",
    }
}

/// What a promotion did.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub mapping: MappingRow,
    /// The rebuild request that re-materializes the tenant with the new mapping.
    pub rebuild_request_id: Uuid,
}

/// A drift row's identity, read back to act on it.
#[derive(sqlx::FromRow)]
struct DriftKey {
    source_id: Uuid,
    schema_name: String,
    table_name: String,
    entity_kind: String,
    field_name: String,
}

async fn key_of(tx: &mut TenantTx, drift_id: Uuid) -> Result<DriftKey, DriftError> {
    sqlx::query_as(
        "select source_id, schema_name, table_name, entity_kind, field_name \
         from pipeline.drift_fields where drift_id = $1",
    )
    .bind(drift_id)
    .fetch_optional(tx.connection())
    .await?
    .ok_or(DriftError::NotFound)
}

/// Makes a drift field a typed column of its entity: adds it to its table's stored mapping
/// (checked like any mapping edit and audited as one) and records a rebuild request that the
/// pipeline's replay worker carries out, all in the transaction; audited as `drift.promote`.
/// Refused when the table maps by convention, when a type the field was seen with does not
/// always convert to the column's type, or when a rebuild is already under way.
pub async fn promote(
    tx: &mut TenantTx,
    drift_id: Uuid,
    typed_column: &str,
) -> Result<Promotion, DriftError> {
    let key = key_of(tx, drift_id).await?;
    let kind = EntityKind::parse(&key.entity_kind)
        .ok_or_else(|| StoreError::Invalid("a drift field of an unknown kind".into()))?;
    let Some(column_type) = kind.column_type(typed_column) else {
        let known: Vec<&str> = kind.typed_columns().iter().map(|(name, _)| *name).collect();
        return Err(DriftError::InvalidMapping(format!(
            "{typed_column:?} is not a typed column of a {}: one of {}",
            key.entity_kind,
            known.join(", ")
        )));
    };
    let types: Vec<String> = sqlx::query_scalar(
        "select json_type from pipeline.drift_fields \
         where source_id = $1 and schema_name = $2 and table_name = $3 and entity_kind = $4 \
           and field_name = $5 order by json_type",
    )
    .bind(key.source_id)
    .bind(&key.schema_name)
    .bind(&key.table_name)
    .bind(&key.entity_kind)
    .bind(&key.field_name)
    .fetch_all(tx.connection())
    .await?;
    if let Some(refused) = types
        .iter()
        .find(|json_type| !converts(json_type, column_type))
    {
        return Err(DriftError::Incompatible(format!(
            "the field was seen as {refused}, which a {} column cannot always hold",
            column_type.as_str()
        )));
    }
    let qualified = format!("{}.{}", key.schema_name, key.table_name);
    let stored: Option<StoredMapping> = sqlx::query_as(
        "select source_id, source_table, entity_kind, id_column, columns, reading_entity_kind \
         from control.read_model_mappings \
         where source_id = $1 and source_table in ($2, $3) \
         order by source_table = $2 desc limit 1",
    )
    .bind(key.source_id)
    .bind(&qualified)
    .bind(&key.table_name)
    .fetch_optional(tx.connection())
    .await?;
    let Some(stored) = stored else {
        return Err(DriftError::MappedByConvention);
    };
    let mut mapping = MappingRow::try_from(stored)?;
    if mapping.entity_kind != key.entity_kind {
        return Err(DriftError::KindChanged(key.entity_kind));
    }
    mapping
        .columns
        .insert(key.field_name.clone(), typed_column.to_owned());
    read_models::validate_mapping(&mapping).map_err(DriftError::InvalidMapping)?;
    read_models::put_mapping(tx, &mapping).await?;
    let rebuild_request_id = match replay::request(tx, &ReplayKind::Rebuild).await {
        Ok(request_id) => request_id,
        Err(ReplayError::UnderWay) => return Err(DriftError::RebuildUnderWay),
        Err(ReplayError::Range(_)) => {
            return Err(StoreError::Invalid("a rebuild has no range".into()).into());
        }
        Err(ReplayError::Store(error)) => return Err(error.into()),
    };
    audit::append(
        tx,
        AuditEntry::new("drift.promote", drift_id.to_string()).details(serde_json::json!({
            "source_id": key.source_id,
            "source_table": mapping.source_table,
            "entity_kind": key.entity_kind,
            "field": key.field_name,
            "typed_column": typed_column,
            "rebuild_request_id": rebuild_request_id,
        })),
    )
    .await?;
    Ok(Promotion {
        mapping,
        rebuild_request_id,
    })
}

/// Hides a drift field (one JSON type of it) from the inbox; the field shows again if it is seen
/// with a type not seen before. Dismissing a dismissed field changes nothing but is audited
/// again, as the request was made.
pub async fn dismiss(tx: &mut TenantTx, drift_id: Uuid) -> Result<(), DriftError> {
    let key = key_of(tx, drift_id).await?;
    sqlx::query(
        "update pipeline.drift_fields set dismissed_at = coalesce(dismissed_at, now()) \
         where drift_id = $1",
    )
    .bind(drift_id)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("drift.dismiss", drift_id.to_string()).details(serde_json::json!({
            "source_id": key.source_id,
            "source_table": format!("{}.{}", key.schema_name, key.table_name),
            "entity_kind": key.entity_kind,
            "field": key.field_name,
        })),
    )
    .await?;
    Ok(())
}
