//! `/app/data-sources`: the workspace's sources, each with its status derived from its agent's
//! heartbeat, its lag and its throughput over the last hour (kept current by the live stream in
//! `crate::live`), and for those who map tables, the tables no mapping applies to yet.
//! `/app/data-sources/{source}`: one source's errors, mapped tables, certificate and its
//! slot-safety panel (retained WAL over time, `wal_status`, `max_slot_wal_keep_size` and the
//! forecast of when the source would invalidate the slot), and for those who manage sources,
//! pausing and resuming its ingestion (`POST .../pause`, `.../resume`, CSRF-checked forms).

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, SourceId};
use serde::Deserialize;
use store::sources::{SourceAction, SourceDetail, bytes_text};
use time::{Duration, OffsetDateTime};

use crate::AppState;
use crate::auth::session::Member;
use crate::charts::{self, Chart, Kind, Line};
use crate::labels::Labelled;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};
use crate::source_activity::SourceActivity;

/// The slot-safety chart's window.
const SLOT_CHART_WINDOW: Duration = Duration::hours(24);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/data-sources", get(data_sources))
        .route("/app/data-sources/{source}", get(source_page))
        .route("/app/data-sources/{source}/pause", post(pause))
        .route("/app/data-sources/{source}/resume", post(resume))
        .route("/app/data-sources/{source}/resync", post(resync))
        .route(
            "/app/data-sources/{source}/rotate-certificate",
            post(rotate_certificate),
        )
        .route("/app/data-sources/{source}/revoke", post(revoke))
}

#[derive(Template)]
#[template(path = "app/sources.html")]
struct SourcesPage {
    chrome: Chrome,
    shell: Shell,
    has_sources: bool,
    /// The sources table, as its live stream also sends it.
    sources_html: String,
    can_manage: bool,
    /// Empty for those who cannot map tables (they are not shown the section).
    unmapped: Vec<UnmappedRow>,
}

/// A table no mapping applies to, as the page shows it.
struct UnmappedRow {
    source: Labelled,
    table: String,
    events: i64,
    first_seen: String,
    last_seen: String,
}

async fn data_sources(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ViewSources).await?;
    let sources = store::sources::list_sources(&mut tx).await?;
    let activity = SourceActivity::read(&mut tx, member.role()).await?;
    let waiting = if member.role().allows(Permission::ViewDeadLetters) {
        Some(store::dlq::waiting_by_source(&mut tx).await?)
    } else {
        None
    };
    let can_manage = member.role().allows(Permission::ManageSources);
    let mut unmapped = Vec::new();
    if can_manage {
        for table in store::read_models::list_unmapped_tables(&mut tx).await? {
            let source = sources
                .iter()
                .find(|source| *source.source_id.as_uuid() == table.source_id)
                .map_or_else(
                    || Labelled::named("an unknown source", "source", table.source_id.to_string()),
                    |source| {
                        Labelled::named(source.name.clone(), "source", table.source_id.to_string())
                    },
                );
            unmapped.push(UnmappedRow {
                source,
                table: format!("{}.{}", table.schema_name, table.table_name),
                events: table.events,
                first_seen: timestamp(table.first_seen_at),
                last_seen: timestamp(table.last_seen_at),
            });
        }
    }
    tx.commit().await?;
    Ok(render(
        StatusCode::OK,
        &SourcesPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, "/app/data-sources"),
            has_sources: !sources.is_empty(),
            sources_html: crate::live::sources_fragment(sources, &activity, waiting.as_ref()),
            can_manage,
            unmapped,
        },
    ))
}

#[derive(Template)]
#[template(path = "app/source.html")]
struct SourcePage {
    chrome: Chrome,
    shell: Shell,
    name: String,
    source_id: String,
    kind: String,
    health_label: String,
    health_tone: &'static str,
    health_status: &'static str,
    health_reason: String,
    agent_version: String,
    agent_state: String,
    heartbeat: String,
    last_event: String,
    lag: String,
    last_error: String,
    warnings: Vec<String>,
    mappings: Vec<MappedTable>,
    certificate: Option<CertificateView>,
    slot: Option<SlotView>,
    forecast: String,
    forecast_kind: &'static str,
    /// The retained WAL chart (SVG), empty without samples.
    chart_svg: String,
    samples: usize,
    /// Shown the pause or resume form (ManageSources, and the source not revoked).
    can_pause: bool,
    /// The source's ingestion is paused: since when (UTC) and why.
    paused: Option<PauseView>,
    /// Shown the resync form (ManageSources, a PostgreSQL source not revoked).
    can_resync: bool,
    /// A resync waits for the agent: since when (UTC).
    resync_waiting: Option<String>,
    /// A certificate rotation waits for the agent: since when (UTC).
    rotate_waiting: Option<String>,
    /// Shown the rotation and revocation forms (ManageSources, the source not revoked).
    can_manage: bool,
}

