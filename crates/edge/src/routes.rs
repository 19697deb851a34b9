//! The edge's HTTP API: pairing, certificate renewal and event ingest.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bus::Bus;
use governor::clock::{Clock, DefaultClock};
use protocol::{
    BatchResponse, CertificateResponse, Encoding, EventResult, PairRequest, ReasonCode,
    RenewRequest,
};
use serde_json::json;
use store::sources::PairingTokenRef;
use store::{Actor, TenantTx};
use tracing::Instrument;

use crate::EdgeState;
use crate::identity::{ClientIdentity, ConnectionInfo};

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The largest body of every route but ingest (pairing, renewal, status).
const SMALL_BODY_LIMIT: usize = 64 * 1024;

pub fn router<B: Bus + 'static>(state: Arc<EdgeState<B>>) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/pair", post(pair::<B>))
        .route("/v1/renew", post(renew::<B>))
        .route("/v1/events", post(ingest::<B>))
        .route("/v1/whoami", get(whoami::<B>))
        .route("/v1/status", post(agent_status::<B>))
        .route("/v1/check", post(agent_check::<B>))
        // Pairing bodies are small; ingest reads its body itself, with the protocol's limit.
        .layer(DefaultBodyLimit::max(body_limit.min(SMALL_BODY_LIMIT)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            reserve_body::<B>,
        ))
        .with_state(state)
}

/// An error answered as `{"error": {"code", "message"}}` with a status; never carries SQL,
/// internals or customer values.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            close: false,
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "edge request failed");
        let mut response = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the platform could not take this request now; retry later",
        );
        response.retry_after = Some(1);
        response
    }

    fn from_reason(code: ReasonCode, message: String) -> Self {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, code.as_str(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Reserves the bytes a request's body may take from the body budget before any of it is read
/// (its declared length, or its route's limit when it declares none), and holds them until the
/// request is answered. Refused with 503 and `Retry-After` when they cannot be had soon.
async fn reserve_body<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use hyper::body::Body as _;
    let route_limit = if request.uri().path() == "/v1/events" {
        state.config.limits.max_body_bytes
    } else {
        state.config.limits.max_body_bytes.min(SMALL_BODY_LIMIT)
    };
    let body = request.body();
    let bytes = if body.is_end_stream() {
        0
    } else {
        match body.size_hint().exact() {
            // Longer than the route takes: refused without keeping a byte of it.
            Some(declared) if declared > route_limit as u64 => 0,
            Some(declared) => declared as usize,
            None => route_limit,
        }
    };
    if bytes == 0 {
        return next.run(request).await;
    }
    let tenant = request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|connection| connection.identity.as_ref())
        .map(|identity| identity.tenant);
    let Some(reservation) = state.bodies.reserve(tenant, bytes).await else {
        metrics::counter!("tributary_edge_body_budget_refusals_total").increment(1);
        tracing::info!(
            tenant = tenant.map(tracing::field::display),
            bytes,
            "request refused: the body budget is taken"
        );
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the edge holds as many request bodies as it may; retry after the given delay",
        );
        error.retry_after = Some(1);
        return error.into_response();
    };
    let response = next.run(request).await;
    drop(reservation);
    response
}

/// The verified identity of the connection, still allowed to send.
async fn authenticated<B: Bus>(
    state: &EdgeState<B>,
    connection: &ConnectionInfo,
) -> Result<ClientIdentity, ApiError> {
    authenticated_access(state, connection)
        .await
        .map(|(identity, _)| identity)
}

