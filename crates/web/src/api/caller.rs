//! Who is calling: [`Caller`], a tenant's API token or a signed-in member in their current
//! workspace, and [`StaffCaller`], internal operations staff by session; each opens the
//! transaction its calls run in.

use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use domain::{Permission, Role, TenantId, UserId};
use serde_json::json;
use store::api_tokens::TokenGrant;
use store::{Scope, TenantTx};

use super::error::{ApiError, unauthenticated};
use crate::AppState;

/// The signed-in account of the request's session cookie, for API calls a browser makes. A
/// state-changing call must also be the app's own (same origin, `X-CSRF-Token` header).
async fn session_user(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<store::accounts::SessionUser>, ApiError> {
    let Some(token) = crate::cookies::get(&parts.headers, crate::cookies::SESSION) else {
        return Ok(None);
    };
    let Some(user) =
        store::accounts::find_session(&state.database, &token, crate::auth::session::LIFETIME.idle)
            .await?
    else {
        return Ok(None);
    };
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe && !crate::csrf::api_request_is_genuine(&parts.headers) {
        tracing::info!(path = %parts.uri.path(), "refused a session API call without its anti-forgery header");
        return Err(ApiError::forbidden(
            "a call with the session cookie must come from the app and send its X-CSRF-Token header",
        )
        .with_details(json!({ "header": "X-CSRF-Token" })));
    }
    Ok(Some(user))
}

/// The authenticated caller: a valid API token's tenant and role, or a signed-in member acting
/// in the session's current workspace with their role there. A request carrying an
/// `Authorization` header is judged by it alone.
#[derive(Debug, Clone)]
pub enum Caller {
    Token(Token),
    Member {
        tenant: TenantId,
        user: UserId,
        role: Role,
    },
}

/// A valid API token's grant, and the transaction that checked it, open in the token's scope
/// until the request takes it ([`Caller::tx`]) or ends (it rolls back).
#[derive(Clone)]
pub struct Token {
    grant: TokenGrant,
    begun: Arc<Mutex<Option<TenantTx>>>,
}

impl std::ops::Deref for Token {
    type Target = TokenGrant;

    fn deref(&self) -> &TokenGrant {
        &self.grant
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Token")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
            let token = authorization
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(unauthenticated)?;
            return match store::api_tokens::authenticate_and_begin(&state.database, token).await? {
                Some((grant, tx)) => Ok(Self::Token(Token {
                    grant,
                    begun: Arc::new(Mutex::new(tx)),
                })),
                None => Err(unauthenticated()),
            };
        }
        let user = session_user(parts, state)
            .await?
            .ok_or_else(unauthenticated)?;
        let mut workspaces = store::accounts::memberships(&state.database, user.user_id).await?;
        // A session from a workspace's IdP acts in that workspace only (crate::sso).
        if let Some(only) = user.sso_tenant {
            workspaces.retain(|workspace| workspace.tenant_id == only);
        }
        let mut workspace = user
            .active_tenant
            .and_then(|active| workspaces.iter().find(|w| w.tenant_id == active));
        if workspace.is_none() && workspaces.len() > 1 {
            // Not the first by name: a workspace's name is its creator's choice.
            let landing = store::accounts::landing_workspace(&state.database, user.user_id).await?;
            workspace = workspaces.iter().find(|w| Some(w.tenant_id) == landing);
        }
        let workspace = workspace
            .or(workspaces.first())
            .ok_or_else(|| ApiError::forbidden("this account belongs to no workspace"))?;
        Ok(Self::Member {
            tenant: workspace.tenant_id,
            user: user.user_id,
            role: workspace.role,
        })
    }
}

impl Caller {
    pub(super) fn role(&self) -> Role {
        match self {
            Caller::Token(token) => token.grant.role,
            Caller::Member { role, .. } => *role,
        }
    }

    /// Refuses a caller whose role lacks `permission`.
    pub(super) fn require(&self, permission: Permission) -> Result<(), ApiError> {
        let role = self.role();
        if role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {role} role does not allow this"
            )))
        }
    }

    /// Opens the caller's tenant transaction if its role has `permission`.
    pub(super) async fn tx(
        &self,
        state: &AppState,
        permission: Permission,
    ) -> Result<TenantTx, ApiError> {
        self.require(permission)?;
        let scope = match self {
            Caller::Token(token) => {
                // The transaction that checked the token, when it is still open: the first
                // transaction a request asks for is that one.
                let begun = token
                    .begun
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(tx) = begun {
                    return Ok(tx);
                }
                let grant = token.grant;
                Scope::ApiToken {
                    tenant: grant.tenant,
                    token: grant.token,
                    role: grant.role,
                    holder: grant.holder,
                }
            }
            Caller::Member { tenant, user, role } => Scope::Member {
                tenant: *tenant,
                user: *user,
                role: *role,
            },
        };
        Ok(TenantTx::begin(&state.database, scope).await?)
    }
}

/// Internal operations staff calling the operations API (`/api/v1/ops/...`) from a signed-in
/// session; API tokens belong to a tenant and never reach it.
#[derive(Debug, Clone, Copy)]
pub struct StaffCaller {
    pub(super) user: UserId,
}

impl FromRequestParts<AppState> for StaffCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::forbidden(
                "the operations API takes a staff session, not an API token",
            ));
        }
        let user = session_user(parts, state)
            .await?
            .ok_or_else(unauthenticated)?;
        if !user.internal_ops {
            return Err(ApiError::forbidden(
                "only internal operations staff may call this",
            ));
        }
        Ok(Self { user: user.user_id })
    }
}

impl StaffCaller {
    /// An internal operations transaction (bound to `tenant` when one is named).
    pub(super) async fn tx(
        &self,
        state: &AppState,
        tenant: Option<TenantId>,
    ) -> Result<TenantTx, ApiError> {
        Ok(TenantTx::begin(
            &state.database,
            Scope::InternalOps {
                tenant,
                actor: store::Actor::User(self.user),
            },
        )
        .await?)
    }
}
