//! `/api/v1/sources/{source}/mappings`: which of a source's tables feeds which read model, and
//! which column which typed column (docs/materializer.md). Read with `view_sources`, changed with
//! `manage_sources`; every change is audited by the store in the same transaction. And
//! `/api/v1/unmapped-tables`: the tables waiting for a mapping (`manage_sources`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::read_model::EntityKind;
use domain::{Permission, SourceId};
use serde::Deserialize;
use serde_json::json;
use store::read_models::MappingRow;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, RequestBody};
use super::format::parse_id;
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(
            Method::GET,
            "/api/v1/sources/{source}/mappings",
            list_mappings,
        )
        .at(
            Method::PUT,
            "/api/v1/sources/{source}/mappings/{table}",
            put_mapping,
        )
        .at(
            Method::DELETE,
            "/api/v1/sources/{source}/mappings/{table}",
            delete_mapping,
        )
        .at(Method::GET, "/api/v1/unmapped-tables", list_unmapped)
}

async fn list_unmapped(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let tables = store::read_models::list_unmapped_tables(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "unmapped_tables": tables })))
}

async fn list_mappings(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ViewSources).await?;
    let mappings: Vec<MappingRow> = store::read_models::list_mappings(&mut tx)
        .await?
        .into_iter()
        .filter(|mapping| mapping.source_id == *source.as_uuid())
        .collect();
    tx.commit().await?;
    Ok(Json(json!({
        "mappings": mappings,
        "typed_columns": EntityKind::ALL
            .iter()
            .map(|kind| {
                let columns = kind.typed_columns().iter();
                let columns = columns.map(|(name, column_type)| (*name, column_type.name()));
                (kind.as_str(), columns.collect::<BTreeMap<_, _>>())
            })
            .collect::<BTreeMap<_, _>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMapping {
    entity_kind: String,
    #[serde(default)]
    id_column: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    reading_entity_kind: Option<String>,
}

impl RequestBody for NewMapping {
    const SCHEMA: &'static str = "NewMapping";
    const SHAPE: &'static str = r#"{"entity_kind": "site"|"device"|"session"|"reading"|"ignore", "id_column": ..., "columns": {"source column": "typed column"}, "reading_entity_kind": ...}"#;

    /// 400 `invalid_mapping`, as the mapping's own checks answer.
    fn refusal(violation: super::conformance::Violation) -> ApiError {
        let violation = match violation.field() {
            "columns" => super::conformance::Violation {
                problem: format!(
                    "is not a typed column of this entity kind: {}",
                    violation.problem
                ),
                ..violation
            },
            _ => violation,
        };
        super::extract::refused(StatusCode::BAD_REQUEST, "invalid_mapping", &violation)
    }
}

async fn put_mapping(
    State(state): State<AppState>,
    caller: Caller,
    Path((source, table)): Path<(String, String)>,
    Body(request): Body<NewMapping>,
) -> Result<Json<MappingRow>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mapping = MappingRow {
        source_id: *source.as_uuid(),
        source_table: table,
        entity_kind: request.entity_kind,
        id_column: request.id_column,
        columns: request.columns,
        reading_entity_kind: request.reading_entity_kind,
    };
    store::read_models::validate_mapping(&mapping)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid_mapping", why))?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    store::read_models::put_mapping(&mut tx, &mapping).await?;
    tx.commit().await?;
    Ok(Json(mapping))
}

async fn delete_mapping(
    State(state): State<AppState>,
    caller: Caller,
    Path((source, table)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    store::read_models::delete_mapping(&mut tx, source, &table).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
