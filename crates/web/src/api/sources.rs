//! A tenant's sources and what flows from them: `/api/v1/sources` (creating one, pairing its
//! agent, revoking it, its detail with the derived status and the slot's forecast, and its
//! status history), `/api/v1/replays` (replay requests, recorded as intents the pipeline
//! carries out) and `/api/v1/dead-letters` (the events that could not be applied).

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::{Permission, SourceId};
use serde::Deserialize;
use serde_json::json;
use store::sources::SourceAction;
use uuid::Uuid;

use super::caller::Caller;
use super::conformance::Violation;
use super::error::ApiError;
use super::extract::{Body, Path, Query, RequestBody};
use super::format::{parse_id, rfc3339};
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/sources", list_sources)
        .at(Method::POST, "/api/v1/sources", create_source)
        .at(Method::GET, "/api/v1/sources/{source}", source_detail)
        .at(
            Method::GET,
            "/api/v1/sources/{source}/status-history",
            status_history,
        )
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
        .at(Method::POST, "/api/v1/sources/{source}/pause", pause_source)
        .at(
            Method::POST,
            "/api/v1/sources/{source}/resume",
            resume_source,
        )
        .at(
            Method::POST,
            "/api/v1/sources/{source}/resync",
            resync_source,
        )
        .at(
            Method::POST,
            "/api/v1/sources/{source}/rotate-certificate",
            rotate_certificate,
        )
        .at(Method::POST, "/api/v1/replays", request_replay)
        .at(Method::GET, "/api/v1/replays/{request}", replay_status)
        .at(Method::GET, "/api/v1/dead-letters", dead_letters)
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

async fn source_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<store::sources::SourceDetail>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let mut tx = caller.tx(&state, Permission::ViewSources).await?;
    let detail = store::sources::source_detail(&mut tx, source).await?;
    tx.commit().await?;
    Ok(Json(detail))
}

#[derive(Deserialize)]
struct HistoryParams {
    from: Option<String>,
    to: Option<String>,
}

/// `400 invalid_parameter` naming the parameter.
fn invalid_parameter(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        .with_details(json!({ "parameter": parameter }))
}

fn time_parameter(
    name: &str,
    text: Option<&str>,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    text.filter(|text| !text.is_empty())
        .map(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| invalid_parameter(name, format!("{name} must be an RFC 3339 time")))
        })
        .transpose()
}

async fn status_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source: SourceId = parse_id(&source, "the source id")?;
    let to =
        time_parameter("to", params.to.as_deref())?.unwrap_or_else(time::OffsetDateTime::now_utc);
    let from =
        time_parameter("from", params.from.as_deref())?.unwrap_or(to - time::Duration::hours(1));
    if from >= to {
        return Err(invalid_parameter("from", "from must be before to"));
    }
    if to - from > store::sources::HISTORY_KEPT {
        return Err(invalid_parameter(
            "to",
            "the range covers at most 7 days (the history kept)",
        ));
    }
    let mut tx = caller.tx(&state, Permission::ViewSources).await?;
    let samples = store::sources::status_history(&mut tx, source, from, to).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "source_id": source,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "samples": samples,
    })))
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
    fn refusal(violation: Violation) -> ApiError {
        super::extract::refused(StatusCode::BAD_REQUEST, "invalid", &violation)
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
struct Pause {
    #[serde(default)]
    reason: Option<String>,
}

impl RequestBody for Pause {
    const SCHEMA: &'static str = "Pause";
    const SHAPE: &'static str = r#"{"reason": "..."}"#;
    const OPTIONAL: bool = true;
}

/// `action` on the source, for those who manage sources: the source as it is after.
async fn act_on_source(
    state: &AppState,
    caller: &Caller,
    source: &str,
    action: SourceAction<'_>,
) -> Result<Json<store::sources::Source>, ApiError> {
    let source: SourceId = parse_id(source, "the source id")?;
    let mut tx = caller.tx(state, Permission::ManageSources).await?;
    let after = store::sources::act(&mut tx, source, action).await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Pauses the source's ingestion (audited): the edge refuses its batches with `source_paused`,
/// its agent keeps them spooled until [`resume_source`].
async fn pause_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
    Body(request): Body<Pause>,
) -> Result<Json<store::sources::Source>, ApiError> {
    let reason = request.reason.as_deref();
    act_on_source(&state, &caller, &source, SourceAction::Pause { reason }).await
}

/// Resumes a paused source's ingestion (audited): its agent sends what it kept.
async fn resume_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<store::sources::Source>, ApiError> {
    act_on_source(&state, &caller, &source, SourceAction::Resume).await
}

/// Asks the source's agent for a resync: a new slot and snapshot (audited; a request already
/// waiting is kept).
async fn resync_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<store::sources::Source>, ApiError> {
    act_on_source(&state, &caller, &source, SourceAction::Resync).await
}

/// Asks the source's agent for a new key and certificate at its next heartbeat; the renewal
/// revokes its other certificates (audited; a request already waiting is kept).
async fn rotate_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(source): Path<String>,
) -> Result<Json<store::sources::Source>, ApiError> {
    act_on_source(&state, &caller, &source, SourceAction::RotateCertificate).await
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
    let request_id = store::replay::request(&mut tx, &kind)
        .await
        .map_err(replay_refusal)?;
    tx.commit().await?;
    // Recorded as an intent; the pipeline carries it out.
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "request_id": request_id, "status": "pending" })),
    ))
}

/// A refused replay request: 422 naming the range's bound at fault, or 409 while another bronze
/// replay of the tenant is under way.
fn replay_refusal(error: store::replay::ReplayError) -> ApiError {
    use store::replay::ReplayError;
    match error {
        ReplayError::Range(refusal) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            refusal.code,
            refusal.message,
        )
        .with_details(json!({ "field": refusal.bound.name() })),
        ReplayError::UnderWay => ApiError::new(
            StatusCode::CONFLICT,
            "replay_under_way",
            "a bronze replay or rebuild of this workspace is already under way; retry when it \
             is done",
        ),
        ReplayError::Store(error) => error.into(),
    }
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

#[cfg(test)]
mod tests {
    use super::super::openapi;
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
        assert!(optional(Pause::SCHEMA) && Pause::OPTIONAL);
        assert!(!optional(NewSource::SCHEMA) && !NewSource::OPTIONAL);
        let documented: Vec<&str> = openapi::OPERATIONS
            .iter()
            .filter(|operation| operation.body_optional)
            .filter_map(|operation| operation.request)
            .collect();
        assert_eq!(documented, [Revocation::SCHEMA, Pause::SCHEMA]);
    }
}
