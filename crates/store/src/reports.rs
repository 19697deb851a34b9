//! Reports (docs/reports.md): a workspace's export definitions, the runs that produce their
//! files, and the datasets they read. A dataset is read through the analytics read layer (the
//! entity lists of [`crate::analytics::entities`], page by page) or by one statement streamed
//! row by row (metrics per minute or per hour, the alerts' timeline, the audit log), always in a
//! [`TenantTx`] of the member who asked for the run, in their role: a report can never read more
//! than its requester may.
//!
//! Owners and admins define reports (audited `report.*`); every member asks for a run of a
//! report whose dataset their role may read (audited `report.run`). The report runner (the
//! `reports` crate) takes queued runs ([`crate::service::reports`]) and writes the file.

use std::future::Future;

use domain::read_model::{ColumnType, EntityKind as ReadModel};
use domain::{Permission, Role, UserId};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::analytics::{self, EntityKind, EntityQuery};
use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};

fn invalid(parameter: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidParameter {
        parameter,
        message: message.into(),
    }
}

/// What a report exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    Devices,
    Sites,
    Sessions,
    /// `analytics.metrics_min`: one row per entity, key and minute.
    MetricsMinute,
    /// `analytics.metrics_hour`: one row per entity, key and hour.
    MetricsHour,
    /// The alerts' timeline: what happened to each rule's series.
    AlertEvents,
    /// The workspace's audit log (owners and admins).
    AuditLog,
}

impl Dataset {
    pub const ALL: [Dataset; 7] = [
        Dataset::Devices,
        Dataset::Sites,
        Dataset::Sessions,
        Dataset::MetricsMinute,
        Dataset::MetricsHour,
        Dataset::AlertEvents,
        Dataset::AuditLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Devices => "devices",
            Dataset::Sites => "sites",
            Dataset::Sessions => "sessions",
            Dataset::MetricsMinute => "metrics_minute",
            Dataset::MetricsHour => "metrics_hour",
            Dataset::AlertEvents => "alert_events",
            Dataset::AuditLog => "audit_log",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Dataset::ALL
            .into_iter()
            .find(|dataset| dataset.as_str() == text)
    }

    /// What a role must hold to export it: what it must hold to read it anywhere else.
    pub fn permission(self) -> Permission {
        match self {
            Dataset::AuditLog => Permission::ViewAudit,
            _ => Permission::ViewDashboards,
        }
    }

    fn entity(self) -> Option<EntityKind> {
        match self {
            Dataset::Devices => Some(EntityKind::Device),
            Dataset::Sites => Some(EntityKind::Site),
            Dataset::Sessions => Some(EntityKind::Session),
            _ => None,
        }
    }

    /// Whether its rows have a time a range selects (all but the entity lists).
    pub fn is_timed(self) -> bool {
        self.entity().is_none()
    }

    /// Its columns, in their default order.
    pub fn columns(self) -> Vec<Column> {
        use ColumnKind::{Float, Integer, Json, Text, Time};
        let fixed = |columns: &[(&'static str, ColumnKind)]| {
            columns
                .iter()
                .map(|(name, kind)| Column { name, kind: *kind })
                .collect()
        };
        let metrics = |time: &'static str| {
            fixed(&[
                (time, Time),
                ("entity_kind", Text),
                ("entity_id", Text),
                ("metric_key", Text),
                ("count", Integer),
                ("sum", Float),
                ("min", Float),
                ("max", Float),
                ("avg", Float),
                ("last", Float),
            ])
        };
        match self {
            Dataset::Devices | Dataset::Sites | Dataset::Sessions => {
                let kind = match self {
                    Dataset::Devices => ReadModel::Device,
                    Dataset::Sites => ReadModel::Site,
                    _ => ReadModel::Session,
                };
                let mut columns = vec![
                    Column {
                        name: "id",
                        kind: Text,
                    },
                    Column {
                        name: "source_id",
                        kind: Text,
                    },
                ];
                columns.extend(
                    kind.typed_columns()
                        .iter()
                        .map(|(name, column_type)| Column {
                            name,
                            kind: match column_type {
                                ColumnType::Num => Float,
                                ColumnType::Time => Time,
                                _ => Text,
                            },
                        }),
                );
                columns.push(Column {
                    name: "extras",
                    kind: Json,
                });
                columns.push(Column {
                    name: "updated_at",
                    kind: Time,
                });
                columns
            }
            Dataset::MetricsMinute => metrics("minute"),
            Dataset::MetricsHour => metrics("hour"),
            Dataset::AlertEvents => fixed(&[
                ("at", Time),
                ("rule_id", Text),
                ("rule", Text),
                ("series", Text),
                ("kind", Text),
                ("value", Float),
                ("detail", Text),
            ]),
            Dataset::AuditLog => fixed(&[
                ("seq", Integer),
                ("occurred_at", Time),
                ("actor_type", Text),
                ("actor_id", Text),
                ("action", Text),
                ("target", Text),
                ("details", Json),
            ]),
        }
    }
}