struct PauseView {
    since: String,
    reason: String,
}

struct MappedTable {
    table: String,
    entity_kind: String,
    columns: usize,
}

struct CertificateView {
    serial: String,
    not_after: String,
    expiry: String,
    expired: bool,
}

struct SlotView {
    name: String,
    wal_status: String,
    retained: String,
    safe: String,
    max_keep: String,
}

async fn source_page(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    // The permission first: a role without it is refused whatever the id.
    member.require(Permission::ViewSources)?;
    let source: SourceId = source.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(&state, Permission::ViewSources).await?;
    let detail = store::sources::source_detail(&mut tx, source).await?;
    let now = OffsetDateTime::now_utc();
    let history = store::sources::status_history(
        &mut tx,
        source,
        now - SLOT_CHART_WINDOW,
        now + Duration::seconds(1),
    )
    .await?;
    let mappings = store::read_models::list_mappings(&mut tx)
        .await?
        .into_iter()
        .filter(|mapping| mapping.source_id == *source.as_uuid())
        .map(|mapping| MappedTable {
            table: mapping.source_table,
            entity_kind: mapping.entity_kind,
            columns: mapping.columns.len(),
        })
        .collect();
    let activity = SourceActivity::read(&mut tx, member.role()).await?;
    tx.commit().await?;
    let SourceDetail {
        source: found,
        slot,
        certificate,
        forecast,
    } = detail;
    let heartbeat = found.heartbeat().unwrap_or_default();
    let agent = found.agent.clone().unwrap_or(serde_json::Value::Null);
    let points: Vec<(OffsetDateTime, f64)> = history
        .iter()
        .filter_map(|sample| {
            let bytes = sample.retained_wal_bytes?;
            Some((sample.sampled_at, bytes as f64 / (1u64 << 20) as f64))
        })
        .collect();
    let chart_svg = if points.is_empty() {
        String::new()
    } else {
        let mut lines = vec![Line {
            label: "retained WAL".to_owned(),
            points: points.clone(),
        }];
        if let Some(max) = slot.as_ref().and_then(|slot| slot.max_keep_bytes) {
            let max = max as f64 / (1u64 << 20) as f64;
            lines.push(Line {
                label: "max_slot_wal_keep_size".to_owned(),
                points: points.iter().map(|(at, _)| (*at, max)).collect(),
            });
        }
        let first = points.first().map_or(now, |(at, _)| *at);
        charts::draw(
            &Chart {
                kind: Kind::Line,
                from: first.min(now - Duration::hours(1)),
                to: now,
                step: 60,
                unit: "MiB",
                title: "Retained WAL over time",
            },
            &lines,
        )
        .render()
        .unwrap_or_else(|error| {
            tracing::error!(%error, "the retained WAL chart failed to render");
            String::new()
        })
    };
    let certificate = certificate.map(|certificate| {
        let left = certificate.not_after - now;
        CertificateView {
            serial: certificate.serial,
            not_after: timestamp(certificate.not_after),
            expired: left <= Duration::ZERO,
            expiry: if left <= Duration::ZERO {
                "expired".to_owned()
            } else if left < Duration::days(2) {
                format!("expires in {} h", left.whole_hours())
            } else {
                format!("expires in {} days", left.whole_days())
            },
        }
    });
    let slot = slot.map(|slot| SlotView {
        name: slot.name,
        wal_status: slot.wal_status.unwrap_or_else(|| "not reported".to_owned()),
        retained: slot
            .retained_bytes
            .map_or_else(|| "—".to_owned(), bytes_text),
        safe: slot
            .safe_wal_bytes
            .map_or_else(|| "no limit".to_owned(), bytes_text),
        max_keep: slot
            .max_keep_bytes
            .map_or_else(|| "unlimited (-1)".to_owned(), bytes_text),
    });
    Ok(render(
        StatusCode::OK,
        &SourcePage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, "/app/data-sources"),
            source_id: found.source_id.to_string(),
            name: found.name.clone(),
            kind: found.kind.clone(),
            health_label: found.health.label.clone(),
            health_tone: found.health.status.tone(),
            health_status: found.health.status.as_str(),
            health_reason: found.health.reason.clone(),
            agent_version: if heartbeat.agent_version.is_empty() {
                "—".to_owned()
            } else {
                heartbeat.agent_version.clone()
            },
            agent_state: if heartbeat.state.is_empty() {
                "never reported".to_owned()
            } else {
                heartbeat.state.clone()
            },
            heartbeat: heartbeat
                .reported_at
                .map_or_else(|| "—".to_owned(), timestamp),
            last_event: activity.last_event(found.source_id),
            lag: crate::live::lag_text(&agent),
            last_error: heartbeat.last_error.clone().unwrap_or_default(),
            warnings: heartbeat.warnings.clone(),
            mappings,
            certificate,
            slot,
            forecast_kind: forecast_kind(forecast.kind),
            forecast: forecast.summary,
            chart_svg,
            samples: points.len(),
            can_pause: member.role().allows(Permission::ManageSources) && found.status != "revoked",
            paused: found.paused_at.map(|since| PauseView {
                since: timestamp(since),
                reason: found.pause_reason.clone().unwrap_or_default(),
            }),
            can_resync: member.role().allows(Permission::ManageSources)
                && found.status != "revoked"
                && found.kind == "postgres",
            resync_waiting: found.resync_requested_at.map(timestamp),
            rotate_waiting: found.rotate_requested_at.map(timestamp),
            can_manage: member.role().allows(Permission::ManageSources)
                && found.status != "revoked",
        },
    ))
}

