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
use super::extract::{Body, Path, RequestBody};
use super::registry::Routes;
use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::sso::domains::{Verification, check_and_verify, record_name};
use crate::sso::settings::SsoInput;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/sso", read)
        .at(Method::PUT, "/api/v1/sso", replace)
        .at(Method::DELETE, "/api/v1/sso", remove)
        .at(
            Method::POST,
            "/api/v1/sso/domains/{domain}/verify",
            verify_domain,
        )
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

/// Checks one of the workspace's domains for its DNS TXT record, as the settings page's button
/// does, and verifies it (audited): the domain as it now stands, or why it is not verified, with
/// the record to publish. Already verified: answered as it is, nothing looked up.
async fn verify_domain(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddr(client_addr): ClientAddr,
    Path(domain): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let (tenant, listed) = listed_domain(&state, &caller, &domain).await?;
    if listed.verified {
        return Ok(Json(json!({ "domain": listed })));
    }
    // The audit log names the person: a member, or the member holding the token.
    let by = match &caller {
        Caller::Member { user, .. } => *user,
        Caller::Token(grant) => grant.holder.ok_or_else(|| {
            ApiError::forbidden(
                "a token made at the command line names no member to record as the verifier; \
                 use a member's token or session",
            )
        })?,
    };
    let record = json!({
        "record": record_name(&domain),
        "type": "TXT",
        "value": state.sso.domains().record_value(tenant),
    });
    let refused = |code: &'static str, message: &str| {
        ApiError::new(StatusCode::CONFLICT, code, message).with_details(record.clone())
    };
    match check_and_verify(&state, tenant, by, &domain, client_addr).await? {
        Verification::Verified => {}
        Verification::NoRecord => {
            return Err(refused(
                "no_record",
                "the domain has no TXT record at the name in details; publish the value there",
            ));
        }
        Verification::WrongToken => {
            return Err(refused(
                "wrong_token",
                "the domain's TXT records do not include this workspace's value (in details)",
            ));
        }
        Verification::Taken => {
            return Err(refused(
                "domain_taken",
                "another workspace has this domain verified",
            ));
        }
        Verification::NotListed => return Err(not_listed()),
        Verification::LookupFailed => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the domain's DNS records could not be looked up now; retry later",
            ));
        }
    }
    let (_, verified) = listed_domain(&state, &caller, &domain).await?;
    Ok(Json(json!({ "domain": verified })))
}

/// The caller's workspace and its SSO domain `domain` (404 when it lists no such domain).
async fn listed_domain(
    state: &AppState,
    caller: &Caller,
    domain: &str,
) -> Result<(domain::TenantId, store::sso::SsoDomain), ApiError> {
    let mut tx = caller.tx(state, Permission::ManageSso).await?;
    let tenant = tx
        .tenant()
        .ok_or_else(|| ApiError::forbidden("single sign-on belongs to a workspace"))?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    settings
        .and_then(|settings| {
            settings
                .domains
                .into_iter()
                .find(|listed| listed.domain == domain)
        })
        .map(|listed| (tenant, listed))
        .ok_or_else(not_listed)
}

fn not_listed() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "the workspace's single sign-on lists no such domain",
    )
}