/// The verified identity of the connection, still allowed to send, and whether its source's
/// ingestion is paused (from the same cached lookup).
async fn authenticated_access<B: Bus>(
    state: &EdgeState<B>,
    connection: &ConnectionInfo,
) -> Result<(ClientIdentity, bool), ApiError> {
    let Some(identity) = connection.identity.clone() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "client_certificate_required",
            "this endpoint requires the client certificate issued at pairing",
        ));
    };
    match state.caches.access(&identity).await {
        Ok(access) if access.allowed => Ok((identity, access.paused)),
        Ok(_) => {
            let mut error = ApiError::new(
                StatusCode::FORBIDDEN,
                "certificate_revoked",
                "this certificate's source is revoked or disabled, or the certificate was revoked",
            );
            error.close = true;
            Err(error)
        }
        Err(error) => Err(ApiError::internal(error)),
    }
}

fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(protocol::PROTOCOL_HEADER)
        .and_then(|value| value.to_str().ok());
    protocol::check_version(value).map_err(|error| ApiError::from_reason(error.code, error.message))
}

async fn pair<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CertificateResponse>, ApiError> {
    check_version(&headers)?;
    // Pairing needs no certificate, so anyone can call it: a few at a time, so that a flood of
    // made-up tokens cannot take the database connections ingest needs.
    let Ok(_pairing) = state.pairing.try_acquire() else {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many pairing requests at once; retry shortly",
        );
        error.retry_after = Some(1);
        return Err(error);
    };
    let request: PairRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be {\"token\": ..., \"csr_pem\": ...}",
        )
    })?;
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "pairing_refused",
            "the pairing token is invalid, expired or already used; create a new one",
        )
    };
    let Some(token) = PairingTokenRef::parse(&request.token) else {
        tracing::info!(peer = %connection.peer, "pairing refused: malformed token");
        return Err(refused());
    };
    let mut tx =
        TenantTx::begin_service(&state.database, Some(token.tenant), Actor::System("edge"))
            .await
            .map_err(ApiError::internal)?;
    let source = match store::sources::redeem_pairing_token(&mut tx, &token)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(source) => source,
        Err(refusal) => {
            tracing::info!(peer = %connection.peer, tenant = %token.tenant, %refusal, "pairing refused");
            metrics::counter!("tributary_edge_pairings_total", "outcome" => "refused").increment(1);
            return Err(refused());
        }
    };
    let (certificate_pem, issued) = state
        .ca
        .sign_client_certificate(
            &request.csr_pem,
            token.tenant,
            source,
            state.config.client_certificate_lifetime,
        )
        .map_err(|refusal| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_csr", refusal.to_string())
        })?;
    store::sources::record_certificate(&mut tx, &issued, "source.pair")
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    tracing::info!(tenant = %token.tenant, %source, serial = %issued.serial, "source paired");
    metrics::counter!("tributary_edge_pairings_total", "outcome" => "paired").increment(1);
    Ok(Json(CertificateResponse {
        tenant_id: token.tenant,
        source_id: source,
        certificate_pem,
        ca_certificate_pem: state.ca.certificate_pem().to_owned(),
        not_after: issued.not_after,
    }))
}

async fn renew<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CertificateResponse>, ApiError> {
    check_version(&headers)?;
    let identity = authenticated(&state, &connection).await?;
    let request: RenewRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be {\"csr_pem\": ...}",
        )
    })?;
    let (certificate_pem, issued) = state
        .ca
        .sign_client_certificate(
            &request.csr_pem,
            identity.tenant,
            identity.source,
            state.config.client_certificate_lifetime,
        )
        .map_err(|refusal| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_csr", refusal.to_string())
        })?;
    let mut tx = TenantTx::begin_service(
        &state.database,
        Some(identity.tenant),
        Actor::Agent(identity.source),
    )
    .await
    .map_err(ApiError::internal)?;
    store::sources::record_certificate(&mut tx, &issued, "source.certificate.renew")
        .await
        .map_err(ApiError::internal)?;
    // A rotation asked in the app: the certificates before this one stop working.
    store::sources::complete_rotation(&mut tx, identity.source, &issued.serial)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(Json(CertificateResponse {
        tenant_id: identity.tenant,
        source_id: identity.source,
        certificate_pem,
        ca_certificate_pem: state.ca.certificate_pem().to_owned(),
        not_after: issued.not_after,
    }))
}

