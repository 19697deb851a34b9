//! `/api/v1/reports`, `/api/v1/report-runs`: a workspace's report definitions, their runs and
//! the runs' files (docs/reports.md). Every member reads definitions and runs; owners and admins
//! define reports; every member asks for a run of a report whose dataset their role may read,
//! and downloads a finished run's file of such a dataset until it expires. Owners and admins
//! schedule reports (`/api/v1/reports/{id}/schedules`, `/api/v1/report-schedules/{id}`). The
//! store audits every change and every export.

use axum::Json;
use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Permission;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use store::StoreError;
use store::reports::{Dataset, Filters, Format, ReportInput, Run, Schedule, ScheduleInput};
use time::OffsetDateTime;
use uuid::Uuid;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Body, Path, RequestBody};
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/reports", list_reports)
        .at(Method::POST, "/api/v1/reports", create_report)
        .at(Method::GET, "/api/v1/reports/{report}", get_report)
        .at(Method::PUT, "/api/v1/reports/{report}", update_report)
        .at(Method::DELETE, "/api/v1/reports/{report}", delete_report)
        .at(Method::GET, "/api/v1/reports/{report}/runs", list_runs)
        .at(Method::POST, "/api/v1/reports/{report}/runs", run_report)
        .at(
            Method::GET,
            "/api/v1/reports/{report}/schedules",
            list_schedules,
        )
        .at(
            Method::POST,
            "/api/v1/reports/{report}/schedules",
            create_schedule,
        )
        .at(
            Method::GET,
            "/api/v1/report-schedules/{schedule}",
            get_schedule,
        )
        .at(
            Method::PUT,
            "/api/v1/report-schedules/{schedule}",
            update_schedule,
        )
        .at(
            Method::DELETE,
            "/api/v1/report-schedules/{schedule}",
            delete_schedule,
        )
        .at(Method::GET, "/api/v1/report-runs/{run}", get_run)
        .at(Method::GET, "/api/v1/report-runs/{run}/download", download)
}

/// A path id: 404 for anything not a UUID (no such object can exist).
fn id(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| StoreError::NotFound(what).into())
}

/// A definition the schema admits that the store refuses (a range that ends before it starts,
/// both a relative and an absolute range): 409 naming the parameter.
fn report_refusal(error: StoreError) -> ApiError {
    match error {
        StoreError::InvalidParameter { parameter, message } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_report", message)
                .with_details(json!({ "parameter": parameter }))
        }
        error => error.into(),
    }
}

/// A definition as the API takes it (`ReportInput`: one shape per dataset, its columns and
/// filters only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    name: String,
    dataset: Dataset,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    filters: FiltersBody,
    #[serde(default)]
    descending: bool,
    format: Format,
}

/// The filters as the API takes them: times as text, read here so that a date the schema's
/// pattern admits but the calendar does not (30 February) is refused naming the parameter.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersBody {
    last_hours: Option<u32>,
    from: Option<String>,
    to: Option<String>,
    site: Option<String>,
    device: Option<String>,
    key: Option<String>,
    action: Option<String>,
    actor_type: Option<String>,
}

impl RequestBody for ReportBody {
    const SCHEMA: &'static str = "ReportInput";
    const SHAPE: &'static str = r#"{"name": "...", "dataset": "metrics_hour", "format": "csv", "columns": ["hour", "entity_id", "avg"], "filters": {"last_hours": 24, "key": "..."}}"#;
}

impl ReportBody {
    fn into_input(self) -> Result<ReportInput, ApiError> {
        let instant = |text: Option<String>, parameter: &'static str| {
            text.map(|text| {
                OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        report_refusal(StoreError::InvalidParameter {
                            parameter,
                            message: format!("{parameter} is not a real date and time"),
                        })
                    })
            })
            .transpose()
        };
        let filters = Filters {
            last_hours: self.filters.last_hours,
            from: instant(self.filters.from, "from")?,
            to: instant(self.filters.to, "to")?,
            site: self.filters.site,
            device: self.filters.device,
            key: self.filters.key,
            action: self.filters.action,
            actor_type: self.filters.actor_type,
        };
        Ok(ReportInput {
            name: self.name,
            dataset: self.dataset,
            columns: self.columns,
            filters,
            descending: self.descending,
            format: self.format,
        })
    }
}

