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
use crate::schedule::CronSchedule;
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
    /// The typed extras: one row per live entity and field (fields a mapping does not type).
    Extras,
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
    pub const ALL: [Dataset; 8] = [
        Dataset::Devices,
        Dataset::Sites,
        Dataset::Sessions,
        Dataset::Extras,
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
            Dataset::Extras => "extras",
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

    /// Whether its rows have a time a range selects (all but the entity lists and extras,
    /// which list what is).
    pub fn is_timed(self) -> bool {
        self.entity().is_none() && self != Dataset::Extras
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
            Dataset::Extras => fixed(&[
                ("entity_kind", Text),
                ("entity_id", Text),
                ("key", Text),
                ("type", Text),
                ("text", Text),
                ("number", Float),
                ("boolean", Text),
                ("time", Time),
                ("seen_at", Time),
            ]),
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
                ("client_addr", Text),
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

/// A file's size as people read it: `812 B`, `4.2 kB`, `18.0 MB` (the pages and the mail
/// about a report say it the same way).
pub fn file_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1_000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1_000.0;
    let mut unit = 0;
    while value >= 1_000.0 && unit < UNITS.len() - 1 {
        value /= 1_000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The most hours a relative range reaches back: a year and a day.
pub const MAX_LAST_HOURS: u32 = 8_808;

/// Which rows a report selects. A timed dataset takes a range: `from` and `to` (absolute), or
/// the `last_hours` before the run (relative; 24 when neither is given). `site` selects devices
/// and sessions of a site and a site's readings; `device` a device's sessions and readings;
/// `key` one metric key; `action` (a prefix, e.g. `member.`) and `actor_type` select audit log
/// entries.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<String>,
}

/// The actor types an audit entry records.
pub const ACTOR_TYPES: [&str; 5] = ["user", "cli", "system", "agent", "api_token"];

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
            (
                "key",
                &filters.key,
                metrics || self.dataset == Dataset::Extras,
            ),
            ("action", &filters.action, self.dataset == Dataset::AuditLog),
            (
                "actor_type",
                &filters.actor_type,
                self.dataset == Dataset::AuditLog,
            ),
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
        if let Some(actor) = &filters.actor_type
            && !ACTOR_TYPES.contains(&actor.as_str())
        {
            return Err(invalid(
                "actor_type",
                format!("one of {}", ACTOR_TYPES.join(", ")),
            ));
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
    /// The schedule that asked for it, if one did, and the occurrence it ran for (its relative
    /// time range ends there).
    pub schedule_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub occurrence: Option<OffsetDateTime>,
    /// Where the export store keeps the file (the download route serves it).
    #[serde(skip)]
    pub object_key: Option<String>,
}

impl Run {
    /// Its file's name: the report's name in letters, digits, `-` and `_` (nothing a header or
    /// a shell would read), the day it was asked for, and the format's extension.
    pub fn file_name(&self) -> String {
        let stem: String = self
            .report_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        let stem = if stem.trim_matches('-').is_empty() {
            "report"
        } else {
            &stem
        };
        format!(
            "{stem}-{}.{}",
            self.occurrence.unwrap_or(self.requested_at).date(),
            self.definition.format.as_str()
        )
    }

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
    schedule_id: Option<Uuid>,
    occurrence: Option<OffsetDateTime>,
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
            schedule_id: self.schedule_id,
            occurrence: self.occurrence,
            object_key: self.object_key,
        })
    }
}

pub(crate) const RUN_COLUMNS: &str = "run_id, report_id, report_name, definition, requested_by, \
     run_as, status, rows_written, bytes_written, object_key, error, requested_at, started_at, \
     finished_at, expires_at, schedule_id, occurrence";

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

/// A schedule's runs, newest first: its run history.
pub async fn list_schedule_runs(
    tx: &mut TenantTx,
    schedule: Uuid,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from control.report_runs \
         where schedule_id = $1 order by occurrence desc, run_id limit $2"
    )))
    .bind(schedule)
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

/// A report's schedule as it is created and edited: a five-field cron expression read in an
/// IANA time zone ([`crate::schedule`]), the channels the file goes to, and whether it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    pub cron: String,
    pub time_zone: String,
    /// Alert channels the file (or, failed, the reason) goes to, in order; at most 10.
    #[serde(default)]
    pub channels: Vec<Uuid>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The most channels one schedule delivers to.