/// A column's type: what a typed format (Parquet) declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Text,
    Integer,
    Float,
    /// A time with its zone, in UTC.
    Time,
    /// Structured (typed extras, audit details): JSON.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnKind,
}

/// One value of a row, as its column's kind says.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Integer(i64),
    Float(f64),
    Time(OffsetDateTime),
    Json(serde_json::Value),
}

/// A report's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// RFC 4180 with a header; cells a spreadsheet would run as a formula are neutralised.
    Csv,
    /// Typed columns, zstd-compressed row groups.
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Csv, Format::Parquet, Format::Jsonl];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Format::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Jsonl => "application/x-ndjson",
        }
    }
}

/// The most hours a relative range reaches back: a year and a day.
pub const MAX_LAST_HOURS: u32 = 8_808;

/// Which rows a report selects. A timed dataset takes a range: `from` and `to` (absolute), or
/// the `last_hours` before the run (relative; 24 when neither is given). `site` selects devices
/// and sessions of a site and a site's readings; `device` a device's sessions and readings;
/// `key` one metric key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hours: Option<u32>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub to: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Filters {
    /// The range of a timed dataset's run at `now`.
    pub fn range(&self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        match (self.from, self.to) {
            (Some(from), Some(to)) => (from, to),
            _ => (
                now - Duration::hours(i64::from(self.last_hours.unwrap_or(24))),
                now,
            ),
        }
    }
}

/// A report definition as it is created, edited and copied into each run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    pub name: String,
    pub dataset: Dataset,
    /// The columns in file order; empty: all of the dataset's.
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub filters: Filters,
    /// Newest (or last id) first.
    #[serde(default)]
    pub descending: bool,
    pub format: Format,
}

impl ReportInput {
    pub fn new(name: &str, dataset: Dataset, format: Format) -> Self {
        ReportInput {
            name: name.to_owned(),
            dataset,
            columns: Vec::new(),
            filters: Filters::default(),
            descending: false,
            format,
        }
    }