async fn list_reports(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let reports = store::reports::list_reports(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "reports": reports })))
}

async fn create_report(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<ReportBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Permission::ManageReports)?;
    let input = body.into_input()?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    let id = store::reports::create_report(&mut tx, &input)
        .await
        .map_err(report_refusal)?;
    let report = store::reports::get_report(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!(report))))
}

async fn get_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report = id(&report, "report")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let found = store::reports::get_report(&mut tx, report).await?;
    tx.commit().await?;
    Ok(Json(json!(found)))
}

async fn update_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
    Body(body): Body<ReportBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report = id(&report, "report")?;
    caller.require(Permission::ManageReports)?;
    let input = body.into_input()?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    store::reports::update_report(&mut tx, report, &input)
        .await
        .map_err(report_refusal)?;
    let updated = store::reports::get_report(&mut tx, report).await?;
    tx.commit().await?;
    Ok(Json(json!(updated)))
}

async fn delete_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
) -> Result<StatusCode, ApiError> {
    let report = id(&report, "report")?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    store::reports::delete_report(&mut tx, report).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A run as the API shows it: the store's, with where to download its file when it can be.
fn run_json(run: &Run, now: OffsetDateTime) -> serde_json::Value {
    let mut value = json!(run);
    value["download"] = if run.downloadable(now) {
        json!(format!("/api/v1/report-runs/{}/download", run.id))
    } else {
        serde_json::Value::Null
    };
    value
}

async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report = id(&report, "report")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    store::reports::get_report(&mut tx, report).await?;
    let runs = store::reports::list_runs(&mut tx, Some(report), 100).await?;
    tx.commit().await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(
        json!({ "runs": runs.iter().map(|run| run_json(run, now)).collect::<Vec<_>>() }),
    ))
}

/// Who asks for a run: the member, or the person who made the token (none for a token the
/// operator's CLI made).
fn requester(caller: &Caller) -> Option<domain::UserId> {
    match caller {
        Caller::Member { user, .. } => Some(*user),
        Caller::Token(grant) => grant.holder,
    }
}

async fn run_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let report = id(&report, "report")?;
    let mut tx = caller.tx(&state, Permission::RunReports).await?;
    let run =
        store::reports::request_run(&mut tx, report, requester(&caller), caller.role()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(run_json(&run, OffsetDateTime::now_utc())),
    ))
}

async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = id(&run, "report run")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let found = store::reports::get_run(&mut tx, run).await?;
    // Where its deliveries stand, for the roles that see the alert channels' deliveries.
    let deliveries = if caller.role().allows(Permission::AcknowledgeAlerts) {
        Some(store::reports::run_deliveries(&mut tx, run).await?)
    } else {
        None
    };
    tx.commit().await?;
    let mut value = run_json(&found, OffsetDateTime::now_utc());
    if let Some(deliveries) = deliveries {
        value["deliveries"] = json!(deliveries);
    }
    Ok(Json(value))
}

/// A schedule as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    cron: String,
    time_zone: String,
    #[serde(default)]
    channels: Vec<Uuid>,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

impl RequestBody for ScheduleBody {
    const SCHEMA: &'static str = "ReportScheduleInput";
    const SHAPE: &'static str = r#"{"cron": "0 8 * * 1-5", "time_zone": "Europe/Berlin", "channels": ["..."], "enabled": true}"#;
}

impl ScheduleBody {
    fn into_input(self) -> ScheduleInput {
        ScheduleInput {
            cron: self.cron,
            time_zone: self.time_zone,
            channels: self.channels,
            enabled: self.enabled,
        }
    }
}

/// A schedule the schema admits that the store refuses (a cron expression that does not parse
/// or runs too often, an unknown time zone, a channel not the workspace's): 409 naming the
/// parameter.
fn schedule_refusal(error: StoreError) -> ApiError {
    match error {
        StoreError::InvalidParameter { parameter, message } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_schedule", message)
                .with_details(json!({ "parameter": parameter }))
        }
        error => error.into(),
    }
}

