//! Who is calling and what the overview shows: `/api/v1/me` (the caller: a token's workspace
//! and role, or a member's account and workspaces), `/api/v1/activity` (the overview's event
//! counts) and `/api/v1/sessions` (the signed-in account's own sessions, which only a session
//! can list or end: a token belongs to a workspace, not to a person).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use domain::Permission;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::Path;
use super::format::rfc3339;
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/me", me)
        .at(Method::GET, "/api/v1/activity", activity)
        .at(Method::GET, "/api/v1/sessions", sessions)
        .at(Method::DELETE, "/api/v1/sessions/{session}", end_session)
}

async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(match caller {
        Caller::Token(grant) => json!({
            "kind": "api_token",
            "token_id": grant.token,
            "workspace": { "tenant_id": grant.tenant, "role": grant.role },
        }),
        Caller::Member { tenant, user, role } => {
            let workspaces = store::accounts::memberships(&state.database, user).await?;
            let workspaces: Vec<Value> = workspaces
                .iter()
                .map(|workspace| {
                    json!({
                        "tenant_id": workspace.tenant_id,
                        "name": workspace.name,
                        "role": workspace.role,
                    })
                })
                .collect();
            json!({
                "kind": "member",
                "user_id": user,
                "workspace": { "tenant_id": tenant, "role": role },
                "workspaces": workspaces,
            })
        }
    }))
}

/// The overview's live counts: bronze events of the last hour and day, and the newest one's
/// time and table (never its values).
async fn activity(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewBronze).await?;
    let activity = store::live::event_activity(&mut tx).await?;
    tx.commit().await?;
    let latest = activity
        .latest
        .map(|(at, table)| json!({ "committed_at": rfc3339(at), "table": table }));
    Ok(Json(json!({
        "last_hour": activity.last_hour,
        "last_day": activity.last_day,
        "latest": latest,
    })))
}

/// The signed-in account behind a session call, and its session token; tokens are refused.
fn session_account(
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(domain::UserId, String), ApiError> {
    let refused = || {
        ApiError::forbidden(
            "sessions belong to a signed-in account: call this with a session, not an API token",
        )
    };
    match caller {
        Caller::Member { user, .. } => {
            let token =
                crate::cookies::get(headers, crate::cookies::SESSION).ok_or_else(refused)?;
            Ok((*user, token))
        }
        Caller::Token(_) => Err(refused()),
    }
}

async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (user, token) = session_account(&caller, &headers)?;
    let sessions = store::accounts::list_sessions(&state.database, user, &token).await?;
    let sessions: Vec<Value> = sessions
        .into_iter()
        .map(|session| {
            json!({
                "session_id": session.id,
                "created_at": rfc3339(session.created_at),
                "last_seen_at": rfc3339(session.last_seen_at),
                "client_addr": session.client_addr,
                "user_agent": session.user_agent,
                "current": session.current,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// Ends one of the account's own sessions (signing that browser out at once).
async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (user, _) = session_account(&caller, &headers)?;
    if store::accounts::revoke_session_by_id(&state.database, user, &session).await? {
        tracing::info!(%user, "session ended through the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no live session of yours has that id",
        ))
    }
}