    /// Checks everything the database would refuse and every filter that does not apply,
    /// naming the parameter as the API spells it.
    pub fn validate(&self) -> Result<(), StoreError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "a name of 1 to 100 characters"));
        }
        let known = self.dataset.columns();
        let mut seen = std::collections::BTreeSet::new();
        for column in &self.columns {
            if !known.iter().any(|known| known.name == column) {
                return Err(invalid(
                    "columns",
                    format!(
                        "{} has no column {column:?}; its columns are {}",
                        self.dataset.as_str(),
                        known
                            .iter()
                            .map(|column| column.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !seen.insert(column) {
                return Err(invalid("columns", format!("{column:?} is listed twice")));
            }
        }
        let filters = &self.filters;
        let timed = self.dataset.is_timed();
        let ranged = filters.last_hours.is_some() || filters.from.is_some() || filters.to.is_some();
        if ranged && !timed {
            return Err(invalid(
                "filters",
                format!(
                    "{} has no time range: it lists what is",
                    self.dataset.as_str()
                ),
            ));
        }
        if let Some(hours) = filters.last_hours
            && !(1..=MAX_LAST_HOURS).contains(&hours)
        {
            return Err(invalid(
                "last_hours",
                format!("1 to {MAX_LAST_HOURS} hours"),
            ));
        }
        match (filters.from, filters.to) {
            (Some(from), Some(to)) => {
                if filters.last_hours.is_some() {
                    return Err(invalid(
                        "last_hours",
                        "a range is either the last hours or from and to, not both",
                    ));
                }
                if from >= to {
                    return Err(invalid("from", "from must be before to"));
                }
            }
            (None, None) => {}
            _ => return Err(invalid("to", "an absolute range needs both from and to")),
        }
        let metrics = matches!(self.dataset, Dataset::MetricsMinute | Dataset::MetricsHour);
        for (parameter, value, applies) in [
            (
                "site",
                &filters.site,
                metrics || matches!(self.dataset, Dataset::Devices | Dataset::Sessions),
            ),
            (
                "device",
                &filters.device,
                metrics || self.dataset == Dataset::Sessions,
            ),
            ("key", &filters.key, metrics),
        ] {
            if let Some(value) = value {
                if !applies {
                    return Err(invalid(
                        parameter,
                        format!("{parameter} does not filter {}", self.dataset.as_str()),
                    ));
                }
                if value.trim().is_empty() || value.chars().count() > 200 {
                    return Err(invalid(parameter, "1 to 200 characters"));
                }
            }
        }
        Ok(())
    }

    /// The columns the file has, in order.
    pub fn selected_columns(&self) -> Vec<Column> {
        let all = self.dataset.columns();
        if self.columns.is_empty() {
            return all;
        }
        self.columns
            .iter()
            .filter_map(|name| all.iter().find(|column| column.name == name).copied())
            .collect()
    }
}

/// A saved report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub id: Uuid,
    #[serde(flatten)]
    pub input: ReportInput,
    pub created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn name_taken(error: sqlx::Error) -> StoreError {
    let error = StoreError::from(error);
    if error.sqlstate().as_deref() == Some("23505") {
        StoreError::AlreadyExists("report")
    } else {
        error
    }
}

fn tenant_of(tx: &TenantTx) -> Result<domain::TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("a report needs a tenant scope"))
}

fn filters_json(input: &ReportInput) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(&input.filters).map_err(|_| StoreError::Invalid("filters".into()))
}

/// Creates a report; audited.
pub async fn create_report(tx: &mut TenantTx, input: &ReportInput) -> Result<Uuid, StoreError> {
    let tenant = tenant_of(tx)?;
    input.validate()?;
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into control.reports (tenant_id, report_id, name, dataset, columns, filters, \
             descending, format, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, nullif(current_setting('tributary.user_id', \
             true), '')::uuid)",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(input.name.trim())
    .bind(input.dataset.as_str())
    .bind(&input.columns)
    .bind(filters_json(input)?)
    .bind(input.descending)
    .bind(input.format.as_str())
    .execute(tx.connection())
    .await
    .map_err(name_taken)?;
    audit::append(
        tx,
        AuditEntry::new("report.create", id.to_string()).details(serde_json::json!({
            "name": input.name.trim(),
            "dataset": input.dataset.as_str(),
            "format": input.format.as_str(),
        })),
    )
    .await?;
    Ok(id)
}

/// Replaces a report's definition; audited. Runs already asked keep the definition they copied.
pub async fn update_report(
    tx: &mut TenantTx,
    report: Uuid,
    input: &ReportInput,
) -> Result<(), StoreError> {
    input.validate()?;
    let updated = sqlx::query(
        "update control.reports set name = $2, dataset = $3, columns = $4, filters = $5, \
             descending = $6, format = $7, updated_at = now() \
         where report_id = $1",
    )
    .bind(report)
    .bind(input.name.trim())
    .bind(input.dataset.as_str())
    .bind(&input.columns)
    .bind(filters_json(input)?)
    .bind(input.descending)
    .bind(input.format.as_str())
    .execute(tx.connection())
    .await
    .map_err(name_taken)?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("report"));
    }
    audit::append(
        tx,
        AuditEntry::new("report.update", report.to_string()).details(serde_json::json!({
            "dataset": input.dataset.as_str(),
            "format": input.format.as_str(),
        })),
    )
    .await
}

/// Deletes a report; its runs (and their files, until they expire) stay. Audited.
pub async fn delete_report(tx: &mut TenantTx, report: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query("delete from control.reports where report_id = $1")
        .bind(report)
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("report"));
    }
    audit::append(tx, AuditEntry::new("report.delete", report.to_string())).await
}

