//! Who may act in the workspace, as the settings pages manage it: `/api/v1/members` (list,
//! change a role, remove), `/api/v1/invitations` (invite by email, list, withdraw) and
//! `/api/v1/api-tokens` (create, shown once; list; revoke). The rules are the domain's: nobody
//! grants more than they hold, only an owner touches an owner, and the store keeps at least one
//! owner. Every change is audited by the store in the caller's transaction.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::{Email, Permission, Role, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, RequestBody};
use super::format::{parse_id, rfc3339};
use super::registry::Routes;
use crate::AppState;
use crate::rules::{
    INVITATION_LIFETIME, INVITATION_RETRY_AFTER_SECONDS, Invited, Inviter, TOKEN_DAYS,
    send_invitation, token_name_is_valid,
};

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/members", list_members)
        .at(Method::PATCH, "/api/v1/members/{user}", change_role)
        .at(Method::DELETE, "/api/v1/members/{user}", remove_member)
        .at(Method::GET, "/api/v1/invitations", list_invitations)
        .at(Method::POST, "/api/v1/invitations", invite)
        .at(
            Method::DELETE,
            "/api/v1/invitations/{invitation}",
            withdraw_invitation,
        )
        .at(Method::GET, "/api/v1/api-tokens", list_tokens)
        .at(Method::POST, "/api/v1/api-tokens", create_token)
        .at(
            Method::POST,
            "/api/v1/api-tokens/{token}/revoke",
            revoke_token,
        )
}

/// A role the caller names in a body: a tenant role no higher than the caller's own. The
/// caller's permission is checked first, so a refused role never says more than 403.
fn grantable(caller: &Caller, permission: Permission, role: &str) -> Result<Role, ApiError> {
    caller.require(permission)?;
    let role = role
        .parse::<Role>()
        .ok()
        .filter(|role| role.is_tenant_role());
    let Some(role) = role else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "role must be owner, admin, operator or viewer",
        )
        .with_details(json!({ "field": "role" })));
    };
    if !caller.role().may_grant(role) {
        return Err(ApiError::forbidden(format!(
            "the {} role cannot grant the {role} role",
            caller.role()
        ))
        .with_details(json!({ "field": "role" })));
    }
    Ok(role)
}

async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageMembers).await?;
    let members = store::members::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    role: String,
}

impl RequestBody for RoleChange {
    const SCHEMA: &'static str = "RoleChange";
    const SHAPE: &'static str = r#"{"role": "owner"|"admin"|"operator"|"viewer"}"#;
}

/// A member change under the domain's rules, then the store's (the last owner stays).
async fn change_member(
    state: &AppState,
    caller: &Caller,
    user: &str,
    new_role: Option<Role>,
) -> Result<Role, ApiError> {
    let user = UserId::from_uuid(parse_id(user, "the user id")?);
    let mut tx = caller.tx(state, Permission::ManageMembers).await?;
    let current = store::members::role_of(&mut tx, user).await?;
    if !caller.role().may_change_member(current, new_role) {
        return Err(ApiError::forbidden(
            "only an owner can make someone an owner or change an owner's membership",
        ));
    }
    let outcome = match new_role {
        Some(role) => store::members::change_role(&mut tx, user, role).await,
        None => store::members::remove(&mut tx, user).await,
    };
    match outcome {
        Ok(previous) => {
            tx.commit().await?;
            Ok(previous)
        }
        Err(store::StoreError::Forbidden(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_owner",
            "a workspace must keep at least one owner: make someone else an owner first",
        )),
        Err(error) => Err(error.into()),
    }
}

async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    Body(request): Body<RoleChange>,
) -> Result<Json<Value>, ApiError> {
    let role = grantable(&caller, Permission::ManageMembers, &request.role)?;
    let previous = change_member(&state, &caller, &user, Some(role)).await?;
    Ok(Json(
        json!({ "user_id": user, "role": role, "previous_role": previous }),
    ))
}

