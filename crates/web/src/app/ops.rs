//! Internal operations' pages: the tenant registry (`/app/tenants`, which a member also opens
//! to see their own workspace), the global analytics console (`/app/global`: the rollup
//! allowlist and the cohort-suppressed rollups), book-a-demo requests (`/app/contact-requests`)
//! and any tenant's audit log (`/app/tenants/{tenant}/audit`). Every staff route takes
//! [`Staff`] and works in `Scope::InternalOps` transactions, so the database refuses anyone else
//! as well.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Plan, TenantId};
use serde::Deserialize;
use store::reports::{Cell, Column, ColumnKind};
use store::rollups::{Granularity, RollupCell};
use store::{Scope, TenantTx};
use time::OffsetDateTime;

use super::audit::{AUDIT_PAGE_SIZE, audit_csv_response, render_audit};
use crate::AppState;
use crate::auth::session::{AppUser, Staff};
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::rules::{AuditQuery, RegistryQuery};
use crate::shell::{Shell, date, shell_for, timestamp};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/tenants", get(tenants))
        .route("/app/global", get(global))
        .route("/app/global/export", get(global_export))
        .route("/app/global/allowlist", post(allow_key))
        .route("/app/global/allowlist/{key}/remove", post(remove_key))
        .route("/app/contact-requests", get(contact_requests))
        .route("/app/tenants/{tenant}/audit", get(tenant_audit))
        .route("/app/tenants/{tenant}/audit.csv", get(tenant_audit_csv))
}

#[derive(Debug)]
struct TenantRow {
    tenant_id: TenantId,
    name: String,
    plan: String,
    industry: String,
    region: String,
    status: String,
    created: String,
    active_sources: i64,
    events_today: i64,
    events_7d: i64,
    last_event: String,
}

#[derive(Template)]
#[template(path = "app/tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    shell: Shell,
    tenants: Vec<TenantRow>,
    /// Staff see every tenant, a search form and each tenant's audit log.
    staff: bool,
    search: String,
    plan_options: Vec<SelectOption>,
    region: String,
    industry: String,
}

/// The tenant registry. Internal operations staff see every tenant with its volume, searchable
/// (`Scope::InternalOps`); a member sees only their own workspace, because row-level security
/// shows a member transaction nothing else.
async fn tenants(
    State(state): State<AppState>,
    user: AppUser,
    Query(query): Query<RegistryQuery>,
) -> Result<Response, PageError> {
    let staff = user.is_staff();
    let mut tx = if staff {
        TenantTx::begin(
            &state.database,
            Scope::InternalOps {
                tenant: None,
                actor: store::Actor::User(user.session().user.user_id),
            },
        )
        .await?
    } else {
        let Some(workspace) = &user.workspace else {
            return Err(PageError::Forbidden);
        };
        if !workspace.role.allows(Permission::ViewWorkspace) {
            return Err(PageError::Forbidden);
        }
        TenantTx::begin(
            &state.database,
            Scope::Member {
                tenant: workspace.tenant_id,
                user: user.session().user.user_id,
                role: workspace.role,
            },
        )
        .await?
    };
    let filter = if staff {
        query.filter()
    } else {
        store::control::RegistryFilter::default()
    };
    let entries = store::control::registry(&mut tx, &filter).await?;
    tx.commit().await?;
    Ok(render(
        StatusCode::OK,
        &TenantsPage {
            chrome: user.visitor.chrome("app"),
            shell: shell_for(
                &user.visitor,
                user.workspace.as_ref(),
                &user.workspaces,
                "/app/tenants",
            ),
            tenants: entries
                .into_iter()
                .map(|entry| TenantRow {
                    tenant_id: entry.tenant.tenant_id,
                    name: entry.tenant.name,
                    plan: entry.tenant.plan,
                    industry: entry.tenant.industry,
                    region: entry.tenant.region,
                    status: entry.tenant.status,
                    created: date(entry.tenant.created_at),
                    active_sources: entry.active_sources,
                    events_today: entry.events_today,
                    events_7d: entry.events_7d,
                    last_event: entry.last_event_at.map(timestamp).unwrap_or_default(),
                })
                .collect(),
            staff,
            search: filter.search.clone(),
            plan_options: select_options(&plan_filter(), &filter.plan),
            region: filter.region.clone(),
            industry: filter.industry.clone(),
        },
    ))
}