#[derive(sqlx::FromRow)]
struct ReportRow {
    report_id: Uuid,
    name: String,
    dataset: String,
    columns: Vec<String>,
    filters: serde_json::Value,
    descending: bool,
    format: String,
    created_by: Option<Uuid>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl ReportRow {
    fn into_report(self) -> Result<Report, StoreError> {
        let corrupt = || StoreError::Invalid("a stored report does not parse".into());
        Ok(Report {
            id: self.report_id,
            input: ReportInput {
                name: self.name,
                dataset: Dataset::parse(&self.dataset).ok_or_else(corrupt)?,
                columns: self.columns,
                filters: serde_json::from_value(self.filters).map_err(|_| corrupt())?,
                descending: self.descending,
                format: Format::parse(&self.format).ok_or_else(corrupt)?,
            },
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const REPORT_COLUMNS: &str = "report_id, name, dataset, columns, filters, descending, format, \
                              created_by, created_at, updated_at";

/// The workspace's reports by name.
pub async fn list_reports(tx: &mut TenantTx) -> Result<Vec<Report>, StoreError> {
    let rows: Vec<ReportRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {REPORT_COLUMNS} from control.reports order by name"
    )))
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(ReportRow::into_report).collect()
}

pub async fn get_report(tx: &mut TenantTx, report: Uuid) -> Result<Report, StoreError> {
    let row: Option<ReportRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {REPORT_COLUMNS} from control.reports where report_id = $1"
    )))
    .bind(report)
    .fetch_optional(tx.connection())
    .await?;
    row.ok_or(StoreError::NotFound("report"))?.into_report()
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Queued,
        }
    }
}

/// A run of a report: what it copied of the definition, who asked in which role, and how far it
/// got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: Uuid,
    pub report_id: Option<Uuid>,
    pub report_name: String,
    pub definition: ReportInput,
    pub requested_by: Option<Uuid>,
    pub run_as: Role,
    pub status: RunStatus,
    pub rows: i64,
    pub bytes: i64,
    /// Why it failed, in words safe to show.
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Until when its file can be downloaded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Where the export store keeps the file (the download route serves it).
    #[serde(skip)]
    pub object_key: Option<String>,
}

impl Run {
    /// Whether its file can be downloaded at `now`.
    pub fn downloadable(&self, now: OffsetDateTime) -> bool {
        self.status == RunStatus::Succeeded
            && self.object_key.is_some()
            && self.expires_at.is_some_and(|expires| expires > now)
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    run_id: Uuid,
    report_id: Option<Uuid>,
    report_name: String,
    definition: serde_json::Value,
    requested_by: Option<Uuid>,
    run_as: String,
    status: String,
    rows_written: i64,
    bytes_written: i64,
    object_key: Option<String>,
    error: Option<String>,
    requested_at: OffsetDateTime,
    started_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
}

impl RunRow {
    pub(crate) fn into_run(self) -> Result<Run, StoreError> {
        let corrupt = || StoreError::Invalid("a stored report run does not parse".into());
        Ok(Run {
            id: self.run_id,
            report_id: self.report_id,
            report_name: self.report_name,
            definition: serde_json::from_value(self.definition).map_err(|_| corrupt())?,
            requested_by: self.requested_by,
            run_as: self.run_as.parse().map_err(|_| corrupt())?,
            status: RunStatus::parse(&self.status),
            rows: self.rows_written,
            bytes: self.bytes_written,
            error: self.error,
            requested_at: self.requested_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            expires_at: self.expires_at,
            object_key: self.object_key,
        })
    }
}

pub(crate) const RUN_COLUMNS: &str = "run_id, report_id, report_name, definition, requested_by, \
     run_as, status, rows_written, bytes_written, object_key, error, requested_at, started_at, \
     finished_at, expires_at";

/// Asks for a run of `report` by `requester` in `role` (the role the member or token holds):
/// refused when the role may not read the report's dataset. The definition is copied into the
/// run. Audited when it ends ([`crate::service::reports::record_export`]).
pub async fn request_run(
    tx: &mut TenantTx,
    report: Uuid,
    requester: Option<UserId>,
    role: Role,
) -> Result<Run, StoreError> {
    let tenant = tenant_of(tx)?;
    let found = get_report(tx, report).await?;
    if !role.is_tenant_role() {
        return Err(StoreError::Forbidden("reports run in a tenant role"));
    }
    if !role.allows(found.input.dataset.permission()) {
        return Err(StoreError::Forbidden(
            "this role may not read the report's dataset",
        ));
    }
    let definition = serde_json::to_value(&found.input)
        .map_err(|_| StoreError::Invalid("report definition".into()))?;
    let row: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into control.report_runs (tenant_id, report_id, report_name, definition, \
             requested_by, run_as) values ($1, $2, $3, $4, $5, $6) returning {RUN_COLUMNS}"
    )))
    .bind(tenant.as_uuid())
    .bind(report)
    .bind(&found.input.name)
    .bind(definition)
    .bind(requester.map(|user| *user.as_uuid()))
    .bind(role.as_str())
    .fetch_one(tx.connection())
    .await?;
    // Audited when it ends (`report.run`, by the runner for the requester, with what it
    // wrote): a viewer, who may export, appends nothing to the audit log itself.
    row.into_run()
}

