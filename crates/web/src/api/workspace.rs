//! The workspace as its settings and audit pages show it: `/api/v1/workspace` (attributes),
//! `/api/v1/retention` (bronze days) and `/api/v1/audit` (the tenant's own log with its chain
//! status). Every change is audited by the store in the caller's transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::{Permission, Plan, TenantAttributes};
use serde::Deserialize;
use serde_json::{Value, json};
use store::TenantTx;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Query, RequestBody};
use super::registry::Routes;
use crate::AppState;
use crate::rules::{ACTOR_TYPES, RETENTION_DAYS};

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/workspace", read_workspace)
        .at(Method::PATCH, "/api/v1/workspace", update_workspace)
        .at(Method::GET, "/api/v1/retention", read_retention)
        .at(Method::PUT, "/api/v1/retention", set_retention)
        .at(Method::GET, "/api/v1/audit", audit)
}

async fn read_workspace(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewWorkspace).await?;
    let workspace = store::control::current_tenant(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "workspace": workspace })))
}

/// What a PATCH may change; absent fields keep their value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceChange {
    name: Option<String>,
    plan: Option<String>,
    industry: Option<String>,
    region: Option<String>,
}

impl RequestBody for WorkspaceChange {
    const SCHEMA: &'static str = "WorkspaceChange";
    const SHAPE: &'static str = r#"{"name": "...", "plan": "free"|"team"|"business"|"enterprise", "industry": "...", "region": "..."} (each optional)"#;
}

/// Name, industry and region for owners and admins; the plan (billing) for owners only, as on
/// the settings page.
async fn update_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Body(change): Body<WorkspaceChange>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageWorkspace).await?;
    let current = store::control::current_tenant(&mut tx).await?;
    let plan = match change.plan.as_deref() {
        None => current.plan.clone(),
        Some(plan) if plan == current.plan => current.plan.clone(),
        Some(plan) => {
            if !caller.role().allows(Permission::ManageBilling) {
                return Err(ApiError::forbidden(format!(
                    "the plan is billing: the {} role cannot change it",
                    caller.role()
                ))
                .with_details(json!({ "field": "plan" })));
            }
            plan.to_owned()
        }
    };
    let plan: Plan = plan.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "plan must be free, team, business or enterprise",
        )
        .with_details(json!({ "field": "plan" }))
    })?;
    let attributes = TenantAttributes::parse(
        change.name.as_deref().unwrap_or(&current.name),
        plan,
        change.industry.as_deref().unwrap_or(&current.industry),
        change.region.as_deref().unwrap_or(&current.region),
    )
    .map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            error.to_string(),
        )
        .with_details(json!({ "field": error.field() }))
    })?;
    store::control::update_tenant(&mut tx, &attributes).await?;
    let workspace = store::control::current_tenant(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "workspace": workspace })))
}

async fn read_retention(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageRetention).await?;
    let days = store::retention::days(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "bronze_days": days })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    bronze_days: i64,
}

impl RequestBody for Retention {
    const SCHEMA: &'static str = "Retention";
    const SHAPE: &'static str = r#"{"bronze_days": 1..3650}"#;
}

async fn set_retention(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<Retention>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::ManageRetention)?;
    let days = i32::try_from(request.bronze_days)
        .ok()
        .filter(|days| RETENTION_DAYS.contains(days))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "bronze_days must be between {} and {}",
                    RETENTION_DAYS.start(),
                    RETENTION_DAYS.end()
                ),
            )
            .with_details(json!({ "field": "bronze_days" }))
        })?;
    let mut tx = caller.tx(&state, Permission::ManageRetention).await?;
    store::retention::set_days(&mut tx, days).await?;
    tx.commit().await?;
    Ok(Json(json!({ "bronze_days": days })))
}

/// The audit log's filters and paging, as the audit page and the operations API take them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AuditParams {
    action: String,
    actor: String,
    before: Option<i64>,
    limit: Option<i64>,
}

impl AuditParams {
    pub(super) fn filter(&self) -> store::audit::AuditFilter {
        let action = self.action.trim();
        store::audit::AuditFilter {
            action_prefix: (!action.is_empty()).then(|| action.chars().take(100).collect()),
            actor_type: (!self.actor.is_empty()).then(|| self.actor.clone()),
            before_seq: self.before,
        }
    }

    /// Entries per page: 100 unless asked, at most 1000.
    pub(super) fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// The transaction tenant's audit entries matching `params`, newest first, whether its chain
/// verifies, and where the next page starts.
pub(super) async fn audit_log(
    mut tx: TenantTx,
    params: &AuditParams,
) -> Result<Json<Value>, ApiError> {
    if !ACTOR_TYPES.contains(&params.actor.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "actor must be user, cli, system, agent or api_token",
        )
        .with_details(json!({ "parameter": "actor" })));
    }
    let filter = params.filter();
    let limit = params.limit();
    // A tenant that does not exist is a 404, not an empty log.
    let tenant = store::control::current_tenant(&mut tx).await?;
    let mut entries = store::audit::search(&mut tx, &filter, limit + 1).await?;
    let chain = store::audit::verify_tenant(&mut tx).await?;
    tx.commit().await?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_before = more.then(|| entries.last().map(|last| last.seq)).flatten();
    Ok(Json(json!({
        "tenant_id": tenant.tenant_id,
        "chain": { "intact": chain.is_intact(), "entries": chain.entries },
        "entries": entries,
        "next_before": next_before,
    })))
}

/// The caller's workspace's own audit log.
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let tx = caller.tx(&state, Permission::ViewAudit).await?;
    audit_log(tx, &params).await
}
