//! `/app/reports`: a workspace's report definitions and runs (docs/reports.md). Every member
//! who may run reports sees the definitions and the last runs, runs a report whose dataset their
//! role may read, and downloads its file while it lasts; owners and admins define and delete
//! reports. The runs table follows running runs by itself.
//!
//! Owners and admins also schedule reports (a cron expression in a time zone, and the alert
//! channels the file goes to); every member sees the schedules, and each schedule's page shows
//! its next occurrences and its run history with each delivery.

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::Permission;
use serde::Deserialize;
use store::StoreError;
use store::reports::{
    Dataset, Filters, Format, Report, ReportInput, Run, RunStatus, Schedule, ScheduleInput,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell, timestamp};

const PATH: &str = "/app/reports";
/// Runs the page lists.
const RUNS_SHOWN: i64 = 25;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(reports_page).post(create_report))
        .route("/app/reports/runs", get(runs_fragment))
        .route("/app/reports/{report}/run", post(run_report))
        .route("/app/reports/{report}/delete", post(delete_report))
        .route("/app/reports/schedules", post(create_schedule))
        .route(
            "/app/reports/schedules/{schedule}",
            get(schedule_page).post(update_schedule),
        )
        .route(
            "/app/reports/schedules/{schedule}/delete",
            post(delete_schedule),
        )
}

struct ReportRow {
    id: Uuid,
    name: String,
    dataset: &'static str,
    selects: String,
    format: &'static str,
    can_run: bool,
}

struct RunRow {
    id: Uuid,
    report: String,
    requested_at: String,
    /// The schedule and occurrence it ran for, if a schedule asked for it.
    scheduled: Option<(Uuid, String)>,
    status: &'static str,
    error: Option<String>,
    rows: i64,
    size: String,
    download: Option<String>,
    expires: String,
}

/// The new-report form as posted (kept when refused).
#[derive(Debug)]
struct ReportFields {
    name: String,
    dataset: String,
    format: String,
    columns: String,
    last_hours: String,
    key: String,
    site: String,
    device: String,
    action: String,
    actor_type: String,
    descending: bool,
}

impl Default for ReportFields {
    fn default() -> Self {
        ReportFields {
            name: String::new(),
            dataset: Dataset::MetricsHour.as_str().to_owned(),
            format: Format::Csv.as_str().to_owned(),
            columns: String::new(),
            last_hours: String::new(),
            key: String::new(),
            site: String::new(),
            device: String::new(),
            action: String::new(),
            actor_type: String::new(),
            descending: false,
        }
    }
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl ReportFields {
    fn parse(body: &[u8]) -> Self {
        let mut fields = ReportFields {
            dataset: String::new(),
            format: String::new(),
            ..ReportFields::default()
        };
        for (name, value) in url::form_urlencoded::parse(body) {
            let value = value.into_owned();
            match name.as_ref() {
                "name" => fields.name = value,
                "dataset" => fields.dataset = value,
                "format" => fields.format = value,
                "columns" => fields.columns = value,
                "last_hours" => fields.last_hours = value,
                "key" => fields.key = value,
                "site" => fields.site = value,
                "device" => fields.device = value,
                "action" => fields.action = value,
                "actor_type" => fields.actor_type = value,
                "descending" => fields.descending = value == "on",
                _ => {}
            }
        }
        fields
    }

    fn input(&self) -> Result<ReportInput, StoreError> {
        let invalid = |parameter: &'static str, message: &str| StoreError::InvalidParameter {
            parameter,
            message: message.to_owned(),
        };
        let dataset =
            Dataset::parse(&self.dataset).ok_or_else(|| invalid("dataset", "choose a dataset"))?;
        let format =
            Format::parse(&self.format).ok_or_else(|| invalid("format", "choose a format"))?;
        let mut input = ReportInput::new(&self.name, dataset, format);
        input.columns = self.columns.split(',').filter_map(optional).collect();
        input.filters = Filters {
            last_hours: optional(&self.last_hours)
                .map(|hours| {
                    hours
                        .parse()
                        .map_err(|_| invalid("last_hours", "a whole number of hours"))
                })
                .transpose()?,
            key: optional(&self.key),
            site: optional(&self.site),
            device: optional(&self.device),
            action: optional(&self.action),
            actor_type: optional(&self.actor_type),
            ..Filters::default()
        };
        input.descending = self.descending;
        Ok(input)
    }
}

