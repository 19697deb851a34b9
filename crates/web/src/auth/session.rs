//! Who is asking: the [`Visitor`] of any page (maybe signed in) and the [`Member`] of a
//! workspace that every `/app` route takes. Sessions live in the database; the browser holds
//! only a random reference in the `__Host-` session cookie.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use domain::{Permission, Role, TenantId};
use store::accounts::{Membership, SessionLifetime, SessionUser};
use store::{Scope, TenantTx};

use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::cookies;
use crate::csrf::CsrfToken;
use crate::pages::{Chrome, ChromeSlot, ChromeUser, PageError};

/// Sessions end after 30 minutes without a request, and 12 hours after sign-in whatever happens
/// (ASVS 7.3.1, 7.3.2).
pub const LIFETIME: SessionLifetime = SessionLifetime {
    idle: time::Duration::minutes(30),
    absolute: time::Duration::hours(12),
};

/// Anyone requesting a page.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub csrf: String,
    pub session: Option<SignedIn>,
    pub client_addr: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub path: String,
}

/// A live session and its account.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: String,
    pub user: SessionUser,
}

impl Visitor {
    pub fn chrome(&self, section: &'static str) -> Chrome {
        Chrome {
            csrf: self.csrf.clone(),
            section,
            user: self.session.as_ref().map(|session| ChromeUser {
                display_name: if session.user.display_name.is_empty() {
                    session.user.email.clone()
                } else {
                    session.user.display_name.clone()
                },
            }),
        }
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|token| token.0.clone())
            .unwrap_or_default();
        let client_addr = ClientAddr::of_parts(parts, &state.trusted_proxies).0;
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut visitor = Visitor {
            csrf,
            session: None,
            client_addr,
            user_agent,
            path: parts.uri.path().to_owned(),
        };
        if let Some(token) = cookies::get(&parts.headers, cookies::SESSION) {
            match store::accounts::find_session(&state.database, &token, LIFETIME.idle).await {
                Ok(Some(user)) => visitor.session = Some(SignedIn { token, user }),
                Ok(None) => {}
                Err(error) => {
                    return Err(PageError::from(error).into_page(&visitor.chrome("")));
                }
            }
        }
        if let Some(slot) = parts.extensions.get::<ChromeSlot>() {
            slot.fill(visitor.chrome(""));
        }
        Ok(visitor)
    }
}

/// A signed-in account in the app, with the workspaces it belongs to (maybe none) and whether it
/// is internal operations staff. [`Member`] and [`Staff`] narrow it.
#[derive(Debug, Clone)]
pub struct AppUser {
    pub visitor: Visitor,
    /// The session's workspace, or the first; `None` for an account in no workspace.
    pub workspace: Option<Membership>,
    pub workspaces: Vec<Membership>,
}

impl AppUser {
    pub fn session(&self) -> &SignedIn {
        self.visitor
            .session
            .as_ref()
            .expect("an app user is always signed in")
    }

    pub fn is_staff(&self) -> bool {
        self.session().user.internal_ops
    }
}

impl FromRequestParts<AppState> for AppUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        let Some(session) = &visitor.session else {
            let next = parts
                .uri
                .path_and_query()
                .map(|path| path.as_str().to_owned())
                .unwrap_or_default();
            return Err(PageError::SignIn { next }.into_page(&visitor.chrome("")));
        };
        let mut workspaces = store::accounts::memberships(&state.database, session.user.user_id)
            .await
            .map_err(|error| PageError::from(error).into_page(&visitor.chrome("app")))?;
        // A session from a workspace's IdP acts in that workspace only (crate::sso).
        if let Some(only) = session.user.sso_tenant {
            workspaces.retain(|workspace| workspace.tenant_id == only);
        }
        let mut workspace = session
            .user
            .active_tenant
            .and_then(|active| workspaces.iter().find(|w| w.tenant_id == active))
            .cloned();
        if workspace.is_none() && workspaces.len() > 1 {
            // Not the first by name: a workspace's name is its creator's choice.
            let landing = store::accounts::landing_workspace(&state.database, session.user.user_id)
                .await
                .map_err(|error| PageError::from(error).into_page(&visitor.chrome("app")))?;
            workspace = workspaces
                .iter()
                .find(|w| Some(w.tenant_id) == landing)
                .cloned();
        }
        let workspace = workspace.or_else(|| workspaces.first().cloned());
        let user = AppUser {
            visitor,
            workspace,
            workspaces,
        };
        // A page that fails after this point is drawn in the app's shell (`shell`'s layer).
        if let Some(slot) = parts.extensions.get::<ChromeSlot>() {
            slot.fill_account(Arc::new(user.clone()));
        }
        Ok(user)
    }
}

