//! Signing out of this browser, or of every session of the account.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::session::Visitor;
use crate::AppState;
use crate::cookies;
use crate::pages::PageError;

pub(super) async fn sign_out(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    if let Some(session) = &visitor.session {
        store::accounts::revoke_session(&state.database, &session.token).await?;
        tracing::info!(user = %session.user.user_id, "signed out");
    }
    Ok(signed_out_response())
}

pub(super) async fn sign_out_everywhere(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    let Some(session) = &visitor.session else {
        return Ok(signed_out_response());
    };
    let count = store::accounts::revoke_all_sessions(&state.database, session.user.user_id).await?;
    tracing::info!(user = %session.user.user_id, sessions = count, "signed out everywhere");
    Ok(signed_out_response())
}

fn signed_out_response() -> Response {
    let mut response = Redirect::to("/auth?signed_out=1").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
    headers.append(
        header::SET_COOKIE,
        cookies::set(cookies::CSRF, &cookies::random_value(), None),
    );
    response
}