#[derive(Template)]
#[template(path = "app/reports.html")]
struct ReportsPage {
    chrome: Chrome,
    shell: Shell,
    reports: Vec<ReportRow>,
    runs: Vec<RunRow>,
    /// Whether a run is queued or running: the runs table then follows it.
    active: bool,
    notice: Option<String>,
    problem: Option<String>,
    /// The new-report form, for those who define reports.
    fields: Option<ReportFields>,
    /// Each dataset with its columns.
    datasets: Vec<(&'static str, String)>,
    download_days: i64,
    schedules: Vec<ScheduleRow>,
    /// The new-schedule form, for those who define reports, when there is a report.
    schedule_form: Option<ScheduleForm>,
}

#[derive(Template)]
#[template(path = "app/report_runs.html")]
struct RunsFragment {
    runs: Vec<RunRow>,
    active: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Done {
    done: String,
}

fn notice(code: &str) -> Option<String> {
    Some(
        match code {
            "report" => "Report saved. Run it now, or from the API.",
            "run" => "Run queued: its file appears below when it is written.",
            "deleted" => "Report deleted; its runs' files stay until they expire.",
            "scheduled" => "Schedule saved: the report runs at its next occurrence.",
            "schedule-saved" => "Schedule saved.",
            "schedule-deleted" => "Schedule deleted; its runs stay.",
            _ => return None,
        }
        .to_owned(),
    )
}

/// What a report selects, in words.
fn selects(input: &ReportInput) -> String {
    let filters = &input.filters;
    let mut parts = Vec::new();
    if input.dataset.is_timed() {
        parts.push(match (filters.from, filters.to) {
            (Some(from), Some(to)) => format!("{} to {}", timestamp(from), timestamp(to)),
            _ => format!("last {} h", filters.last_hours.unwrap_or(24)),
        });
    }
    for (name, value) in [
        ("key", &filters.key),
        ("site", &filters.site),
        ("device", &filters.device),
        ("action", &filters.action),
        ("actor", &filters.actor_type),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name} {value}"));
        }
    }
    if !input.columns.is_empty() {
        parts.push(format!("{} columns", input.columns.len()));
    }
    if input.descending {
        parts.push("newest first".to_owned());
    }
    if parts.is_empty() {
        "everything".to_owned()
    } else {
        parts.join(", ")
    }
}

fn size(bytes: i64) -> String {
    match u64::try_from(bytes) {
        Ok(0) | Err(_) => "—".to_owned(),
        Ok(bytes) => store::reports::file_size(bytes),
    }
}

fn run_rows(member: &Member, runs: Vec<Run>) -> (Vec<RunRow>, bool) {
    let now = OffsetDateTime::now_utc();
    let active = runs
        .iter()
        .any(|run| matches!(run.status, RunStatus::Queued | RunStatus::Running));
    let rows = runs
        .into_iter()
        .map(|run| RunRow {
            id: run.id,
            download: (run.downloadable(now)
                && member.role().allows(run.definition.dataset.permission()))
            .then(|| format!("/api/v1/report-runs/{}/download", run.id)),
            expires: run.expires_at.map(timestamp).unwrap_or_default(),
            scheduled: run
                .schedule_id
                .zip(run.occurrence)
                .map(|(schedule, occurrence)| (schedule, timestamp(occurrence))),
            report: run.report_name,
            requested_at: timestamp(run.requested_at),
            status: run.status.as_str(),
            error: run.error,
            rows: run.rows,
            size: size(run.bytes),
        })
        .collect();
    (rows, active)
}

async fn reports_page(
    State(state): State<AppState>,
    member: Member,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    render_page(
        &state,
        &member,
        StatusCode::OK,
        notice(&done.done),
        None,
        None,
    )
    .await
}

async fn render_page(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    draft: Option<ReportFields>,
) -> Result<Response, PageError> {
    render_with(state, member, status, notice, problem, draft, None).await
}