/// How many upcoming occurrences a schedule shows.
const UPCOMING: usize = 3;

/// A schedule as the API shows it: the store's, with its next occurrences.
fn schedule_json(schedule: &Schedule) -> serde_json::Value {
    let mut value = json!(schedule);
    let upcoming: Vec<String> = match (schedule.input.enabled, schedule.input.parse()) {
        (true, Ok(parsed)) => parsed
            .upcoming(OffsetDateTime::now_utc(), UPCOMING)
            .into_iter()
            .filter_map(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .collect(),
        _ => Vec::new(),
    };
    value["upcoming"] = json!(upcoming);
    value
}

async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report = id(&report, "report")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    store::reports::get_report(&mut tx, report).await?;
    let schedules = store::reports::list_schedules(&mut tx, Some(report)).await?;
    tx.commit().await?;
    Ok(Json(
        json!({ "schedules": schedules.iter().map(schedule_json).collect::<Vec<_>>() }),
    ))
}

async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(report): Path<String>,
    Body(body): Body<ScheduleBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let report = id(&report, "report")?;
    caller.require(Permission::ManageReports)?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    let schedule =
        store::reports::create_schedule(&mut tx, report, caller.role(), &body.into_input())
            .await
            .map_err(schedule_refusal)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(schedule_json(&schedule))))
}

async fn get_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(schedule): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let schedule = id(&schedule, "report schedule")?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let found = store::reports::get_schedule(&mut tx, schedule).await?;
    tx.commit().await?;
    Ok(Json(schedule_json(&found)))
}

async fn update_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(schedule): Path<String>,
    Body(body): Body<ScheduleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let schedule = id(&schedule, "report schedule")?;
    caller.require(Permission::ManageReports)?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    let saved =
        store::reports::update_schedule(&mut tx, schedule, caller.role(), &body.into_input())
            .await
            .map_err(schedule_refusal)?;
    tx.commit().await?;
    Ok(Json(schedule_json(&saved)))
}

async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(schedule): Path<String>,
) -> Result<StatusCode, ApiError> {
    let schedule = id(&schedule, "report schedule")?;
    let mut tx = caller.tx(&state, Permission::ManageReports).await?;
    store::reports::delete_schedule(&mut tx, schedule).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A finished run's file, streamed from the export store: for a role that may run reports and
/// read the run's dataset; 409 while it is not finished, 410 once it expired.
async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(run): Path<String>,
) -> Result<Response, ApiError> {
    let run = id(&run, "report run")?;
    let mut tx = caller.tx(&state, Permission::RunReports).await?;
    let found = store::reports::get_run(&mut tx, run).await?;
    tx.commit().await?;
    file_response(&state, caller.role(), &found).await
}

/// The response carrying `run`'s file, for `role`.
async fn file_response(
    state: &AppState,
    role: domain::Role,
    run: &Run,
) -> Result<Response, ApiError> {
    if !role.allows(run.definition.dataset.permission()) {
        return Err(ApiError::forbidden(format!(
            "the {role} role may not read this report's dataset"
        )));
    }
    let now = OffsetDateTime::now_utc();
    let Some(key) = run.object_key.as_deref().filter(|_| run.downloadable(now)) else {
        return Err(match run.status {
            store::reports::RunStatus::Succeeded => ApiError::new(
                StatusCode::GONE,
                "expired",
                "this run's file has expired: run the report again",
            ),
            store::reports::RunStatus::Failed => ApiError::new(
                StatusCode::CONFLICT,
                "run_failed",
                "this run failed and has no file",
            ),
            _ => ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                "this run has not finished yet",
            ),
        });
    };
    let (size, stream) = state.exports.open(key).await.map_err(|error| {
        tracing::warn!(%error, run = %run.id, "a report file could not be opened");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the export store did not answer; try again",
        )
    })?;
    let format = run.definition.format;
    let name = run.file_name();
    let mut response = ResponseBody::from_stream(
        stream.map(|chunk| chunk.map_err(|error| std::io::Error::other(error.to_string()))),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
