//! The operations API, `/api/v1/ops`: what the internal console's pages do, for staff sessions
//! only ([`StaffCaller`]). Every call runs in a `Scope::InternalOps` transaction, so the
//! database holds the same line: the tenant registry and the rollups, never a tenant's data.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::TenantId;
use serde::Deserialize;
use serde_json::json;
use store::rollups::Granularity;
use time::OffsetDateTime;

use super::caller::StaffCaller;
use super::error::ApiError;
use super::extract::{Body, Path, Query, RequestBody};
use super::format::{parse_id, rfc3339};
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/ops/tenants", tenants)
        .at(
            Method::GET,
            "/api/v1/ops/tenants/{tenant}/audit",
            tenant_audit,
        )
        .at(
            Method::GET,
            "/api/v1/ops/contact-requests",
            contact_requests,
        )
        .at(Method::GET, "/api/v1/ops/rollups/allowlist", list_allowlist)
        .at(Method::POST, "/api/v1/ops/rollups/allowlist", add_key)
        .at(
            Method::DELETE,
            "/api/v1/ops/rollups/allowlist/{key}",
            remove_key,
        )
        .at(Method::GET, "/api/v1/ops/rollups/{key}", rollup_cells)
}

/// The tenant registry, filtered like `/app/tenants`.
async fn tenants(
    State(state): State<AppState>,
    caller: StaffCaller,
    Query(query): Query<crate::rules::RegistryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, None).await?;
    let tenants = store::control::registry(&mut tx, &query.filter()).await?;
    tx.commit().await?;
    Ok(Json(json!({ "tenants": tenants })))
}

/// A tenant's audit log, newest first, and whether its chain verifies; the read is recorded in
/// that tenant's chain (`audit.read_by_staff`) and commits with it.
async fn tenant_audit(
    State(state): State<AppState>,
    caller: StaffCaller,
    Path(tenant): Path<String>,
    Query(params): Query<super::workspace::AuditParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = TenantId::from_uuid(parse_id(&tenant, "the tenant id")?);
    let mut tx = caller.tx(&state, Some(tenant)).await?;
    store::audit::record_staff_read(
        &mut tx,
        store::audit::StaffReadView::Api,
        &params.filter(),
        Some(params.limit()),
    )
    .await?;
    super::workspace::audit_log(tx, &params).await
}

async fn contact_requests(
    State(state): State<AppState>,
    caller: StaffCaller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let requests =
        store::contact::list(&state.database, store::Actor::User(caller.user), 500).await?;
    Ok(Json(json!({ "contact_requests": requests })))
}

async fn list_allowlist(
    State(state): State<AppState>,
    caller: StaffCaller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Some(TenantId::PLATFORM)).await?;
    let keys = store::rollups::list_keys(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
struct NewKey {
    key: String,
}

impl RequestBody for NewKey {
    const SCHEMA: &'static str = "AllowlistKey";
    const SHAPE: &'static str = r#"{"key": "power_kw"}"#;

    /// 400 naming the field, as the key's own check answers.
    fn refusal(violation: super::conformance::Violation) -> ApiError {
        super::extract::refused(StatusCode::BAD_REQUEST, "invalid", &violation)
    }
}

/// Allowlists a key (or brings a retired one back); audited in the platform chain.
async fn add_key(
    State(state): State<AppState>,
    caller: StaffCaller,
    Body(request): Body<NewKey>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let key = request.key.trim();
    store::rollups::parse_key(key)
        .map_err(|error| ApiError::from(error).with_details(json!({ "field": "key" })))?;
    let mut tx = caller.tx(&state, Some(TenantId::PLATFORM)).await?;
    store::rollups::allow_key(&mut tx, key).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "status": "allowlisted" })),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RemoveParams {
    purge: bool,
}

/// Removes a key: its aggregation stops; `?purge=true` deletes its history too.
async fn remove_key(
    State(state): State<AppState>,
    caller: StaffCaller,
    Path(key): Path<String>,
    Query(params): Query<RemoveParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    store::rollups::parse_key(&key)
        .map_err(|error| ApiError::from(error).with_details(json!({ "parameter": "key" })))?;
    let mut tx = caller.tx(&state, Some(TenantId::PLATFORM)).await?;
    store::rollups::remove_key(&mut tx, &key, params.purge).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "key": key,
        "status": if params.purge { "purging" } else { "retired" },
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CellParams {
    granularity: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
}

/// The console's cells of a key: the (bucket, plan, industry, region) cells the disclosure rule
/// publishes (`store::cohort`: at least k distinct tenants, k from the platform's configuration
/// and never below 2, and none that would reveal a smaller cohort by subtraction); the rest are
/// left out, indistinguishable from cells without data.
async fn rollup_cells(
    State(state): State<AppState>,
    caller: StaffCaller,
    Path(key): Path<String>,
    params: Result<Query<CellParams>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "from and to must be RFC 3339 times; granularity minute or hour",
        )
        .with_details(json!({ "parameters": ["granularity", "from", "to"] }))
    })?;
    store::rollups::parse_key(&key)
        .map_err(|error| ApiError::from(error).with_details(json!({ "parameter": "key" })))?;
    let granularity = match params.granularity.as_deref() {
        None | Some("minute") => Granularity::Minute,
        Some("hour") => Granularity::Hour,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "granularity must be minute or hour",
            )
            .with_details(json!({ "parameter": "granularity" })));
        }
    };
    let to = params.to.unwrap_or_else(OffsetDateTime::now_utc);
    let from = params.from.unwrap_or(to - time::Duration::days(1));
    if from >= to || to - from > time::Duration::days(93) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "from must be before to, at most 93 days apart",
        )
        .with_details(json!({ "parameters": ["from", "to"] })));
    }
    let min_cohort = state.min_cohort.max(2);
    let mut tx = caller.tx(&state, Some(TenantId::PLATFORM)).await?;
    let cells = store::rollups::cells(&mut tx, granularity, &key, from, to, min_cohort).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "key": key,
        "min_cohort": min_cohort,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "cells": cells,
    })))
}
