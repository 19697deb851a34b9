//! The JSON API, `/api/v1`: what the web app's screens (and tenants' scripts) call. Callers
//! authenticate with an API token (`Authorization: Bearer tat1...`) that names the tenant and a
//! tenant role; every route checks the domain's permission table, and the database enforces the
//! same through `TenantTx`.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Json, Router};
use domain::{Permission, Role, SourceId, TenantId, UserId};
use serde::Deserialize;
use serde_json::json;

use self::extract::{Body, Path, RequestBody};
use store::api_tokens::TokenGrant;
use store::{Scope, StoreError, TenantTx};
use uuid::Uuid;

use crate::AppState;

mod account;
mod conformance;
mod extract;
mod mappings;
mod masking;
mod members;
mod openapi;
mod ops;
mod sso;
mod workspace;

/// The API's routes, each registered with its method, so that the OpenAPI document
/// ([`openapi::OPERATIONS`]) can be checked against exactly what is served.
pub(crate) struct Routes {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("the API uses plain methods");
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }
}

fn register() -> Routes {
    let routes = Routes {
        router: Router::new(),
        served: Vec::new(),
    }
    .at(Method::GET, "/api/v1/openapi.json", openapi_document)
    .at(Method::GET, "/api/v1/sources", list_sources)
    .at(Method::POST, "/api/v1/sources", create_source)
    .at(
        Method::POST,
        "/api/v1/sources/{source}/pairing-tokens",
        pairing_token,
    )
    .at(
        Method::POST,
        "/api/v1/sources/{source}/revoke",
        revoke_source,
    )
    .at(Method::POST, "/api/v1/replays", request_replay)
    .at(Method::GET, "/api/v1/replays/{request}", replay_status)
    .at(Method::GET, "/api/v1/dead-letters", dead_letters);
    let routes = masking::register(mappings::register(routes));
    let routes = workspace::register(members::register(account::register(routes)));
    sso::register(ops::register(routes))
}

pub fn routes() -> Router<AppState> {
    register()
        .router
        .method_not_allowed_fallback(extract::method_not_allowed)
}

/// What [`routes`] serves, as (method, path).
#[cfg(test)]
pub(crate) fn routes_served() -> Vec<(Method, &'static str)> {
    register().served
}

/// `/api/v1/openapi.json`: public, like any API's description.
async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

/// An error as `{"error": {"code", "message", "details"}}`; never SQL, internals or customer
/// values. `details` is an object, empty unless there is something specific to add (which field
/// was wrong).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            StoreError::AlreadyExists(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            StoreError::Forbidden(why) => Self::forbidden(why),
            StoreError::Invalid(why) => Self::new(StatusCode::BAD_REQUEST, "invalid", why),
            error if error.is_access_denied() => Self::forbidden("your role does not allow this"),
            error => {
                tracing::error!(%error, "API request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the platform could not take this request now; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthenticated = self.status == StatusCode::UNAUTHORIZED;
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut response = (self.status, Json(body)).into_response();
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "send a valid API token as `Authorization: Bearer <token>`, or sign in",
    )
}

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
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    Token(TokenGrant),
    Member {
        tenant: TenantId,
        user: UserId,
        role: Role,
    },
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
            return match store::api_tokens::authenticate(&state.database, token).await? {
                Some(grant) => Ok(Self::Token(grant)),
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
        let workspace = user
            .active_tenant
            .and_then(|active| workspaces.iter().find(|w| w.tenant_id == active))
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
    fn role(&self) -> Role {
        match self {
            Caller::Token(grant) => grant.role,
            Caller::Member { role, .. } => *role,
        }
    }

    /// Refuses a caller whose role lacks `permission`.
    fn require(&self, permission: Permission) -> Result<(), ApiError> {
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
    async fn tx(&self, state: &AppState, permission: Permission) -> Result<TenantTx, ApiError> {
        self.require(permission)?;
        let scope = match *self {
            Caller::Token(grant) => Scope::ApiToken {
                tenant: grant.tenant,
                token: grant.token,
                role: grant.role,
            },
            Caller::Member { tenant, user, role } => Scope::Member { tenant, user, role },
        };
        Ok(TenantTx::begin(&state.database, scope).await?)
    }
}

/// Internal operations staff calling the operations API (`/api/v1/ops/...`) from a signed-in
/// session; API tokens belong to a tenant and never reach it.
#[derive(Debug, Clone, Copy)]
pub struct StaffCaller {
    user: UserId,
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
    async fn tx(&self, state: &AppState, tenant: Option<TenantId>) -> Result<TenantTx, ApiError> {
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

fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{what} must be a UUID"),
        )
        .with_details(json!({ "parameter": what }))
    })
}

