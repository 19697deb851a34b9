//! `/app/reports`: a workspace's report definitions and runs (docs/reports.md). Every member
//! who may run reports sees the definitions and the last runs, runs a report whose dataset their
//! role may read, and downloads its file while it lasts; owners and admins define and delete
//! reports. The runs table follows running runs by itself.

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
use store::reports::{Dataset, Filters, Format, Report, ReportInput, Run, RunStatus};
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
    match bytes {
        0 => "—".to_owned(),
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        b => format!("{:.2} GiB", b as f64 / 1_073_741_824.0),
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
    let mut tx = member.tx(state, Permission::RunReports).await?;
    let reports = store::reports::list_reports(&mut tx).await?;
    let runs = store::reports::list_runs(&mut tx, None, RUNS_SHOWN).await?;
    tx.commit().await?;
    let role = member.role();
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