async fn whoami<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let identity = authenticated(&state, &connection).await?;
    Ok(Json(json!({
        "tenant_id": identity.tenant,
        "source_id": identity.source,
        "protocol_versions": [protocol::CURRENT_VERSION],
    })))
}

/// An agent's JSON report of at most `max` bytes (413 `body_too_large` beyond), read as `what`
/// (400 `invalid_json` when it is not one).
fn agent_report<T: serde::de::DeserializeOwned>(
    body: &[u8],
    max: usize,
    what: &str,
) -> Result<T, ApiError> {
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{what} is at most {max} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body must be {what}"),
        )
    })
}

/// `POST /v1/status`: the agent's status heartbeat, kept per source. Answered `204`, or `200`
/// with what the agent is asked to do (a resync requested in the app).
async fn agent_status<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let identity = authenticated(&state, &connection).await?;
    let report: protocol::AgentStatus =
        agent_report(&body, protocol::MAX_STATUS_BYTES, "an agent status report")?;
    report
        .validate()
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_status", message))?;
    let lsn = |lsn: Option<domain::Lsn>| lsn.and_then(|lsn| i64::try_from(lsn.0).ok());
    let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let stored = store::sources::AgentReport {
        agent_version: report.agent_version,
        source_kind: report.source_kind,
        state: report.state,
        captured_lsn: lsn(report.captured_lsn),
        acked_lsn: lsn(report.acked_lsn),
        confirmed_lsn: lsn(report.confirmed_lsn),
        lag_bytes: report.lag_bytes.map(count),
        lag_seconds: report.lag_seconds,
        spool_batches: count(report.spool_batches),
        spool_bytes: count(report.spool_bytes),
        backpressure: report.backpressure,
        snapshot_rows: report.snapshot_rows.map(count),
        slot: report
            .slot
            .map(|slot| serde_json::to_value(slot).unwrap_or_default()),
        // An error from the customer's database can quote the row it failed on: masked here,
        // before it is stored, shown on the source's page or logged anywhere.
        warnings: report.warnings.iter().map(|text| masked(text)).collect(),
        last_error: report.last_error.as_deref().map(masked),
        caught_up: report.caught_up,
        send_bytes_per_second: report.send_bytes_per_second,
        drain_seconds: report.drain_seconds,
        not_captured: report.not_captured,
    };
    let mut tx = TenantTx::begin_service(
        &state.database,
        Some(identity.tenant),
        Actor::Agent(identity.source),
    )
    .await
    .map_err(ApiError::internal)?;
    store::sources::record_agent_status(&mut tx, identity.source, &stored)
        .await
        .map_err(ApiError::internal)?;
    let ask = store::sources::take_status_answer(&mut tx, identity.source, report.resynced)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    if ask == store::sources::StatusAsk::default() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(protocol::StatusAnswer {
        resync: ask
            .resync
            .map(|request_id| protocol::ResyncRequest { request_id }),
        rotate_certificate: ask.rotate_certificate,
    })
    .into_response())
}

/// `POST /v1/check`: what the agent's `check` found and the source's tables, kept per source
/// for the connector wizard.
async fn agent_check<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    check_version(&headers)?;
    let identity = authenticated(&state, &connection).await?;
    let report: protocol::CheckReport =
        agent_report(&body, protocol::MAX_CHECK_BYTES, "a check report")?;
    report
        .validate()
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_check", message))?;
    let check = store::connectors::NewCheck {
        agent_version: report.agent_version,
        ready: report.ready,
        // A message can quote the source's database's own words: masked as a status's are.
        findings: report
            .findings
            .into_iter()
            .map(|finding| store::connectors::CheckFinding {
                level: finding.level,
                message: masked(&finding.message),
            })
            .collect(),
        tables: report
            .tables
            .into_iter()
            .map(|table| store::connectors::ReportedTable {
                name: table.name,
                has_key: table.has_key,
                readable: table.readable,
                columns: table.columns,
            })
            .collect(),
        tables_omitted: i64::try_from(report.tables_omitted).unwrap_or(i64::MAX),
    };
    let mut tx = TenantTx::begin_service(
        &state.database,
        Some(identity.tenant),
        Actor::Agent(identity.source),
    )
    .await
    .map_err(ApiError::internal)?;
    store::connectors::record_check(&mut tx, identity.source, &check)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// An agent's free text masked ([`protocol::masking::mask_free_text`]) and cut to the 2000
