//! `/app/settings/account`: the member's account in this workspace (role, the workspace's facts)
//! and the account's own sessions, each of which the member can end. Every role has it.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::Permission;
use serde::Deserialize;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, date, shell, timestamp};

const ACCOUNT: &str = "/app/settings/account";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/overview") }))
        .route(ACCOUNT, get(account))
        .route("/app/sessions/{id}/end", post(end_session))
}

#[derive(Debug)]
struct SessionRow {
    id: String,
    created: String,
    last_seen: String,
    client_addr: String,
    user_agent: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "app/account.html")]
struct AccountPage {
    chrome: Chrome,
    shell: Shell,
    tenant: store::control::Tenant,
    created: String,
    sessions: Vec<SessionRow>,
    ended: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AccountQuery {
    ended: Option<String>,
}

async fn account(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<AccountQuery>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ViewWorkspace).await?;
    let tenant = store::control::current_tenant(&mut tx).await?;
    tx.commit().await?;
    let session = member.session();
    let sessions =
        store::accounts::list_sessions(&state.database, session.user.user_id, &session.token)
            .await?;
    Ok(render(
        StatusCode::OK,
        &AccountPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, ACCOUNT),
            created: date(tenant.created_at),
            tenant,
            sessions: sessions
                .into_iter()
                .map(|session| SessionRow {
                    id: session.id,
                    created: timestamp(session.created_at),
                    last_seen: timestamp(session.last_seen_at),
                    client_addr: session.client_addr.unwrap_or_default(),
                    user_agent: session
                        .user_agent
                        .unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect(),
                    current: session.current,
                })
                .collect(),
            ended: query.ended.is_some(),
        },
    ))
}

/// Ends one of the member's own sessions (any workspace's: sessions belong to the account).
async fn end_session(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = member.session().user.user_id;
    if !store::accounts::revoke_session_by_id(&state.database, user, &id).await? {
        return Err(PageError::NotFound);
    }
    tracing::info!(%user, "ended one of the account's sessions");
    Ok(Redirect::to(&format!("{ACCOUNT}?ended=1#sessions-heading")).into_response())
}