pub const MAX_SCHEDULE_CHANNELS: usize = 10;

impl ScheduleInput {
    /// The parsed schedule, or the parameter that is wrong and why.
    pub fn parse(&self) -> Result<CronSchedule, StoreError> {
        let schedule = CronSchedule::parse(&self.cron, &self.time_zone).map_err(|error| {
            StoreError::InvalidParameter {
                parameter: error.parameter(),
                message: error.to_string(),
            }
        })?;
        if self.channels.len() > MAX_SCHEDULE_CHANNELS {
            return Err(invalid("channels", "at most 10 channels"));
        }
        let mut seen = std::collections::HashSet::new();
        if !self.channels.iter().all(|channel| seen.insert(channel)) {
            return Err(invalid("channels", "a channel is named twice"));
        }
        Ok(schedule)
    }
}

/// A saved schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub id: Uuid,
    pub report_id: Uuid,
    #[serde(flatten)]
    pub input: ScheduleInput,
    /// Whose role its runs read in (the member who last saved it), if a member did.
    pub owner: Option<Uuid>,
    /// The role it was saved in (a token's runs read in it).
    pub run_as: Role,
    /// When it runs next (enabled schedules).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run_at: Option<OffsetDateTime>,
    /// The last occurrence it asked a run for.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_occurrence: Option<OffsetDateTime>,
    /// Why its last occurrence could not be asked for, if it could not.
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    schedule_id: Uuid,
    report_id: Uuid,
    cron: String,
    time_zone: String,
    channels: Vec<Uuid>,
    enabled: bool,
    owner: Option<Uuid>,
    run_as: String,
    next_run_at: OffsetDateTime,
    last_occurrence: Option<OffsetDateTime>,
    last_error: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl ScheduleRow {
    fn into_schedule(self) -> Result<Schedule, StoreError> {
        Ok(Schedule {
            id: self.schedule_id,
            report_id: self.report_id,
            input: ScheduleInput {
                cron: self.cron,
                time_zone: self.time_zone,
                channels: self.channels,
                enabled: self.enabled,
            },
            owner: self.owner,
            run_as: self
                .run_as
                .parse()
                .map_err(|_| StoreError::Invalid("a stored schedule does not parse".into()))?,
            next_run_at: self.enabled.then_some(self.next_run_at),
            last_occurrence: self.last_occurrence,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const SCHEDULE_COLUMNS: &str = "schedule_id, report_id, cron, time_zone, channels, enabled, \
     owner, run_as, next_run_at, last_occurrence, last_error, created_at, updated_at";

/// Refuses channels that are not the workspace's.
async fn check_channels(tx: &mut TenantTx, channels: &[Uuid]) -> Result<(), StoreError> {
    if channels.is_empty() {
        return Ok(());
    }
    let found: i64 = sqlx::query_scalar(
        "select count(*) from control.alert_channels where channel_id = any($1)",
    )
    .bind(channels)
    .fetch_one(tx.connection())
    .await?;
    if found != channels.len() as i64 {
        return Err(invalid("channels", "no such channel in this workspace"));
    }
    Ok(())
}

/// Schedules `report`, saved by the transaction's member in `role`; audited. Its first run is
/// its first occurrence after now.
pub async fn create_schedule(
    tx: &mut TenantTx,
    report: Uuid,
    role: Role,
    input: &ScheduleInput,
) -> Result<Schedule, StoreError> {
    let tenant = tenant_of(tx)?;
    let schedule = input.parse()?;
    get_report(tx, report).await?;
    check_channels(tx, &input.channels).await?;
    let next = schedule
        .next_after(OffsetDateTime::now_utc())
        .ok_or_else(|| invalid("cron", "it never runs"))?;
    let row: ScheduleRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into control.report_schedules (tenant_id, report_id, cron, time_zone, channels, \
             enabled, owner, run_as, next_run_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {SCHEDULE_COLUMNS}"
    )))
    .bind(tenant.as_uuid())
    .bind(report)
    .bind(input.cron.trim())
    .bind(schedule.time_zone())
    .bind(&input.channels)
    .bind(input.enabled)
    .bind(tx.actor_user().map(|user| *user.as_uuid()))
    .bind(role.as_str())
    .bind(next)
    .fetch_one(tx.connection())
    .await?;
    let saved = row.into_schedule()?;
    audit::append(
        tx,
        AuditEntry::new("report_schedule.create", saved.id.to_string()).details(
            serde_json::json!({
                "report": report,
                "cron": saved.input.cron,
                "time_zone": saved.input.time_zone,
                "channels": saved.input.channels.len(),
                "enabled": saved.input.enabled,
            }),
        ),
    )
    .await?;
    Ok(saved)
}

/// Replaces a schedule; audited. Whoever saves it owns its runs from then on, and only
/// occurrences after the save are due.
pub async fn update_schedule(
    tx: &mut TenantTx,
    schedule_id: Uuid,
    role: Role,
    input: &ScheduleInput,
) -> Result<Schedule, StoreError> {
    let schedule = input.parse()?;
    check_channels(tx, &input.channels).await?;
    let next = schedule
        .next_after(OffsetDateTime::now_utc())
        .ok_or_else(|| invalid("cron", "it never runs"))?;
    let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update control.report_schedules set cron = $2, time_zone = $3, channels = $4, \
             enabled = $5, owner = $6, run_as = $7, next_run_at = $8, since = now(), \
             last_error = null, updated_at = now() \
         where schedule_id = $1 returning {SCHEDULE_COLUMNS}"
    )))
    .bind(schedule_id)
    .bind(input.cron.trim())
    .bind(schedule.time_zone())
    .bind(&input.channels)
    .bind(input.enabled)
    .bind(tx.actor_user().map(|user| *user.as_uuid()))
    .bind(role.as_str())
    .bind(next)
    .fetch_optional(tx.connection())
    .await?;
    let saved = row
        .ok_or(StoreError::NotFound("report schedule"))?
        .into_schedule()?;
    audit::append(
        tx,
        AuditEntry::new("report_schedule.update", schedule_id.to_string()).details(
            serde_json::json!({
                "report": saved.report_id,
                "cron": saved.input.cron,
                "time_zone": saved.input.time_zone,
                "channels": saved.input.channels.len(),
                "enabled": saved.input.enabled,
            }),
        ),
    )
    .await?;
    Ok(saved)
}