/// A signed-in member acting in one of their workspaces. Extracting it signs the visitor in
/// (redirect) when needed, and picks the session's workspace, or their first.
#[derive(Debug, Clone)]
pub struct Member {
    pub visitor: Visitor,
    pub workspace: Membership,
    pub workspaces: Vec<Membership>,
}

/// The page shown to a signed-in account that belongs to no workspace.
#[derive(askama::Template)]
#[template(path = "app/no_workspace.html")]
struct NoWorkspacePage {
    chrome: Chrome,
}

impl FromRequestParts<AppState> for Member {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let user = AppUser::from_request_parts(parts, state).await?;
        let Some(workspace) = user.workspace else {
            // Staff without a workspace of their own start at the tenant registry.
            if user
                .visitor
                .session
                .as_ref()
                .is_some_and(|s| s.user.internal_ops)
            {
                return Err(axum::response::Redirect::to("/app/tenants").into_response());
            }
            return Err(crate::pages::render(
                axum::http::StatusCode::FORBIDDEN,
                &NoWorkspacePage {
                    chrome: user.visitor.chrome("app"),
                },
            ));
        };
        Ok(Member {
            visitor: user.visitor,
            workspace,
            workspaces: user.workspaces,
        })
    }
}

/// Internal operations staff. Anyone else signed in gets the 403 page; the database refuses
/// them too, since staff work opens `Scope::InternalOps` transactions.
#[derive(Debug, Clone)]
pub struct Staff(pub AppUser);

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let user = AppUser::from_request_parts(parts, state).await?;
        if !user.is_staff() {
            tracing::info!(
                user = %user.session().user.user_id,
                path = %user.visitor.path,
                "refused an operations page to an account that is not staff"
            );
            // Drawn by the app's failure layer, inside the app's shell.
            return Err(PageError::Forbidden.into_response());
        }
        Ok(Staff(user))
    }
}

impl Staff {
    /// An internal operations transaction, bound to `tenant` when one is named (a tenant's
    /// audit log), acting as the staff member.
    pub async fn tx(
        &self,
        state: &AppState,
        tenant: Option<TenantId>,
    ) -> Result<TenantTx, PageError> {
        Ok(TenantTx::begin(
            &state.database,
            Scope::InternalOps {
                tenant,
                actor: store::Actor::User(self.0.session().user.user_id),
            },
        )
        .await?)
    }
}

impl Member {
    pub fn role(&self) -> Role {
        self.workspace.role
    }

    pub fn tenant(&self) -> TenantId {
        self.workspace.tenant_id
    }

    pub fn session(&self) -> &SignedIn {
        self.visitor
            .session
            .as_ref()
            .expect("a member is always signed in")
    }

    /// Refuses unless the member's role holds `permission` in the domain's permission table.
    pub fn require(&self, permission: Permission) -> Result<(), PageError> {
        if self.role().allows(permission) {
            Ok(())
        } else {
            tracing::info!(
                user = %self.session().user.user_id,
                role = %self.role(),
                ?permission,
                "refused a page the member's role does not allow"
            );
            Err(PageError::Forbidden)
        }
    }

    /// Checks `permission`, then opens the member's tenant transaction, in which the database
    /// enforces the same rules again.
    pub async fn tx(
        &self,
        state: &AppState,
        permission: Permission,
    ) -> Result<TenantTx, PageError> {
        self.require(permission)?;
        Ok(TenantTx::begin(
            &state.database,
            Scope::Member {
                tenant: self.tenant(),
                user: self.session().user.user_id,
                role: self.role(),
            },
        )
        .await?)
    }
}
