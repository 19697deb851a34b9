//! The JSON API, `/api/v1`: what the web app's screens (and tenants' scripts) call. Callers
//! authenticate with an API token (`Authorization: Bearer tat1...`) that names the tenant and a
//! tenant role; every route checks the domain's permission table, and the database enforces the
//! same through `TenantTx`.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::{Permission, SourceId};
use serde::Deserialize;
use serde_json::json;
use store::api_tokens::TokenGrant;
use store::{Scope, StoreError, TenantTx};
use uuid::Uuid;

use crate::AppState;

mod mappings;
mod masking;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sources", get(list_sources).post(create_source))
        .route(
            "/api/v1/sources/{source}/pairing-tokens",
            post(pairing_token),
        )
        .route("/api/v1/sources/{source}/revoke", post(revoke_source))
        .route("/api/v1/replays", post(request_replay))
        .route("/api/v1/replays/{request}", get(replay_status))
        .route("/api/v1/dead-letters", get(dead_letters))
        .merge(mappings::routes())
        .merge(masking::routes())
}

/// An error as `{"error": {"code", "message"}}`; never SQL, internals or customer values.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
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
            StoreError::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, "forbidden", why),
            StoreError::Invalid(why) => Self::new(StatusCode::BAD_REQUEST, "invalid", why),
            error if error.is_access_denied() => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role does not allow this",
            ),
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
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The authenticated caller: a valid API token's tenant and role.
#[derive(Debug, Clone, Copy)]
pub struct Caller(TokenGrant);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthenticated = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a valid API token as `Authorization: Bearer <token>`",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(unauthenticated)?;
        match store::api_tokens::authenticate(&state.database, token).await? {
            Some(grant) => Ok(Self(grant)),
            None => Err(unauthenticated()),
        }
    }
}

impl Caller {
    /// Opens the caller's tenant transaction if its role has `permission`.
    async fn tx(&self, state: &AppState, permission: Permission) -> Result<TenantTx, ApiError> {
        if !self.0.role.allows(permission) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {} role does not allow this", self.0.role),
            ));
        }
        Ok(TenantTx::begin(
            &state.database,
            Scope::ApiToken {
                tenant: self.0.tenant,
                token: self.0.token,
                role: self.0.role,
            },
        )
        .await?)
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body must be {shape}"),
        )
    })
}

fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{what} must be a UUID"),
        )
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

async fn create_source(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: NewSource = parse_body(&body, r#"{"name": ..., "kind": "postgres"|"simulator"}"#)?;
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

async fn revoke_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let request: Revocation = parse_body(&body, r#"{"reason": "..."}"#)?;
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

async fn request_replay(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: NewReplay = parse_body(
        &body,
        r#"{"kind": "dlq"}, {"kind": "rebuild"} or {"kind": "range", "from": RFC 3339, "to": RFC 3339}"#,
    )?;
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
