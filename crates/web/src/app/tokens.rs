//! `/app/settings/api-tokens`: the workspace's JSON API tokens, created with a role no higher
//! than the creator's and shown once, listed, and revoked.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role};
use serde::Deserialize;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::rules::{TOKEN_DAYS, grantable_roles, token_name_is_valid};
use crate::shell::{Shell, date, shell};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/app/settings/api-tokens",
            get(api_tokens_page).post(create_api_token),
        )
        .route(
            "/app/settings/api-tokens/{token}/revoke",
            post(revoke_api_token),
        )
}

#[derive(Debug)]
struct TokenRow {
    token_id: uuid::Uuid,
    name: String,
    role: Role,
    expires: String,
    status: &'static str,
}

#[derive(Debug)]
struct CreatedToken {
    name: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct TokenForm {
    name: String,
    role: String,
    days: String,
}

impl Default for TokenForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            role: "viewer".into(),
            days: "90".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "app/api_tokens.html")]
struct ApiTokensPage {
    chrome: Chrome,
    shell: Shell,
    tokens: Vec<TokenRow>,
    roles: Vec<SelectOption>,
    form: TokenForm,
    created: Option<CreatedToken>,
    notice: Option<&'static str>,
    errors: Vec<String>,
}

async fn render_tokens_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    form: TokenForm,
    created: Option<CreatedToken>,
    notice: Option<&'static str>,
    errors: Vec<String>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageApiTokens).await?;
    let tokens = store::api_tokens::list(&mut tx).await?;
    tx.commit().await?;
    let now = time::OffsetDateTime::now_utc();
    Ok(render(
        status,
        &ApiTokensPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/settings/api-tokens"),
            tokens: tokens
                .into_iter()
                .map(|token| TokenRow {
                    status: if token.revoked_at.is_some() {
                        "revoked"
                    } else if token.expires_at <= now {
                        "expired"
                    } else {
                        "active"
                    },
                    token_id: token.token_id,
                    name: token.name,
                    role: token.role,
                    expires: date(token.expires_at),
                })
                .collect(),
            roles: select_options(&grantable_roles(member.role()), &form.role),
            form,
            created,
            notice,
            errors,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokensQuery {
    done: String,
}

async fn api_tokens_page(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<TokensQuery>,
) -> Result<Response, PageError> {
    let notice = (query.done == "revoked").then_some("The token was revoked; it works no more.");
    render_tokens_page(
        &state,
        &member,
        StatusCode::OK,
        TokenForm::default(),
        None,
        notice,
        Vec::new(),
    )
    .await
}

/// Creates a token and shows its text once, in this response only (which, like every page, is
/// `Cache-Control: no-store`).
async fn create_api_token(
    State(state): State<AppState>,
    member: Member,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageApiTokens)?;
    let mut errors = Vec::new();
    let role = form
        .role
        .parse::<Role>()
        .ok()
        .filter(|role| grantable_roles(member.role()).contains(&role.as_str()));
    if role.is_none() {
        errors.push("Choose a role no higher than your own.".to_owned());
    }
    let days = form
        .days
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|days| TOKEN_DAYS.contains(days));
    if days.is_none() {
        errors.push("Choose an expiry between 1 and 366 days.".to_owned());
    }
    let name = form.name.trim();
    if !token_name_is_valid(name) {
        errors.push("Name the token (up to 100 characters).".to_owned());
    }
    let (Some(role), Some(days), true) = (role, days, errors.is_empty()) else {
        return render_tokens_page(
            &state,
            &member,
            StatusCode::UNPROCESSABLE_ENTITY,
            form,
            None,
            None,
            errors,
        )
        .await;
    };
    let mut tx = member.tx(&state, Permission::ManageApiTokens).await?;
    let (token, text) =
        store::api_tokens::create(&mut tx, name, role, time::Duration::days(days)).await?;
    tx.commit().await?;
    tracing::info!(token = %token.token_id, by = %member.session().user.user_id, "API token created");
    render_tokens_page(
        &state,
        &member,
        StatusCode::CREATED,
        TokenForm::default(),
        Some(CreatedToken {
            name: token.name,
            text,
        }),
        None,
        Vec::new(),
    )
    .await
}

async fn revoke_api_token(
    State(state): State<AppState>,
    member: Member,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let token: uuid::Uuid = token.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(&state, Permission::ManageApiTokens).await?;
    store::api_tokens::revoke(&mut tx, token).await?;
    tx.commit().await?;
    Ok(Redirect::to("/app/settings/api-tokens?done=revoked").into_response())
}