/// Deletes a schedule; its runs stay. Audited.
pub async fn delete_schedule(tx: &mut TenantTx, schedule_id: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query("delete from control.report_schedules where schedule_id = $1")
        .bind(schedule_id)
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("report schedule"));
    }
    audit::append(
        tx,
        AuditEntry::new("report_schedule.delete", schedule_id.to_string()),
    )
    .await
}

/// The workspace's schedules, of one report or all, oldest first.
pub async fn list_schedules(
    tx: &mut TenantTx,
    report: Option<Uuid>,
) -> Result<Vec<Schedule>, StoreError> {
    let rows: Vec<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SCHEDULE_COLUMNS} from control.report_schedules \
         where $1::uuid is null or report_id = $1 order by created_at, schedule_id"
    )))
    .bind(report)
    .fetch_all(tx.connection())
    .await?;
    rows.into_iter().map(ScheduleRow::into_schedule).collect()
}

pub async fn get_schedule(tx: &mut TenantTx, schedule_id: Uuid) -> Result<Schedule, StoreError> {
    let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SCHEDULE_COLUMNS} from control.report_schedules where schedule_id = $1"
    )))
    .bind(schedule_id)
    .fetch_optional(tx.connection())
    .await?;
    row.ok_or(StoreError::NotFound("report schedule"))?
        .into_schedule()
}

/// A run's file (or failure) sent to a channel: where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDelivery {
    pub channel_id: Uuid,
    pub channel_name: String,
    pub kind: String,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    /// Set when it was given up.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

type DeliveryRow = (
    Uuid,
    String,
    String,
    i32,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<String>,
);