/// The workspace's runs, newest first: of one report, or all.
pub async fn list_runs(
    tx: &mut TenantTx,
    report: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from control.report_runs \
         where $1::uuid is null or report_id = $1 order by requested_at desc, run_id limit $2"
    )))
    .bind(report)
    .bind(limit.clamp(1, 500))
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(RunRow::into_run).collect()
}

pub async fn get_run(tx: &mut TenantTx, run: Uuid) -> Result<Run, StoreError> {
    let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from control.report_runs where run_id = $1"
    )))
    .bind(run)
    .fetch_optional(tx.connection())
    .await?;
    row.ok_or(StoreError::NotFound("report run"))?.into_run()
}

/// Where an export's rows go, one at a time, in the columns' order.
pub trait RowSink {
    type Error: From<StoreError>;

    fn row(&mut self, cells: &[Cell]) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How many entities one page of an entity export reads.
const ENTITY_PAGE: u32 = 500;

/// Streams `definition`'s rows at `now` into `sink`, read in `tx` (the requester's transaction):
/// never all in memory. Returns how many rows it wrote.
pub async fn export<S: RowSink + Send>(
    tx: &mut TenantTx,
    definition: &ReportInput,
    now: OffsetDateTime,
    sink: &mut S,
) -> Result<u64, S::Error> {
    definition.validate()?;
    let columns = definition.selected_columns();
    let all = definition.dataset.columns();
    // Where each selected column is in the dataset's full row.
    let picks: Vec<usize> = columns
        .iter()
        .filter_map(|column| all.iter().position(|known| known.name == column.name))
        .collect();
    let mut picked: Vec<Cell> = Vec::with_capacity(picks.len());
    let mut written = 0_u64;
    if let Some(kind) = definition.dataset.entity() {
        let mut query = EntityQuery {
            site: definition.filters.site.clone(),
            device: definition.filters.device.clone(),
            descending: definition.descending,
            limit: Some(ENTITY_PAGE),
            ..EntityQuery::default()
        };
        loop {
            let page = analytics::entities(tx, kind, &query).await?;
            for entity in page.items {
                let row = entity_row(&all, entity);
                picked.clear();
                picked.extend(picks.iter().map(|index| row[*index].clone()));
                sink.row(&picked).await?;
                written += 1;
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        return Ok(written);
    }
    let (from, to) = definition.filters.range(now);
    let statement = match (definition.dataset, definition.descending) {
        (Dataset::MetricsMinute, false) => METRICS_MINUTE[0],
        (Dataset::MetricsMinute, true) => METRICS_MINUTE[1],
        (Dataset::MetricsHour, false) => METRICS_HOUR[0],
        (Dataset::MetricsHour, true) => METRICS_HOUR[1],
        (Dataset::AlertEvents, false) => ALERT_EVENTS[0],
        (Dataset::AlertEvents, true) => ALERT_EVENTS[1],
        (Dataset::AuditLog, false) => AUDIT_LOG[0],
        (Dataset::AuditLog, true) => AUDIT_LOG[1],
        _ => unreachable!("entity datasets are read above"),
    };
    let mut query = sqlx::query(statement).bind(from).bind(to);
    if matches!(
        definition.dataset,
        Dataset::MetricsMinute | Dataset::MetricsHour
    ) {
        query = query
            .bind(&definition.filters.key)
            .bind(&definition.filters.device)
            .bind(&definition.filters.site);
    }
    let mut rows = query.fetch(tx.connection());
    while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
        picked.clear();
        for index in &picks {
            picked.push(cell(&row, *index, all[*index].kind).map_err(StoreError::from)?);
        }
        sink.row(&picked).await?;
        written += 1;
    }
    Ok(written)
}

/// An entity as a full row of its dataset's columns.
fn entity_row(columns: &[Column], mut entity: analytics::Entity) -> Vec<Cell> {
    columns
        .iter()
        .map(|column| match column.name {
            "id" => Cell::Text(std::mem::take(&mut entity.id)),
            "source_id" => Cell::Text(entity.source_id.to_string()),
            "updated_at" => Cell::Time(entity.updated_at),
            "extras" => Cell::Json(serde_json::Value::Object(std::mem::take(
                &mut entity.extras,
            ))),
            name => match (entity.columns.remove(name), column.kind) {
                (None | Some(serde_json::Value::Null), _) => Cell::Null,
                (Some(serde_json::Value::Number(number)), ColumnKind::Float) => {
                    number.as_f64().map_or(Cell::Null, Cell::Float)
                }
                (Some(serde_json::Value::String(text)), ColumnKind::Time) => {
                    OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                        .map_or(Cell::Text(text), Cell::Time)
                }
                (Some(serde_json::Value::String(text)), _) => Cell::Text(text),
                (Some(other), _) => Cell::Text(other.to_string()),
            },
        })
        .collect()
}

/// Column `index` of a streamed row as `kind`.
fn cell(row: &sqlx::postgres::PgRow, index: usize, kind: ColumnKind) -> Result<Cell, sqlx::Error> {
    Ok(match kind {
        ColumnKind::Text => row
            .try_get::<Option<String>, _>(index)?
            .map_or(Cell::Null, Cell::Text),
        ColumnKind::Integer => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Cell::Null, Cell::Integer),
        ColumnKind::Float => row
            .try_get::<Option<f64>, _>(index)?
            .map_or(Cell::Null, Cell::Float),
        ColumnKind::Time => row
            .try_get::<Option<OffsetDateTime>, _>(index)?
            .map_or(Cell::Null, Cell::Time),
        ColumnKind::Json => row
            .try_get::<Option<serde_json::Value>, _>(index)?
            .map_or(Cell::Null, Cell::Json),
    })
}

/// The metric rows of `$table` (time column `$time`) in the range $1-$2, of the key $3, of the
/// device $4 (its own readings and its sessions') and of the site $5 (its own, its devices' and
/// its sessions'), each filter applying when given: the attribution the analytics read layer's
/// series use. Ascending, then descending, by time then entity and key.
macro_rules! metric_rows {
    ($table:literal, $time:literal) => {
        [
            metric_rows!($table, $time, ""),
            metric_rows!($table, $time, " desc"),
        ]
    };
    ($table:literal, $time:literal, $order:literal) => {
        concat!(
            "select m.",
            $time,
            ", m.entity_kind, m.entity_id, m.metric_key, m.value_count, m.value_sum, \
                 m.value_min, m.value_max, m.value_sum / m.value_count, m.last_value \
             from ",
            $table,
            " m where m.",
            $time,
            " >= $1 and m.",
            $time,
            " < $2 \
               and ($3::text is null or m.metric_key = $3) \
               and ($4::text is null \
                    or (m.entity_kind = 'device' and m.entity_id = $4) \
                    or (m.entity_kind = 'session' and m.entity_id in \
                        (select session_id from analytics.sessions where device_id = $4))) \
               and ($5::text is null \
                    or (m.entity_kind = 'site' and m.entity_id = $5) \
                    or (m.entity_kind = 'device' and m.entity_id in \
                        (select device_id from analytics.devices where site_id = $5)) \
                    or (m.entity_kind = 'session' and m.entity_id in \
                        (select session_id from analytics.sessions where site_id = $5))) \
             order by m.",
            $time,
            $order,
            ", m.entity_kind, m.entity_id, m.metric_key"
        )
    };
}

const METRICS_MINUTE: [&str; 2] = metric_rows!("analytics.metrics_min", "minute");
const METRICS_HOUR: [&str; 2] = metric_rows!("analytics.metrics_hour", "hour");

/// The alerts' timeline in the range $1-$2, with each rule's name.
const ALERT_EVENTS: [&str; 2] = [
    "select e.at, e.rule_id::text, r.name, e.series, e.kind, e.value, e.detail \
     from control.alert_events e left join control.alert_rules r using (tenant_id, rule_id) \
     where e.at >= $1 and e.at < $2 order by e.at, e.event_id",
    "select e.at, e.rule_id::text, r.name, e.series, e.kind, e.value, e.detail \
     from control.alert_events e left join control.alert_rules r using (tenant_id, rule_id) \
     where e.at >= $1 and e.at < $2 order by e.at desc, e.event_id desc",
];

/// The audit log in the range $1-$2, in chain order.
const AUDIT_LOG: [&str; 2] = [
    "select seq, occurred_at, actor_type, actor_id, action, target, details from audit.log \
     where occurred_at >= $1 and occurred_at < $2 order by seq",
    "select seq, occurred_at, actor_type, actor_id, action, target, details from audit.log \
     where occurred_at >= $1 and occurred_at < $2 order by seq desc",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dataset: Dataset) -> ReportInput {
        ReportInput::new("Weekly", dataset, Format::Csv)
    }

