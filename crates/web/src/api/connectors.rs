//! The connector wizard's JSON twin: `GET /api/v1/sources/{source}/setup` (where a source's
//! setup stands, with the agent's commands, its `agent.toml`, the database's prerequisites,
//! the agent's `check` and how each reported table would feed the read models) and
//! `PUT /api/v1/sources/{source}/tables` (the tables to capture, audited). Creating the source
//! and its token, re-issuing a token, and mappings are in `sources` and `mappings`.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use domain::{Permission, SourceId};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, RequestBody};
use super::format::parse_id;
use super::registry::Routes;
use crate::AppState;
use crate::agent_setup;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/sources/{source}/setup", setup)
        .at(Method::PUT, "/api/v1/sources/{source}/tables", put_tables)
}

async fn setup_json(
    state: &AppState,
    caller: &Caller,
    source: SourceId,
) -> Result<serde_json::Value, ApiError> {
    let mut tx = caller.tx(state, Permission::ManageSources).await?;
    let current = store::connectors::setup(&mut tx, source).await?;
    let mappings = store::read_models::list_mappings(&mut tx).await?;
    tx.commit().await?;
    let commands = agent_setup::commands(&current, &state.agents, "<pairing token>");
    let tables = agent_setup::table_previews(&current, &mappings);
    let mut body = serde_json::to_value(&current).unwrap_or_default();
    body["commands"] = json!(commands);
    body["agent_toml"] = json!(agent_setup::agent_toml(&current, &state.agents));
    body["prerequisites_sql"] = json!(agent_setup::prerequisites_sql(&current));
    body["ca_certificate_pem"] = json!(state.agents.ca_pem);
    body["edge_url"] = json!(state.agents.edge_url);
    body["table_previews"] = json!(tables);
    Ok(body)
}

async fn setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    Ok(Json(setup_json(&state, &caller, source).await?))
}

#[derive(Deserialize)]
struct CaptureTables {
    tables: Vec<String>,
}

impl RequestBody for CaptureTables {
    const SCHEMA: &'static str = "CaptureTables";
    const SHAPE: &'static str = r#"{"tables": ["schema.table", ...]}"#;
}

async fn put_tables(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Body(request): Body<CaptureTables>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    store::connectors::choose_tables(&mut tx, source, &request.tables).await?;
    tx.commit().await?;
    Ok(Json(setup_json(&state, &caller, source).await?))
}