/// Where a run's deliveries stand (roles that see alert deliveries: operators and above).
pub async fn run_deliveries(tx: &mut TenantTx, run: Uuid) -> Result<Vec<RunDelivery>, StoreError> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "select o.channel_id, c.name, c.kind, o.attempts, o.delivered_at, o.failed_at, \
                    o.last_error \
             from pipeline.alert_outbox o join control.alert_channels c \
               on c.tenant_id = o.tenant_id and c.channel_id = o.channel_id \
             where o.run_id = $1 order by o.created_at, c.name",
    )
    .bind(run)
    .fetch_all(tx.connection())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| RunDelivery {
            channel_id: row.0,
            channel_name: row.1,
            kind: row.2,
            attempts: row.3,
            delivered_at: row.4,
            failed_at: row.5,
            last_error: row.6,
        })
        .collect())
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
        (Dataset::Extras, descending) => EXTRAS[usize::from(descending)],
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
    let mut query = sqlx::query(statement);
    if definition.dataset == Dataset::Extras {
        query = query.bind(&definition.filters.key);
    } else {
        query = query.bind(from).bind(to);
    }
    if matches!(
        definition.dataset,
        Dataset::MetricsMinute | Dataset::MetricsHour
    ) {
        query = query
            .bind(&definition.filters.key)
            .bind(&definition.filters.device)
            .bind(&definition.filters.site);
    }
    if definition.dataset == Dataset::AuditLog {
        query = query
            .bind(&definition.filters.action)
            .bind(&definition.filters.actor_type);
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
/// The typed extras of live entities (a deleted entity's are left out), one row per field with
/// its value in the column of its type, of the field `$1` when given; by entity kind, entity and
/// field, ascending then descending.
macro_rules! extras_rows {
    ($order:literal) => {
        concat!(
            "select x.entity_kind, x.entity_id, x.key, x.value_type, x.text, x.number, x.flag, \
                 x.at, x.seen_at \
             from ( \
                 select tenant_id, entity_kind, entity_id, key, 'text' as value_type, \
                     value as text, null::float8 as number, null::text as flag, \
                     null::timestamptz as at, seen_at from analytics.extras_text \
                 union all select tenant_id, entity_kind, entity_id, key, 'number', null, value, \
                     null, null, seen_at from analytics.extras_num \
                 union all select tenant_id, entity_kind, entity_id, key, 'boolean', null, null, \
                     value::text, null, seen_at from analytics.extras_bool \
                 union all select tenant_id, entity_kind, entity_id, key, 'time', null, null, \
                     null, value, seen_at from analytics.extras_time \
             ) x \
             where ($1::text is null or x.key = $1) \
               and case x.entity_kind \
                   when 'device' then exists (select 1 from analytics.devices d \
                       where d.tenant_id = x.tenant_id and d.device_id = x.entity_id \
                         and d.deleted_at is null) \
                   when 'site' then exists (select 1 from analytics.sites s \
                       where s.tenant_id = x.tenant_id and s.site_id = x.entity_id \
                         and s.deleted_at is null) \
                   else exists (select 1 from analytics.sessions s \
                       where s.tenant_id = x.tenant_id and s.session_id = x.entity_id \
                         and s.deleted_at is null) end \
             order by x.entity_kind",
            $order,
            ", x.entity_id collate \"C\"",
            $order,
            ", x.key collate \"C\"",
            $order
        )
    };
}
const EXTRAS: [&str; 2] = [extras_rows!(""), extras_rows!(" desc")];

macro_rules! audit_rows {
    ($order:literal) => {
        concat!(
            "select seq, occurred_at, actor_type, actor_id, action, target, details, \
                 client_addr::text from audit.log \
             where occurred_at >= $1 and occurred_at < $2 \
               and ($3::text is null or starts_with(action, $3)) \
               and ($4::text is null or actor_type = $4) \
             order by seq",
            $order
        )
    };
}
const AUDIT_LOG: [&str; 2] = [audit_rows!(""), audit_rows!(" desc")];

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
    fn a_file_name_holds_nothing_a_header_or_a_shell_would_read() {
        let run = |name: &str| Run {
            id: Uuid::nil(),
            report_id: None,
            report_name: name.to_owned(),
            definition: input(Dataset::Devices),
            requested_by: None,
            run_as: Role::Viewer,
            status: RunStatus::Succeeded,
            rows: 0,
            bytes: 0,
            error: None,
            requested_at: time::macros::datetime!(2026-12-07 10:00 UTC),
            started_at: None,
            finished_at: None,
            expires_at: None,
            schedule_id: None,
            occurrence: None,
            object_key: None,
        };
        assert_eq!(
            run("Weekly power, per site").file_name(),
            "Weekly-power--per-site-2026-12-07.csv"
        );
        assert_eq!(
            run("\"; rm -rf /").file_name(),
            "---rm--rf---2026-12-07.csv"
        );
        assert_eq!(run("ünïcode").file_name(), "-n-code-2026-12-07.csv");
        assert_eq!(run("!!!").file_name(), "report-2026-12-07.csv");
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