/// characters the status table keeps (masking can lengthen it).
fn masked(text: &str) -> String {
    protocol::masking::mask_free_text(text)
        .chars()
        .take(2000)
        .collect()
}

async fn ingest<B: Bus>(
    State(state): State<Arc<EdgeState<B>>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    // Ids and counts only, filled in as they become known: the batch can be followed onto the
    // bus and into the consumers (docs/bus.md), and no customer value is ever a field.
    let span = tracing::info_span!(
        "edge_ingest",
        tenant = tracing::field::Empty,
        source = tracing::field::Empty,
        batch = tracing::field::Empty,
        events = tracing::field::Empty,
    );
    let result = ingest_batch(&state, &connection, &headers, body)
        .instrument(span)
        .await;
    metrics::histogram!("tributary_edge_ingest_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!("tributary_edge_batches_refused_total", "code" => error.code)
            .increment(1);
    }
    result
}

async fn ingest_batch<B: Bus>(
    state: &EdgeState<B>,
    connection: &ConnectionInfo,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (identity, paused) = authenticated_access(state, connection).await?;
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(identity.tenant));
    span.record("source", tracing::field::display(identity.source));
    check_version(headers)?;
    let limits = &state.config.limits;
    // A slow sender holds only its own connection: the body is read under a deadline, and a
    // decoding slot is taken only once it is all there.
    let body =
        match tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(body, limits.max_body_bytes))
            .await
        {
            Ok(body) => body?,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                ));
            }
        };
    if paused {
        // Refused once the body is in (so that the agent reads the answer, not a broken
        // connection) and before it is decoded: nothing is published or stored. The agent keeps
        // the batch spooled, backs off and sends it again; it is taken once the source is
        // resumed. Status heartbeats are still taken (`/v1/status`).
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "source_paused",
            "this source's ingestion is paused; keep the batch and send it again later (it is \
             taken once the source is resumed)",
        ));
    }
    if let Some(retry_after) = state.consumers_behind(identity.tenant) {
        // Backpressure: this tenant's partition is further behind than the bound, so the batch
        // is refused before it costs anything; the agent keeps it spooled and sends it again
        // after the delay, by when the consumers have caught up a little (docs/edge.md).
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "consumers_behind",
            "the platform's consumers are behind on this tenant's partition; keep the batch and \
             send it again after the given delay",
        );
        error.retry_after = Some(retry_after);
        return Err(error);
    }
    let _decoding = state.decoding.acquire().await.map_err(ApiError::internal)?;
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok()),
    )
    .map_err(|error| ApiError::from_reason(error.code, error.message))?;
    let json = protocol::decompress(&body, encoding, limits)
        .map_err(|error| ApiError::from_reason(error.code, error.message))?;
    let decoded = protocol::decode_batch(&json, identity.tenant, identity.source, limits)
        .map_err(|error| ApiError::from_reason(error.code, error.message))?;

    let events = decoded.len() as u32;
    span.record("events", events);
    if let Some(events) = NonZeroU32::new(events) {
        match state.limiter.check_key_n(&identity.tenant, events) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "this tenant is sending faster than its limit; retry after the given delay",
                );
                error.retry_after = Some(wait.as_secs().max(1));
                return Err(error);
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_many_events",
                    "the batch is larger than this tenant's burst limit; send smaller batches",
                ));
            }
        }
    }

    let masking = state
        .caches
        .masking(identity.tenant)
        .await
        .map_err(ApiError::internal)?;
    let mut results: Vec<EventResult> = Vec::with_capacity(decoded.len());
    let mut events = Vec::with_capacity(decoded.len());
    let mut pending = Vec::with_capacity(decoded.len());
    for (index, outcome) in decoded.into_iter() {
        match outcome {
            Err(rejection) => results.push(rejection),
            Ok(mut event) => match masking.policy.apply(&masking.secret, &mut event) {
                Err(error) => match error.event_reason() {
                    Some(code) => results.push(EventResult::rejected(
                        index,
                        Some(event.event_id),
                        code,
                        error.to_string(),
                    )),
                    None => return Err(ApiError::internal(error)),
                },
                Ok(()) => {
                    let envelope = protocol::Envelope {
                        tenant_id: identity.tenant,
                        source_id: identity.source,
                        event,
                        replay: None,
                    };
                    pending.push((index, envelope.event.event_id));
                    // Decoding bounds every field bronze keeps (the LSN, the sequence, the
                    // event time), so an event that passed it always has a bronze row.
                    events.push(bus::bronze::StoredEvent::new(envelope).map_err(|reason| {
                        ApiError::internal(format!("an event has no bronze row: {reason}"))
                    })?);
                }
            },
        }
    }
    if let Some(first) = events.first().map(|event| event.row.event_id) {
        // The batch is named by its first published event, as the bus names what it publishes.
        span.record("batch", tracing::field::display(first));
        // On the embedded bus this also writes the events to bronze, in the same transaction.
        let receipt = state
            .bus
            .publish_events(events)
            .await
            .map_err(ApiError::internal)?;
        for ((index, event_id), duplicate) in pending.into_iter().zip(receipt.duplicates()) {
            results.push(if duplicate {
                EventResult::duplicate(index, event_id)
            } else {
                EventResult::accepted(index, event_id)
            });
        }
    }
    results.sort_by_key(|result| result.index);
    let response = BatchResponse::from_results(results);
    for (status, count) in [
        ("accepted", response.accepted),
        ("duplicate", response.duplicates),
        ("rejected", response.rejected),
    ] {
        metrics::counter!("tributary_edge_events_total", "status" => status)
            .increment(u64::from(count));
    }
    tracing::debug!(
        accepted = response.accepted,
        duplicates = response.duplicates,
        rejected = response.rejected,
        "ingest batch answered"
    );
    // Nothing taken: say so in the status too, with the per-event reasons in the body.
    let status = if response.accepted == 0 && response.duplicates == 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

/// Reads at most `limit` bytes of `body`. A longer body is refused with `body_too_large`; the
/// rest of it is read and discarded up to four times the limit first, so that a client still
/// writing it can read the refusal instead of a broken connection. A body that declares more
/// than `limit` is not kept at all (nothing was reserved for it, see [`reserve_body`]); one
/// that declares its length is read into a buffer of that size, exactly what was reserved.
async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    let declared = body.size_hint().exact();
    let keep = declared.is_none_or(|declared| declared <= limit as u64);
    let unreadable = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read",
        )
    };
    let mut collected = match declared {
        Some(declared) if keep => Vec::with_capacity(declared as usize),
        _ => Vec::new(),
    };
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if keep && total <= limit {
            collected.extend_from_slice(&data);
        } else {
            collected = Vec::new();
            if total > limit.saturating_mul(4) {
                break;
            }
        }
    }
    if total > limit {
        return Err(ApiError::from_reason(
            ReasonCode::BodyTooLarge,
            format!("the body is larger than {limit} bytes; send smaller batches"),
        ));
    }
    Ok(Bytes::from(collected))
}