    fn refused(input: &ReportInput) -> &'static str {
        match input.validate() {
            Err(StoreError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("{input:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_definition_names_what_is_wrong_with_it() {
        assert!(input(Dataset::Devices).validate().is_ok());
        let mut unknown = input(Dataset::Devices);
        unknown.columns = vec!["id".into(), "colour".into()];
        assert_eq!(refused(&unknown), "columns");
        let mut twice = input(Dataset::Devices);
        twice.columns = vec!["id".into(), "id".into()];
        assert_eq!(refused(&twice), "columns");
        let mut ranged = input(Dataset::Sites);
        ranged.filters.last_hours = Some(24);
        assert_eq!(refused(&ranged), "filters");
        let mut key = input(Dataset::Devices);
        key.filters.key = Some("power_kw".into());
        assert_eq!(refused(&key), "key");
        let mut device = input(Dataset::Devices);
        device.filters.device = Some("dev-1".into());
        assert_eq!(refused(&device), "device");
        let mut long = input(Dataset::MetricsMinute);
        long.filters.last_hours = Some(MAX_LAST_HOURS + 1);
        assert_eq!(refused(&long), "last_hours");
        let mut half = input(Dataset::MetricsMinute);
        half.filters.from = Some(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(refused(&half), "to");
        let mut backwards = input(Dataset::AuditLog);
        backwards.filters.from = Some(OffsetDateTime::UNIX_EPOCH + Duration::hours(2));
        backwards.filters.to = Some(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(refused(&backwards), "from");
        let mut nameless = input(Dataset::AuditLog);
        nameless.name = "  ".into();
        assert_eq!(refused(&nameless), "name");
        let mut metrics = input(Dataset::MetricsHour);
        metrics.filters = Filters {
            last_hours: Some(48),
            site: Some("site-1".into()),
            device: Some("dev-1".into()),
            key: Some("power_kw".into()),
            ..Filters::default()
        };
        metrics.columns = vec!["hour".into(), "avg".into()];
        assert!(metrics.validate().is_ok());
        assert_eq!(
            metrics
                .selected_columns()
                .iter()
                .map(|column| column.name)
                .collect::<Vec<_>>(),
            ["hour", "avg"]
        );
    }

    #[test]
    fn the_audit_log_is_exported_only_by_those_who_read_it() {
        for dataset in Dataset::ALL {
            let permission = dataset.permission();
            assert_eq!(
                Role::Viewer.allows(permission),
                dataset != Dataset::AuditLog,
                "{dataset:?}"
            );
        }
    }

    #[test]
    fn a_relative_range_ends_at_the_run() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(10);
        let filters = Filters {
            last_hours: Some(6),
            ..Filters::default()
        };
        assert_eq!(filters.range(now), (now - Duration::hours(6), now));
        assert_eq!(
            Filters::default().range(now),
            (now - Duration::hours(24), now)
        );
    }
}