async fn render_with(
    state: &AppState,
    member: &Member,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    draft: Option<ReportFields>,
    schedule_draft: Option<ScheduleFields>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::RunReports).await?;
    let reports = store::reports::list_reports(&mut tx).await?;
    let runs = store::reports::list_runs(&mut tx, None, RUNS_SHOWN).await?;
    let schedules = store::reports::list_schedules(&mut tx, None).await?;
    let channels = store::alerts::list_channels(&mut tx, false).await?;
    tx.commit().await?;
    let role = member.role();
    let schedules = schedule_rows(&reports, &channels, schedules);
    let schedule_form =
        (role.allows(Permission::ManageReports) && !reports.is_empty()).then(|| {
            ScheduleForm::new(
                schedule_draft.unwrap_or_default(),
                &channels,
                Some(&reports),
            )
        });
    let reports = reports
        .into_iter()
        .map(|Report { id, input, .. }| ReportRow {
            id,
            selects: selects(&input),
            dataset: input.dataset.as_str(),
            format: input.format.as_str(),
            can_run: role.allows(input.dataset.permission()),
            name: input.name,
        })
        .collect();
    let (runs, active) = run_rows(member, runs);
    let page = ReportsPage {
        chrome: member.visitor.chrome("app"),
        shell: shell(member, PATH),
        reports,
        runs,
        active,
        notice,
        problem,
        fields: role
            .allows(Permission::ManageReports)
            .then(|| draft.unwrap_or_default()),
        datasets: Dataset::ALL
            .iter()
            .map(|dataset| {
                (
                    dataset.as_str(),
                    dataset
                        .columns()
                        .iter()
                        .map(|column| column.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
            .collect(),
        download_days: reports::DOWNLOAD_DAYS,
        schedules,
        schedule_form,
    };
    Ok(render(status, &page))
}

async fn runs_fragment(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::RunReports).await?;
    let runs = store::reports::list_runs(&mut tx, None, RUNS_SHOWN).await?;
    tx.commit().await?;
    let (runs, active) = run_rows(&member, runs);
    Ok(render(StatusCode::OK, &RunsFragment { runs, active }))
}

/// A refusal the member can correct, shown on the page with the form as posted.
async fn refused(
    state: &AppState,
    member: &Member,
    error: StoreError,
    draft: Option<ReportFields>,
) -> Result<Response, PageError> {
    let (status, problem) = crate::pages::correctable(error)?;
    render_page(state, member, status, None, Some(problem), draft).await
}

async fn create_report(
    State(state): State<AppState>,
    member: Member,
    body: Bytes,
) -> Result<Response, PageError> {
    member.require(Permission::ManageReports)?;
    let fields = ReportFields::parse(&body);
    let input = match fields.input() {
        Ok(input) => input,
        Err(error) => return refused(&state, &member, error, Some(fields)).await,
    };
    let mut tx = member.tx(&state, Permission::ManageReports).await?;
    match store::reports::create_report(&mut tx, &input).await {
        Ok(_) => {
            tx.commit().await?;
            Ok(Redirect::to(&format!("{PATH}?done=report")).into_response())
        }
        Err(error) => {
            drop(tx);
            refused(&state, &member, error, Some(fields)).await
        }
    }
}

fn id(text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError::NotFound)
}

async fn run_report(
    State(state): State<AppState>,
    member: Member,
    Path(report): Path<String>,
) -> Result<Response, PageError> {
    let report = id(&report)?;
    let mut tx = member.tx(&state, Permission::RunReports).await?;
    store::reports::request_run(
        &mut tx,
        report,
        Some(member.session().user.user_id),
        member.role(),
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("{PATH}?done=run")).into_response())
}

async fn delete_report(
    State(state): State<AppState>,
    member: Member,
    Path(report): Path<String>,
) -> Result<Response, PageError> {
    let report = id(&report)?;
    let mut tx = member.tx(&state, Permission::ManageReports).await?;
    store::reports::delete_report(&mut tx, report).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("{PATH}?done=deleted")).into_response())
}

/// A schedule as the pages list it.
struct ScheduleRow {
    id: Uuid,
    report: String,
    cron: String,
    time_zone: String,
    next: String,
    channels: String,
    enabled: bool,
    last_error: Option<String>,
}

fn schedule_rows(
    reports: &[Report],
    channels: &[store::alerts::Channel],
    schedules: Vec<Schedule>,
) -> Vec<ScheduleRow> {
    schedules
        .into_iter()
        .map(|schedule| ScheduleRow {
            id: schedule.id,
            report: reports
                .iter()
                .find(|report| report.id == schedule.report_id)
                .map(|report| report.input.name.clone())
                .unwrap_or_default(),
            next: schedule.next_run_at.map(timestamp).unwrap_or_default(),
            channels: channel_names(channels, &schedule.input.channels),
            enabled: schedule.input.enabled,
            last_error: schedule.last_error,
            cron: schedule.input.cron,
            time_zone: schedule.input.time_zone,
        })
        .collect()
}

fn channel_names(channels: &[store::alerts::Channel], ids: &[Uuid]) -> String {
    let names: Vec<&str> = ids
        .iter()
        .filter_map(|id| channels.iter().find(|channel| channel.id == *id))
        .map(|channel| channel.name.as_str())
        .collect();
    if names.is_empty() {
        "none (the file stays here)".to_owned()
    } else {
        names.join(", ")
    }
}

