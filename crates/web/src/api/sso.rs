//! `/api/v1/sso`: the workspace's single sign-on configuration, as on `/app/settings/sso`
//! (`manage_sso`: owners only). The client secret is write-only: a PUT may set it, no answer contains
//! it. Every change is audited by the store in the same transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::Permission;
use serde_json::json;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, RequestBody};
use super::registry::Routes;
use crate::AppState;
use crate::sso::settings::SsoInput;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/sso", read)
        .at(Method::PUT, "/api/v1/sso", replace)
        .at(Method::DELETE, "/api/v1/sso", remove)
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSso).await?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    match settings {
        Some(settings) => Ok(Json(json!({ "sso": settings }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "single sign-on is not configured",
        )),
    }
}

impl RequestBody for SsoInput {
    const SCHEMA: &'static str = "SsoInput";
    const SHAPE: &'static str = r#"{"issuer": "https://...", "client_id": "...", "client_secret": "... (omit to keep)", "domains": ["example.com"], "default_role": "admin"|"operator"|"viewer", "enabled": true|false, "privileged_sign_in": true|false}"#;

    /// 400, as the configuration's own checks answer.
    fn refusal(violation: super::conformance::Violation) -> ApiError {
        super::extract::refused(StatusCode::BAD_REQUEST, "invalid", &violation)
    }
}

async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Body(input): Body<SsoInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSso).await?;
    let valid = input.validate(state.sso.policy()).map_err(|errors| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", errors.join(" "))
            .with_details(json!({ "problems": errors }))
    })?;
    // The first configuration needs the secret, and so does a change of issuer or client id
    // (the stored secret was entered for the previous IdP and is never sent to another); other
    // changes may leave it out to keep it. That depends on what is stored, not on the body's
    // shape: a conflict with the current state.
    if valid.client_secret.is_none() {
        let message = match store::sso::settings(&mut tx).await? {
            None => Some(
                "single sign-on is not configured yet: the first configuration needs client_secret",
            ),
            Some(stored)
                if stored.issuer != valid.issuer || stored.client_id != valid.client_id =>
            {
                Some("a new issuer or client id needs its client_secret")
            }
            Some(_) => None,
        };
        if let Some(message) = message {
            return Err(
                ApiError::new(StatusCode::CONFLICT, "secret_required", message)
                    .with_details(json!({ "field": "client_secret" })),
            );
        }
    }
    store::sso::put(&mut tx, &valid.change(), state.sso.client_secrets()).await?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "sso": settings })))
}

async fn remove(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSso).await?;
    store::sso::delete(&mut tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
