//! `/api/v1/drift`: the schema-drift inbox, the source fields the typed columns leave to the
//! typed extras (docs/materializer.md). Listed, promoted to a typed column (a mapping edit and a
//! rebuild request) and dismissed with `manage_sources`; promoting also needs `manage_replays`.
//! The store audits every action in the same transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::Permission;
use serde::Deserialize;
use serde_json::json;
use store::drift::DriftError;
use uuid::Uuid;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, RequestBody};
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/drift", list_drift)
        .at(Method::POST, "/api/v1/drift/promote", promote)
        .at(Method::POST, "/api/v1/drift/dismiss", dismiss)
}

async fn list_drift(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let fields = store::drift::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "drift_fields": fields })))
}

/// Fields default when missing, so that the schema check names the missing one (422).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Promotion {
    /// Held to the schema's hyphenated form before it is parsed.
    drift_id: String,
    typed_column: String,
}

impl RequestBody for Promotion {
    const SCHEMA: &'static str = "DriftPromotion";
    const SHAPE: &'static str =
        r#"{"drift_id": "<uuid>", "typed_column": "<typed column of the field's entity kind>"}"#;
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Dismissal {
    drift_id: String,
}

impl RequestBody for Dismissal {
    const SCHEMA: &'static str = "DriftDismissal";
    const SHAPE: &'static str = r#"{"drift_id": "<uuid>"}"#;
}

fn drift_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "drift_id must be a UUID",
        )
        .with_details(json!({ "field": "drift_id" }))
    })
}

async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<Promotion>,
) -> Result<Json<store::drift::Promotion>, ApiError> {
    let drift_id = drift_id(&request.drift_id)?;
    caller.require(Permission::ManageReplays)?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let promotion = store::drift::promote(&mut tx, drift_id, &request.typed_column)
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    // The rebuild is recorded as an intent; the pipeline's replay worker carries it out.
    Ok(Json(promotion))
}

async fn dismiss(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<Dismissal>,
) -> Result<StatusCode, ApiError> {
    let drift_id = drift_id(&request.drift_id)?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    store::drift::dismiss(&mut tx, drift_id)
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A refused drift action: 404 for an id the workspace has no field of (another workspace's
/// among them), 409 when the field cannot be promoted as asked (what depends on the field's kind,
/// types and mapping, which a schema cannot state) or a rebuild is under way.
fn refusal(error: DriftError) -> ApiError {
    let message = error.to_string();
    match error {
        DriftError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        DriftError::MappedByConvention => {
            ApiError::new(StatusCode::CONFLICT, "mapped_by_convention", message)
        }
        DriftError::KindChanged(_) => ApiError::new(StatusCode::CONFLICT, "kind_changed", message),
        DriftError::Incompatible(_) => {
            ApiError::new(StatusCode::CONFLICT, "incompatible_type", message)
        }
        DriftError::InvalidMapping(_) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_mapping", message)
        }
        DriftError::RebuildUnderWay => {
            ApiError::new(StatusCode::CONFLICT, "replay_under_way", message)
        }
        DriftError::Store(error) => error.into(),
    }
}