/// The schedule form as posted (kept when refused).
#[derive(Debug, Clone)]
struct ScheduleFields {
    report: String,
    cron: String,
    time_zone: String,
    channels: Vec<String>,
    enabled: bool,
}

impl Default for ScheduleFields {
    fn default() -> Self {
        ScheduleFields {
            report: String::new(),
            cron: "0 8 * * 1-5".to_owned(),
            time_zone: "UTC".to_owned(),
            channels: Vec::new(),
            enabled: true,
        }
    }
}

impl ScheduleFields {
    fn parse(body: &[u8]) -> Self {
        let mut fields = ScheduleFields {
            cron: String::new(),
            time_zone: String::new(),
            enabled: false,
            ..ScheduleFields::default()
        };
        for (name, value) in url::form_urlencoded::parse(body) {
            let value = value.into_owned();
            match name.as_ref() {
                "report" => fields.report = value,
                "cron" => fields.cron = value,
                "time_zone" => fields.time_zone = value,
                "channel" => fields.channels.push(value),
                "enabled" => fields.enabled = value == "on",
                _ => {}
            }
        }
        fields
    }

    fn of(schedule: &Schedule) -> Self {
        ScheduleFields {
            report: schedule.report_id.to_string(),
            cron: schedule.input.cron.clone(),
            time_zone: schedule.input.time_zone.clone(),
            channels: schedule
                .input
                .channels
                .iter()
                .map(Uuid::to_string)
                .collect(),
            enabled: schedule.input.enabled,
        }
    }

    fn input(&self) -> Result<ScheduleInput, StoreError> {
        let channels = self
            .channels
            .iter()
            .map(|channel| {
                Uuid::parse_str(channel).map_err(|_| StoreError::InvalidParameter {
                    parameter: "channels",
                    message: "no such channel in this workspace".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ScheduleInput {
            cron: self.cron.clone(),
            time_zone: self.time_zone.clone(),
            channels,
            enabled: self.enabled,
        })
    }

    fn report(&self) -> Result<Uuid, StoreError> {
        Uuid::parse_str(&self.report).map_err(|_| StoreError::InvalidParameter {
            parameter: "report",
            message: "choose a report".into(),
        })
    }
}

/// The schedule form with what it offers: the channels, and (creating) the reports.
struct ScheduleForm {
    fields: ScheduleFields,
    /// (id, label, checked)
    channels: Vec<(String, String, bool)>,
    /// (id, name, selected); empty when editing (a schedule keeps its report).
    reports: Vec<(String, String, bool)>,
    zones: &'static [&'static str],
}

/// Time zones the form suggests (any IANA name is accepted).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
];

impl ScheduleForm {
    fn new(
        fields: ScheduleFields,
        channels: &[store::alerts::Channel],
        reports: Option<&[Report]>,
    ) -> Self {
        ScheduleForm {
            channels: channels
                .iter()
                .map(|channel| {
                    let id = channel.id.to_string();
                    let checked = fields.channels.contains(&id);
                    (
                        id,
                        format!("{} ({})", channel.name, channel.kind.as_str()),
                        checked,
                    )
                })
                .collect(),
            reports: reports
                .unwrap_or_default()
                .iter()
                .map(|report| {
                    let id = report.id.to_string();
                    let selected = fields.report == id;
                    (id, report.input.name.clone(), selected)
                })
                .collect(),
            fields,
            zones: ZONES,
        }
    }
}

async fn create_schedule(
    State(state): State<AppState>,
    member: Member,
    body: Bytes,
) -> Result<Response, PageError> {
    member.require(Permission::ManageReports)?;
    let fields = ScheduleFields::parse(&body);
    let parsed = fields
        .report()
        .and_then(|report| Ok((report, fields.input()?)));
    let outcome = match parsed {
        Ok((report, input)) => {
            let mut tx = member.tx(&state, Permission::ManageReports).await?;
            match store::reports::create_schedule(&mut tx, report, member.role(), &input).await {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(Redirect::to(&format!("{PATH}?done=scheduled")).into_response());
                }
                Err(error) => error,
            }
        }
        Err(error) => error,
    };
    let (status, problem) = crate::pages::correctable(outcome)?;
    render_with(
        &state,
        &member,
        status,
        None,
        Some(problem),
        None,
        Some(fields),
    )
    .await
}

#[derive(Template)]
#[template(path = "app/report_schedule.html")]
struct SchedulePage {
    chrome: Chrome,
    shell: Shell,
    schedule: ScheduleRow,
    /// The next occurrences: in UTC, and on the schedule's wall clock.
    upcoming: Vec<(String, String)>,
    runs: Vec<ScheduleRunRow>,
    notice: Option<String>,
    problem: Option<String>,
    /// The edit form, for those who define reports.
    form: Option<ScheduleForm>,
    /// Whether the member sees deliveries.
    sees_deliveries: bool,
}