/// The registry's plan filter: any plan (empty), then each plan.
fn plan_filter() -> Vec<&'static str> {
    std::iter::once("")
        .chain(Plan::ALL.map(Plan::as_str))
        .collect()
}

fn staff_shell(staff: &Staff, current: &str) -> Shell {
    shell_for(
        &staff.0.visitor,
        staff.0.workspace.as_ref(),
        &staff.0.workspaces,
        current,
    )
}

fn chrome(staff: &Staff) -> Chrome {
    staff.0.visitor.chrome("app")
}

/// A time as the console shows it (UTC, minutes).
fn minute(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    at.format(&format).unwrap_or_default()
}

/// The windows the console offers, in hours.
const WINDOWS: [&str; 4] = ["1", "6", "24", "168"];
const GRAINS: [&str; 2] = ["minute", "hour"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConsoleQuery {
    key: String,
    grain: String,
    hours: String,
    /// The export's format (`csv`, `parquet`, `jsonl`).
    format: String,
    notice: String,
    error: String,
}

impl ConsoleQuery {
    /// The window in hours (24 unless one of [`WINDOWS`]) and the buckets' grain (as asked,
    /// else hours for windows over a day).
    fn window(&self) -> (i64, &str) {
        let hours: i64 = WINDOWS
            .contains(&self.hours.as_str())
            .then(|| self.hours.parse().ok())
            .flatten()
            .unwrap_or(24);
        let grain = if GRAINS.contains(&self.grain.as_str()) {
            self.grain.as_str()
        } else if hours > 24 {
            "hour"
        } else {
            "minute"
        };
        (hours, grain)
    }
}

fn granularity(grain: &str) -> Granularity {
    if grain == "hour" {
        Granularity::Hour
    } else {
        Granularity::Minute
    }
}

#[derive(Debug)]
struct KeyRow {
    key: String,
    added_by: String,
    added: String,
    retired: String,
}

#[derive(Debug)]
struct CellRow {
    bucket: String,
    plan: String,
    industry: String,
    region: String,
    mean: String,
    readings: i64,
    tenants: i32,
}

/// The line of a key's mean per bucket over the window, drawn as SVG by the template (no
/// script: the page's CSP allows none inline, and none is needed).
#[derive(Debug, Default)]
struct Chart {
    points: String,
    low: String,
    high: String,
    from: String,
    to: String,
    buckets: usize,
}

#[derive(Template)]
#[template(path = "app/global.html")]
struct GlobalPage {
    chrome: Chrome,
    shell: Shell,
    keys: Vec<KeyRow>,
    key_options: Vec<String>,
    key: String,
    /// The window and grain shown, which the export links keep.
    hours: i64,
    grain: String,
    grain_options: Vec<SelectOption>,
    window_options: Vec<SelectOption>,
    min_cohort: i64,
    cells: Vec<CellRow>,
    chart: Option<Chart>,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 200.0;

/// The mean of every shown cell per bucket, scaled into the chart's box.
fn chart(cells: &[RollupCell], from: OffsetDateTime, to: OffsetDateTime) -> Option<Chart> {
    let mut buckets = std::collections::BTreeMap::<OffsetDateTime, (f64, i64)>::new();
    for cell in cells {
        let entry = buckets.entry(cell.bucket).or_default();
        entry.0 += cell.value_sum;
        entry.1 += cell.value_count;
    }
    let means: Vec<(OffsetDateTime, f64)> = buckets
        .into_iter()
        .filter(|(_, (_, count))| *count > 0)
        .map(|(bucket, (sum, count))| (bucket, sum / count as f64))
        .collect();
    if means.is_empty() {
        return None;
    }
    let low = means
        .iter()
        .map(|(_, mean)| *mean)
        .fold(f64::INFINITY, f64::min);
    let high = means
        .iter()
        .map(|(_, mean)| *mean)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (to - from).as_seconds_f64().max(1.0);
    let range = if high > low { high - low } else { 1.0 };
    let points = means
        .iter()
        .map(|(bucket, mean)| {
            let x = (*bucket - from).as_seconds_f64() / span * CHART_WIDTH;
            let y = CHART_HEIGHT - (mean - low) / range * CHART_HEIGHT;
            format!("{:.1},{:.1}", x.clamp(0.0, CHART_WIDTH), y)
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Chart {
        points,
        low: format!("{low:.3}"),
        high: format!("{high:.3}"),
        from: minute(from),
        to: minute(to),
        buckets: means.len(),
    })
}

fn console_notice(code: &str) -> Option<&'static str> {
    match code {
        "added" => Some("Key added. Its history is aggregated within a few seconds."),
        "removed" => Some("Key removed. Its aggregation has stopped."),
        "purged" => {
            Some("Key removed. Its aggregation has stopped and its history is being purged.")
        }
        _ => None,
    }
}

fn console_error(code: &str) -> Option<&'static str> {
    match code {
        "key" => Some("A metric key is 1 to 100 of a-z, 0-9, '_' and '.', starting with a letter."),
        "unknown" => Some("That key is not on the allowlist."),
        _ => None,
    }
}

/// The global analytics console: the allowlist, and one key's rollups over a window with every
/// cell of fewer than k distinct tenants left out, and every cell that would reveal one by
/// subtraction (`store::rollups::cells`).
async fn global(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<ConsoleQuery>,
) -> Result<Response, PageError> {
    let mut tx = staff.tx(&state, Some(TenantId::PLATFORM)).await?;
    let entries = store::rollups::list_keys(&mut tx).await?;
    let active: Vec<String> = entries
        .iter()
        .filter(|entry| entry.retired_at.is_none())
        .map(|entry| entry.key.clone())
        .collect();
    let key = if active.contains(&query.key) {
        query.key.clone()
    } else {
        active.first().cloned().unwrap_or_default()
    };
    let (hours, grain) = query.window();
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::hours(hours);
    let cells = if key.is_empty() {
        Vec::new()
    } else {
        store::rollups::cells(
            &mut tx,
            granularity(grain),
            &key,
            from,
            to,
            state.min_cohort,
        )
        .await?
    };
    tx.commit().await?;
    let chart = chart(&cells, from, to);
    Ok(render(
        StatusCode::OK,
        &GlobalPage {
            chrome: chrome(&staff),
            shell: staff_shell(&staff, "/app/global"),
            keys: entries
                .into_iter()
                .map(|entry| KeyRow {
                    key: entry.key,
                    added_by: entry.added_by,
                    added: minute(entry.added_at),
                    retired: entry.retired_at.map(minute).unwrap_or_default(),
                })
                .collect(),
            key_options: active,
            key,
            hours,
            grain: grain.to_owned(),
            grain_options: select_options(&GRAINS, grain),
            window_options: select_options(&WINDOWS, &hours.to_string()),
            min_cohort: state.min_cohort.max(2),
            cells: cells
                .iter()
                .rev()
                .take(500)
                .map(|cell| CellRow {
                    bucket: minute(cell.bucket),
                    plan: cell.plan.clone(),
                    industry: cell.industry.clone(),
                    region: cell.region.clone(),
                    mean: format!("{:.3}", cell.value_sum / cell.value_count.max(1) as f64),
                    readings: cell.value_count,
                    tenants: cell.tenant_count,
                })
                .collect(),
            chart,
            notice: console_notice(&query.notice),
            error: console_error(&query.error),
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyForm {
    key: String,
    purge: Option<String>,
}

/// The columns of a global analytics export.
const EXPORT_COLUMNS: [(&str, ColumnKind); 9] = [
    ("bucket", ColumnKind::Time),
    ("key", ColumnKind::Text),
    ("plan", ColumnKind::Text),
    ("industry", ColumnKind::Text),
    ("region", ColumnKind::Text),
    ("mean", ColumnKind::Float),
    ("sum", ColumnKind::Float),
    ("readings", ColumnKind::Integer),
    ("tenants", ColumnKind::Integer),
];

/// What the console shows, as a file (CSV, Parquet or JSON lines): the same cells of one key
/// over the same window, under the same disclosure rule (no cell of fewer than k tenants, none
/// that would reveal one by subtraction), at most the console query's 10,000 cells, oldest
/// first. Internal operations staff only; recorded in the platform's audit chain with what was
/// exported. `global_analytics` leaves the platform no other way.
async fn global_export(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<ConsoleQuery>,
) -> Result<Response, PageError> {
    let format =
        store::reports::Format::parse(&query.format).unwrap_or(store::reports::Format::Csv);
    let (hours, grain) = query.window();
    let mut tx = staff.tx(&state, Some(TenantId::PLATFORM)).await?;
    let allowed = store::rollups::list_keys(&mut tx)
        .await?
        .into_iter()
        .any(|entry| entry.retired_at.is_none() && entry.key == query.key);
    if !allowed {
        return Err(PageError::NotFound);
    }
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::hours(hours);
    let cells = store::rollups::cells(
        &mut tx,
        granularity(grain),
        &query.key,
        from,
        to,
        state.min_cohort,
    )
    .await?;
    let columns: Vec<Column> = EXPORT_COLUMNS
        .iter()
        .map(|(name, kind)| Column { name, kind: *kind })
        .collect();
    let encode = || -> Result<Vec<u8>, reports::encode::EncodeError> {
        let mut encoder = reports::encode::Encoder::new(format, &columns)?;
        let mut file = Vec::new();
        for cell in &cells {
            encoder.row(&[
                Cell::Time(cell.bucket),
                Cell::Text(cell.key.clone()),
                Cell::Text(cell.plan.clone()),
                Cell::Text(cell.industry.clone()),
                Cell::Text(cell.region.clone()),
                Cell::Float(cell.value_sum / cell.value_count.max(1) as f64),
                Cell::Float(cell.value_sum),
                Cell::Integer(cell.value_count),
                Cell::Integer(i64::from(cell.tenant_count)),
            ])?;
            if encoder.pending() >= 1 << 20 {
                file.extend(encoder.take()?);
            }
        }
        file.extend(encoder.finish()?);
        Ok(file)
    };
    let file = encode().map_err(|error| {
        tracing::warn!(%error, "a global analytics export could not be encoded");
        PageError::Unavailable
    })?;
    store::audit::append(
        &mut tx,
        store::audit::AuditEntry::new("global_analytics.export", query.key.clone()).details(
            serde_json::json!({
                "format": format.as_str(),
                "grain": grain,
                "hours": hours,
                "cells": cells.len(),
                "min_cohort": state.min_cohort.max(2),
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    let name = format!(
        "global-{}-{}-{}h-{}.{}",
        query.key,
        grain,
        hours,
        to.date(),
        format.as_str()
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        file,
    )
        .into_response())
}

/// Adds a key to the allowlist (audited in the platform chain).
async fn allow_key(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<KeyForm>,
) -> Result<Response, PageError> {
    let key = form.key.trim().to_owned();
    if store::rollups::parse_key(&key).is_err() {
        return Ok(Redirect::to("/app/global?error=key").into_response());
    }
    let mut tx = staff.tx(&state, Some(TenantId::PLATFORM)).await?;
    store::rollups::allow_key(&mut tx, &key).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/app/global?notice=added&key={key}")).into_response())
}

/// Removes a key: its aggregation stops; with `purge`, its history is deleted too.
async fn remove_key(
    State(state): State<AppState>,
    staff: Staff,
    Path(key): Path<String>,
    Form(form): Form<KeyForm>,
) -> Result<Response, PageError> {
    if store::rollups::parse_key(&key).is_err() {
        return Ok(Redirect::to("/app/global?error=key").into_response());
    }
    let purge = form.purge.is_some();
    let mut tx = staff.tx(&state, Some(TenantId::PLATFORM)).await?;
    match store::rollups::remove_key(&mut tx, &key, purge).await {
        Err(store::StoreError::NotFound(_)) => {
            return Ok(Redirect::to("/app/global?error=unknown").into_response());
        }
        other => other?,
    }
    tx.commit().await?;
    let notice = if purge { "purged" } else { "removed" };
    Ok(Redirect::to(&format!("/app/global?notice={notice}")).into_response())
}

#[derive(Debug)]
struct ContactRow {
    received: String,
    name: String,
    email: String,
    company: String,
    fleet_size: String,
    message: String,
}

#[derive(Template)]
#[template(path = "app/contact_requests.html")]
struct ContactRequestsPage {
    chrome: Chrome,
    shell: Shell,
    requests: Vec<ContactRow>,
}

/// The newest book-a-demo requests from the public site.
async fn contact_requests(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, PageError> {
    let actor = store::Actor::User(staff.0.session().user.user_id);
    let requests = store::contact::list(&state.database, actor, 500).await?;
    Ok(render(
        StatusCode::OK,
        &ContactRequestsPage {
            chrome: chrome(&staff),
            shell: staff_shell(&staff, "/app/contact-requests"),
            requests: requests
                .into_iter()
                .map(|stored| ContactRow {
                    received: minute(stored.created_at),
                    name: stored.request.name,
                    email: stored.request.email,
                    company: stored.request.company,
                    fleet_size: stored.request.fleet_size,
                    message: stored.request.message,
                })
                .collect(),
        },
    ))
}

/// A tenant's id from the path; anything else is a 404, like a tenant that does not exist.
fn tenant_id(text: &str) -> Result<TenantId, PageError> {
    text.parse::<uuid::Uuid>()
        .map(TenantId::from_uuid)
        .map_err(|_| PageError::NotFound)
}

/// A tenant's audit log as internal operations reads it: the same page a tenant's admins see,
/// read in an operations transaction bound to that tenant, and the read recorded in that
/// tenant's chain (`audit.read_by_staff`), so the tenant sees who of operations read it.
async fn tenant_audit(
    State(state): State<AppState>,
    staff: Staff,
    Path(tenant): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let tenant = tenant_id(&tenant)?;
    let mut tx = staff.tx(&state, Some(tenant)).await?;
    let name = store::control::current_tenant(&mut tx).await?.name;
    store::audit::record_staff_read(
        &mut tx,
        store::audit::StaffReadView::Page,
        &query.filter(),
        Some(AUDIT_PAGE_SIZE),
    )
    .await?;
    render_audit(
        tx,
        chrome(&staff),
        staff_shell(&staff, "/app/tenants"),
        &query,
        &format!("/app/tenants/{tenant}/audit"),
        format!("Audit log of {name}"),
        false,
    )
    .await
}

async fn tenant_audit_csv(
    State(state): State<AppState>,
    staff: Staff,
    Path(tenant): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let tenant = tenant_id(&tenant)?;
    // The read is recorded, and committed, before the first entry leaves: a download stopped
    // halfway has still been read.
    let mut tx = staff.tx(&state, Some(tenant)).await?;
    store::audit::record_staff_read(
        &mut tx,
        store::audit::StaffReadView::Csv,
        &query.filter(),
        None,
    )
    .await?;
    tx.commit().await?;
    let tx = staff.tx(&state, Some(tenant)).await?;
    let response = audit_csv_response(tx, &query);
    tracing::info!(user = %staff.0.session().user.user_id, %tenant, "a tenant's audit log exported by operations");
    response
}