async fn list_sources(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewSources).await?;
    let sources = store::sources::list_sources(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "sources": sources })))
}

#[derive(Deserialize)]
struct NewSource {
    name: String,
    kind: String,
}

impl RequestBody for NewSource {
    const SCHEMA: &'static str = "NewSource";
    const SHAPE: &'static str = r#"{"name": ..., "kind": "postgres"|"simulator"}"#;

    /// 400, as the store answers a name or kind it refuses.
    fn refusal(violation: conformance::Violation) -> ApiError {
        extract::refused(StatusCode::BAD_REQUEST, "invalid", &violation)
    }
}

async fn create_source(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<NewSource>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let (source, token) =
        store::sources::create_source(&mut tx, &request.name, &request.kind).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "source": source,
            "pairing_token": { "token": token.token, "expires_at": rfc3339(token.expires_at) },
        })),
    ))
}

async fn pairing_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let token = store::sources::issue_pairing_token(&mut tx, source).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token.token, "expires_at": rfc3339(token.expires_at) })),
    ))
}

#[derive(Deserialize)]
struct Revocation {
    #[serde(default)]
    reason: Option<String>,
}

impl RequestBody for Revocation {
    const SCHEMA: &'static str = "Revocation";
    const SHAPE: &'static str = r#"{"reason": "..."}"#;
    const OPTIONAL: bool = true;
}

async fn revoke_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Body(request): Body<Revocation>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ManageSources).await?;
    let reason = request
        .reason
        .unwrap_or_else(|| "revoked through the API".into());
    let certificates = store::sources::revoke_source(&mut tx, source, &reason).await?;
    tx.commit().await?;
    Ok(Json(
        json!({ "source_id": source, "certificates_revoked": certificates }),
    ))
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum NewReplay {
    Dlq,
    Rebuild,
    Range {
        #[serde(with = "time::serde::rfc3339")]
        from: time::OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        to: time::OffsetDateTime,
    },
}

impl RequestBody for NewReplay {
    const SCHEMA: &'static str = "NewReplay";
    const SHAPE: &'static str = r#"{"kind": "dlq"}, {"kind": "rebuild"} or {"kind": "range", "from": RFC 3339, "to": RFC 3339}"#;
}

async fn request_replay(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<NewReplay>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let kind = match request {
        NewReplay::Dlq => store::replay::ReplayKind::DeadLetters,
        NewReplay::Rebuild => store::replay::ReplayKind::Rebuild,
        NewReplay::Range { from, to } => store::replay::ReplayKind::Range { from, to },
    };
    let mut tx = caller.tx(&state, Permission::ManageReplays).await?;
    let request_id = store::replay::request(&mut tx, &kind).await?;
    tx.commit().await?;
    // Recorded as an intent; the pipeline carries it out.
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "request_id": request_id, "status": "pending" })),
    ))
}

async fn replay_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(request): Path<String>,
) -> Result<Json<store::replay::ReplayRequest>, ApiError> {
    let request: Uuid = parse_id(&request, "the request id")?;
    let mut tx = caller.tx(&state, Permission::ManageReplays).await?;
    let request = store::replay::get(&mut tx, request).await?;
    tx.commit().await?;
    Ok(Json(request))
}

async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDeadLetters).await?;
    let letters = store::dlq::list(&mut tx, 1000).await?;
    tx.commit().await?;
    Ok(Json(json!({ "dead_letters": letters })))
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document says a body is optional exactly where the handler reads a missing one as
    /// `{}`.
    #[test]
    fn optional_bodies_are_documented_as_optional() {
        let optional = |schema: &str| {
            openapi::OPERATIONS
                .iter()
                .filter(|operation| operation.request == Some(schema))
                .all(|operation| operation.body_optional)
        };
        assert!(optional(Revocation::SCHEMA) && Revocation::OPTIONAL);
        assert!(!optional(NewSource::SCHEMA) && !NewSource::OPTIONAL);
        let documented: Vec<&str> = openapi::OPERATIONS
            .iter()
            .filter(|operation| operation.body_optional)
            .filter_map(|operation| operation.request)
            .collect();
        assert_eq!(documented, [Revocation::SCHEMA]);
    }
}