async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_member(&state, &caller, &user, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn invitation_json(invitation: &store::invitations::Invitation) -> Value {
    json!({
        "invitation_id": invitation.invitation_id,
        "email": invitation.email,
        "role": invitation.role,
        "expires_at": rfc3339(invitation.expires_at),
    })
}

async fn list_invitations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageMembers).await?;
    let invitations = store::invitations::list_open(&mut tx).await?;
    tx.commit().await?;
    let invitations: Vec<Value> = invitations.iter().map(invitation_json).collect();
    Ok(Json(json!({ "invitations": invitations })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvitation {
    email: String,
    role: String,
}

impl RequestBody for NewInvitation {
    const SCHEMA: &'static str = "NewInvitation";
    const SHAPE: &'static str =
        r#"{"email": "name@example.com", "role": "admin"|"operator"|"viewer"|"owner"}"#;
}

/// Invites an address; the one-time link goes to that address by mail (or to the server log
/// without a mail server), never into the answer.
async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<NewInvitation>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::ManageMembers)?;
    let email = Email::parse(&request.email).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "email must be an address like name@example.com",
        )
        .with_details(json!({ "field": "email" }))
    })?;
    let role = grantable(&caller, Permission::ManageMembers, &request.role)?;
    let mut tx = caller.tx(&state, Permission::ManageMembers).await?;
    let workspace = store::control::current_tenant(&mut tx).await?;
    let inviter = match caller {
        Caller::Member { user, .. } => Inviter::Member(user),
        Caller::Token(grant) => grant
            .holder
            .map_or(Inviter::Token(grant.token), Inviter::Member),
    };
    let invitation =
        match send_invitation(&state, tx, inviter, &email, role, &workspace.name).await? {
            Invited::Sent(invitation) => invitation,
            Invited::Limited(limit) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invitations_rate_limited",
                    "too many invitations this hour: at most 20 per inviter and 50 per workspace; \
                 nothing was sent, retry after the time Retry-After gives",
                )
                .with_details(json!({ "limit": limit.as_str() }))
                .with_retry_after(INVITATION_RETRY_AFTER_SECONDS));
            }
        };
    let expires_at = time::OffsetDateTime::now_utc() + INVITATION_LIFETIME;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "invitation_id": invitation,
            "email": email.as_str(),
            "role": role,
            "expires_at": rfc3339(expires_at),
        })),
    ))
}

async fn withdraw_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path(invitation): Path<String>,
) -> Result<StatusCode, ApiError> {
    let invitation: Uuid = parse_id(&invitation, "the invitation id")?;
    let mut tx = caller.tx(&state, Permission::ManageMembers).await?;
    store::invitations::revoke(&mut tx, invitation).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token as listed, with whether it still works.
fn token_json(token: &store::api_tokens::ApiToken) -> Value {
    let status = if token.revoked_at.is_some() {
        "revoked"
    } else if token.expires_at <= time::OffsetDateTime::now_utc() {
        "expired"
    } else {
        "active"
    };
    let mut value = json!(token);
    value["status"] = json!(status);
    value
}

async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageApiTokens).await?;
    let tokens = store::api_tokens::list(&mut tx).await?;
    tx.commit().await?;
    let tokens: Vec<Value> = tokens.iter().map(token_json).collect();
    Ok(Json(json!({ "api_tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    #[serde(default = "default_token_days")]
    days: i64,
}

fn default_token_days() -> i64 {
    90
}

impl RequestBody for NewToken {
    const SCHEMA: &'static str = "NewApiToken";
    const SHAPE: &'static str = r#"{"name": "...", "role": "admin"|"operator"|"viewer"|"owner", "days": 1..366 (default 90)}"#;
}

/// Creates a token; its text is in this answer only (like every API answer, `no-store`).
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::ManageApiTokens)?;
    if !token_name_is_valid(&request.name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "name must be 1 to 100 characters, none of them control characters",
        )
        .with_details(json!({ "field": "name" })));
    }
    if !TOKEN_DAYS.contains(&request.days) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "days must be between {} and {}",
                TOKEN_DAYS.start(),
                TOKEN_DAYS.end()
            ),
        )
        .with_details(json!({ "field": "days" })));
    }
    let role = grantable(&caller, Permission::ManageApiTokens, &request.role)?;
    let mut tx = caller.tx(&state, Permission::ManageApiTokens).await?;
    let (token, text) = store::api_tokens::create(
        &mut tx,
        request.name.trim(),
        role,
        time::Duration::days(request.days),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "api_token": token_json(&token), "token": text })),
    ))
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    let token: Uuid = parse_id(&token, "the token id")?;
    let mut tx = caller.tx(&state, Permission::ManageApiTokens).await?;
    store::api_tokens::revoke(&mut tx, token).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
