//! Accepting an invitation to a workspace: as the signed-in invitee, or by creating the
//! invitee's account with the link.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::Email;
use store::StoreError;

use super::page::AuthForm;
use super::password;
use super::session::Visitor;
use super::sign_in::start_session;
use crate::AppState;
use crate::pages::{Chrome, PageError, render};

const INVITATION_INVALID: &str =
    "This invitation has expired, was already used, or was withdrawn. Ask for a new one.";

#[derive(Template)]
#[template(path = "auth/invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    error: Option<&'static str>,
    invitation: Option<store::invitations::InvitationView>,
    token: String,
    signed_in_as_invitee: bool,
    signed_in_as_other: bool,
    account_exists: bool,
    min_password: usize,
    max_password: usize,
}

async fn invitation_page_for(
    state: &AppState,
    visitor: &Visitor,
    token: String,
    status: StatusCode,
    error: Option<&'static str>,
) -> Result<Response, PageError> {
    let invitation = store::invitations::find(&state.database, &token).await?;
    let Some(view) = invitation else {
        let page = InvitationPage {
            chrome: visitor.chrome("auth"),
            error: Some(INVITATION_INVALID),
            invitation: None,
            token: String::new(),
            signed_in_as_invitee: false,
            signed_in_as_other: false,
            account_exists: false,
            min_password: password::MIN_CHARS,
            max_password: password::MAX_CHARS,
        };
        return Ok(render(StatusCode::NOT_FOUND, &page));
    };
    let signed_in_email = visitor
        .session
        .as_ref()
        .map(|session| session.user.email.clone());
    let account_exists = match Email::parse(&view.email) {
        Ok(email) => store::accounts::credentials(&state.database, &email)
            .await?
            .is_some(),
        Err(_) => false,
    };
    let page = InvitationPage {
        chrome: visitor.chrome("auth"),
        error,
        signed_in_as_invitee: signed_in_email.as_deref() == Some(view.email.as_str()),
        signed_in_as_other: signed_in_email
            .as_deref()
            .is_some_and(|email| email != view.email),
        account_exists,
        invitation: Some(view),
        token,
        min_password: password::MIN_CHARS,
        max_password: password::MAX_CHARS,
    };
    Ok(render(status, &page))
}

pub(super) async fn invitation_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    invitation_page_for(&state, &visitor, token, StatusCode::OK, None).await
}

/// Accepts as the signed-in invitee, or creates the invitee's account and accepts with it.
pub(super) async fn accept_invitation(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
    Form(form): Form<AuthForm>,
) -> Result<Response, PageError> {
    if let Some(session) = &visitor.session {
        let Ok(email) = Email::parse(&session.user.email) else {
            return invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await;
        };
        let accepted =
            store::invitations::accept(&state.database, &token, session.user.user_id, &email)
                .await?;
        let Some(view) = accepted else {
            return invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await;
        };
        store::accounts::set_active_tenant(&state.database, &session.token, view.tenant).await?;
        tracing::info!(user = %session.user.user_id, tenant = %view.tenant, "invitation accepted");
        return Ok(Redirect::to("/app").into_response());
    }
    if let Err(message) = password::check_new(&form.password) {
        let error = if message.contains("at least") {
            "Choose a password of at least 12 characters."
        } else {
            "Choose a password of at most 128 characters."
        };
        return invitation_page_for(
            &state,
            &visitor,
            token,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(error),
        )
        .await;
    }
    let given = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&given))
        .await
        .map_err(|_| StoreError::Config("password hashing task failed"))?;
    match store::invitations::accept_with_new_account(
        &state.database,
        &token,
        &form.display_name,
        &hash,
    )
    .await
    {
        Ok(Some((user, view))) => {
            tracing::info!(%user, tenant = %view.tenant, "account created from an invitation");
            Ok(start_session(&state, &visitor, user).await?)
        }
        Ok(None) => invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await,
        Err(StoreError::AlreadyExists(_)) => {
            invitation_page_for(
                &state,
                &visitor,
                token,
                StatusCode::CONFLICT,
                Some("An account with this address exists: sign in to accept."),
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}