#[derive(Debug, Deserialize)]
struct PauseForm {
    #[serde(default)]
    reason: String,
}

/// `action` on the source, for those who manage sources; back to its page, saying what was
/// `done`.
async fn act_on_source(
    state: &AppState,
    member: &Member,
    source: &str,
    action: SourceAction<'_>,
    done: &str,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source: SourceId = source.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(state, Permission::ManageSources).await?;
    store::sources::act(&mut tx, source, action)
        .await
        .map_err(refused)?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/app/data-sources/{source}?done={done}")).into_response())
}

/// `POST /app/data-sources/{source}/pause`: the edge refuses the source's batches until it is
/// resumed; its agent keeps them spooled (audited).
async fn pause(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
    Form(form): Form<PauseForm>,
) -> Result<Response, PageError> {
    let reason = Some(form.reason.as_str()).filter(|reason| !reason.trim().is_empty());
    act_on_source(
        &state,
        &member,
        &source,
        SourceAction::Pause { reason },
        "paused",
    )
    .await
}

/// `POST /app/data-sources/{source}/resume`: the edge takes the source's batches again and its
/// agent sends what it kept (audited).
async fn resume(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    act_on_source(&state, &member, &source, SourceAction::Resume, "resumed").await
}

/// `POST /app/data-sources/{source}/resync`: asks the source's agent to drop its slot and take
/// a new snapshot, which it does at its next heartbeat, or as it starts when it is down
/// (audited).
async fn resync(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    act_on_source(&state, &member, &source, SourceAction::Resync, "resync").await
}

/// `POST /app/data-sources/{source}/rotate-certificate`: asks the source's agent for a new key
/// and certificate at its next heartbeat; the renewal revokes its other certificates (audited).
async fn rotate_certificate(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
) -> Result<Response, PageError> {
    act_on_source(
        &state,
        &member,
        &source,
        SourceAction::RotateCertificate,
        "rotation",
    )
    .await
}

#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    reason: String,
    /// The source's name, typed to confirm.
    #[serde(default)]
    confirm: String,
}

/// `POST /app/data-sources/{source}/revoke`: refuses the source's agent for good, once its name
/// is typed to confirm (audited).
async fn revoke(
    State(state): State<AppState>,
    member: Member,
    Path(source): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSources)?;
    let source: SourceId = source.parse().map_err(|_| PageError::NotFound)?;
    let mut tx = member.tx(&state, Permission::ManageSources).await?;
    let found = store::sources::get_source(&mut tx, source).await?;
    if form.confirm.trim() != found.name {
        return Err(PageError::BadRequest(
            "Type the source's name exactly to confirm the revocation.".into(),
        ));
    }
    if form.reason.trim().is_empty() {
        return Err(PageError::BadRequest(
            "Say why the source is revoked: the reason is kept in the audit log.".into(),
        ));
    }
    store::sources::act(
        &mut tx,
        source,
        SourceAction::Revoke {
            reason: &form.reason,
        },
    )
    .await
    .map_err(refused)?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/app/data-sources/{source}?done=revoked")).into_response())
}

/// A pause, resume or resync the store refused as asked (a revoked source, a reason it does not take)
/// says why; anything else is the usual page error.
fn refused(error: store::StoreError) -> PageError {
    match error {
        store::StoreError::Forbidden(why) => {
            PageError::BadRequest(format!("This cannot be done: {why}."))
        }
        store::StoreError::InvalidParameter { message, .. } => {
            PageError::BadRequest(format!("The reason is not valid: {message}."))
        }
        other => other.into(),
    }
}

fn forecast_kind(kind: store::sources::ForecastKind) -> &'static str {
    use store::sources::ForecastKind as K;
    match kind {
        K::Invalidation => "invalidation",
        K::Invalidated => "invalidated",
        K::Unbounded => "unbounded",
        K::NotGrowing => "not_growing",
        K::Unknown => "unknown",
    }
}