/// A run of the schedule, with where its deliveries stand.
struct ScheduleRunRow {
    run: RunRow,
    deliveries: Vec<(String, &'static str, String)>,
}

async fn schedule_page(
    State(state): State<AppState>,
    member: Member,
    Path(schedule): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let schedule = id(&schedule)?;
    render_schedule(
        &state,
        &member,
        schedule,
        StatusCode::OK,
        notice(&done.done),
        None,
        None,
    )
    .await
}

async fn render_schedule(
    state: &AppState,
    member: &Member,
    schedule_id: Uuid,
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    draft: Option<ScheduleFields>,
) -> Result<Response, PageError> {
    let role = member.role();
    let sees_deliveries = role.allows(Permission::AcknowledgeAlerts);
    let mut tx = member.tx(state, Permission::RunReports).await?;
    let schedule = store::reports::get_schedule(&mut tx, schedule_id).await?;
    let report = store::reports::get_report(&mut tx, schedule.report_id).await?;
    let channels = store::alerts::list_channels(&mut tx, false).await?;
    let runs = store::reports::list_schedule_runs(&mut tx, schedule_id, RUNS_SHOWN).await?;
    let mut deliveries = Vec::with_capacity(runs.len());
    for run in &runs {
        deliveries.push(if sees_deliveries {
            store::reports::run_deliveries(&mut tx, run.id).await?
        } else {
            Vec::new()
        });
    }
    tx.commit().await?;
    let upcoming = match (schedule.input.enabled, schedule.input.parse()) {
        (true, Ok(parsed)) => parsed
            .upcoming(OffsetDateTime::now_utc(), 3)
            .into_iter()
            .map(|at| (timestamp(at), parsed.local_time(at)))
            .collect(),
        _ => Vec::new(),
    };
    let form = role.allows(Permission::ManageReports).then(|| {
        ScheduleForm::new(
            draft.unwrap_or_else(|| ScheduleFields::of(&schedule)),
            &channels,
            None,
        )
    });
    let (run_rows, _) = run_rows(member, runs);
    let runs = run_rows
        .into_iter()
        .zip(deliveries)
        .map(|(run, deliveries)| ScheduleRunRow {
            run,
            deliveries: deliveries
                .into_iter()
                .map(|delivery| {
                    let (state, detail) = match (delivery.delivered_at, delivery.failed_at) {
                        (Some(at), _) => ("delivered", timestamp(at)),
                        (None, Some(_)) => ("failed", delivery.last_error.unwrap_or_default()),
                        (None, None) => (
                            "pending",
                            delivery
                                .last_error
                                .map(|error| format!("attempt {}: {error}", delivery.attempts))
                                .unwrap_or_default(),
                        ),
                    };
                    (delivery.channel_name, state, detail)
                })
                .collect(),
        })
        .collect();
    let mut rows = schedule_rows(std::slice::from_ref(&report), &channels, vec![schedule]);
    let page = SchedulePage {
        chrome: member.visitor.chrome("app"),
        shell: shell(member, PATH),
        schedule: rows.remove(0),
        upcoming,
        runs,
        notice,
        problem,
        form,
        sees_deliveries,
    };
    Ok(render(status, &page))
}

async fn update_schedule(
    State(state): State<AppState>,
    member: Member,
    Path(schedule): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let schedule = id(&schedule)?;
    member.require(Permission::ManageReports)?;
    let fields = ScheduleFields::parse(&body);
    let error = match fields.input() {
        Ok(input) => {
            let mut tx = member.tx(&state, Permission::ManageReports).await?;
            match store::reports::update_schedule(&mut tx, schedule, member.role(), &input).await {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(Redirect::to(&format!(
                        "/app/reports/schedules/{schedule}?done=schedule-saved"
                    ))
                    .into_response());
                }
                Err(error) => error,
            }
        }
        Err(error) => error,
    };
    let (status, problem) = crate::pages::correctable(error)?;
    render_schedule(
        &state,
        &member,
        schedule,
        status,
        None,
        Some(problem),
        Some(fields),
    )
    .await
}

async fn delete_schedule(
    State(state): State<AppState>,
    member: Member,
    Path(schedule): Path<String>,
) -> Result<Response, PageError> {
    let schedule = id(&schedule)?;
    let mut tx = member.tx(&state, Permission::ManageReports).await?;
    store::reports::delete_schedule(&mut tx, schedule).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("{PATH}?done=schedule-deleted")).into_response())
}
