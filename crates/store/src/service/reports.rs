//! The report runner's side of the report tables (service handle).
//!
//! [`claim`] takes the oldest queued run (or a running one whose runner's lease ended) with
//! `for update skip locked` and leases it, so two runners never run one at once; the runner
//! writes the file, reporting [`progress`] (which renews the lease), and [`finish`]es it. A
//! runner that dies mid-run leaves the run to be taken again when its lease ends; after
//! [`MAX_ATTEMPTS`] it fails for good.
//!
//! [`schedule_round`] is the scheduler: it asks for the runs of report schedules as their
//! occurrences come due. A scheduled run's outcome is queued to its channels when it finishes.

use domain::{Role, TenantId, UserId};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::reports::{Dataset, Format, RUN_COLUMNS, ReportInput, Run, RunRow};
use crate::schedule::CronSchedule;
use crate::{Actor, ServiceDb, StoreError, TenantTx};

/// How many times a run is taken before it is failed for good.
pub const MAX_ATTEMPTS: i32 = 3;

/// A run taken by a runner, with its tenant.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub tenant: TenantId,
    pub run: Run,
    pub attempts: i32,
}

/// Takes the oldest run due at `now` and leases it for `lease`; `None` when none is waiting.
/// Runs taken [`MAX_ATTEMPTS`] times whose lease ended are failed on the way.
pub async fn claim(
    database: &ServiceDb,
    now: OffsetDateTime,
    lease: Duration,
) -> Result<Option<Claimed>, StoreError> {
    sqlx::query(
        "update control.report_runs set status = 'failed', finished_at = $1, lease_until = null, \
             error = 'the export stopped before it finished, three times' \
         where status = 'running' and lease_until < $1 and attempts >= $2",
    )
    .bind(now)
    .bind(MAX_ATTEMPTS)
    .execute(database.pool())
    .await?;
    let statement = format!(
        "with next as ( \
             select tenant_id, run_id from control.report_runs \
             where status = 'queued' or (status = 'running' and lease_until < $1) \
             order by requested_at limit 1 for update skip locked) \
         update control.report_runs r set status = 'running', attempts = r.attempts + 1, \
             lease_until = $1 + $2, started_at = coalesce(r.started_at, $1), \
             rows_written = 0, bytes_written = 0 \
         from next where (r.tenant_id, r.run_id) = (next.tenant_id, next.run_id) \
         returning r.tenant_id, r.attempts, {}",
        RUN_COLUMNS
            .split(", ")
            .map(|column| format!("r.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(now)
        .bind(lease)
        .fetch_optional(database.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    use sqlx::{FromRow, Row};
    let tenant: Uuid = row.try_get("tenant_id")?;
    let attempts: i32 = row.try_get("attempts")?;
    let run = RunRow::from_row(&row)?.into_run()?;
    Ok(Some(Claimed {
        tenant: TenantId::from(tenant),
        run,
        attempts,
    }))
}

/// Records how far a run got and renews its lease.
pub async fn progress(
    database: &ServiceDb,
    tenant: TenantId,
    run: Uuid,
    rows: u64,
    bytes: u64,
    lease_until: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "update control.report_runs set rows_written = $3, bytes_written = $4, lease_until = $5 \
         where tenant_id = $1 and run_id = $2 and status = 'running'",
    )
    .bind(tenant.as_uuid())
    .bind(run)
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
    .bind(lease_until)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The file is in the export store under `object_key` until `expires_at`.
    Succeeded {
        rows: u64,
        bytes: u64,
        object_key: String,
        expires_at: OffsetDateTime,
    },
    /// Why, in words safe to show the workspace.
    Failed(String),
}

/// Records how a run ended and, for a scheduled run, queues its delivery to the schedule's
/// channels in the same transaction (the alerts' outbox: one deliverer sends both).
pub async fn finish(
    database: &ServiceDb,
    tenant: TenantId,
    run: &Run,
    now: OffsetDateTime,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let mut tx = database.pool().begin().await?;
    let query = match outcome {
        Outcome::Succeeded {
            rows,
            bytes,
            object_key,
            expires_at,
        } => sqlx::query(
            "update control.report_runs set status = 'succeeded', rows_written = $4, \
                 bytes_written = $5, object_key = $6, expires_at = $7, finished_at = $3, \
                 lease_until = null, error = null \
             where tenant_id = $1 and run_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(run.id)
        .bind(now)
        .bind(i64::try_from(*rows).unwrap_or(i64::MAX))
        .bind(i64::try_from(*bytes).unwrap_or(i64::MAX))
        .bind(object_key)
        .bind(*expires_at),
        Outcome::Failed(reason) => sqlx::query(
            "update control.report_runs set status = 'failed', error = left($4, 500), \
                 finished_at = $3, lease_until = null \
             where tenant_id = $1 and run_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(run.id)
        .bind(now)
        .bind(reason),
    };
    query.execute(&mut *tx).await?;
    queue_deliveries(&mut tx, tenant, run, outcome).await?;
    tx.commit().await?;
    Ok(())
}

/// What a channel is sent about a finished run: the alert outbox's payload (a webhook receives
/// it as it is, signed; mail and Slack put `text` first). Never a row of the file.
pub fn delivery_payload(run: &Run, outcome: &Outcome) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "kind": "report",
        "report": { "id": run.report_id, "name": run.report_name },
        "run": run.id,
        "schedule": run.schedule_id,
        "occurrence": run.occurrence.and_then(|at| at.format(&Rfc3339).ok()),
        "dataset": run.definition.dataset.as_str(),
        "format": run.definition.format.as_str(),
        "file_name": run.file_name(),
    });
    match outcome {
        Outcome::Succeeded {
            rows,
            bytes,
            expires_at,
            ..
        } => {
            payload["status"] = "succeeded".into();
            payload["rows"] = (*rows).into();
            payload["bytes"] = (*bytes).into();
            payload["expires_at"] = expires_at
                .replace_nanosecond(0)
                .unwrap_or(*expires_at)
                .format(&Rfc3339)
                .ok()
                .into();
            payload["download_path"] = format!("/api/v1/report-runs/{}/download", run.id).into();
            payload["text"] = format!(
                "Report \u{201c}{}\u{201d} is ready: {} rows, {} ({})",
                run.report_name,
                rows,
                crate::reports::file_size(*bytes),
                run.definition.format.as_str().to_uppercase()
            )
            .into();
        }
        Outcome::Failed(reason) => {
            payload["status"] = "failed".into();
            payload["error"] = reason.as_str().into();
            payload["text"] = format!(
                "Report \u{201c}{}\u{201d} failed: {reason}",
                run.report_name
            )
            .into();
        }
    }
    payload
}

/// Queues `run`'s outcome to each of its channels that still exists.
async fn queue_deliveries(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    run: &Run,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into pipeline.alert_outbox (tenant_id, channel_id, notice, payload, run_id) \
         select r.tenant_id, c.channel_id, 'report', $3, r.run_id \
         from control.report_runs r \
         cross join lateral unnest(r.deliver_to) with ordinality as d(channel_id, position) \
         join control.alert_channels c \
           on c.tenant_id = r.tenant_id and c.channel_id = d.channel_id \
         where r.tenant_id = $1 and r.run_id = $2 order by d.position",
    )
    .bind(tenant.as_uuid())
    .bind(run.id)
    .bind(delivery_payload(run, outcome))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the scheduler did with one due schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub tenant: TenantId,
    pub schedule: Uuid,
    /// The occurrence it asked a run for (the latest due, however many were missed), if any
    /// was due.
    pub occurrence: Option<OffsetDateTime>,
    /// The run asked for (`None` when another scheduler had already asked for this
    /// occurrence, or none was due).
    pub run: Option<Uuid>,
    /// Why the run could not be asked for (it is recorded as a failed run and delivered).
    pub refused: Option<String>,
    pub next_run_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct DueSchedule {
    tenant_id: Uuid,
    schedule_id: Uuid,
    report_id: Uuid,
    cron: String,
    time_zone: String,
    channels: Vec<Uuid>,
    owner: Option<Uuid>,
    run_as: String,
    since: OffsetDateTime,
    last_occurrence: Option<OffsetDateTime>,
    name: String,
    dataset: String,
    columns: Vec<String>,
    filters: serde_json::Value,
    descending: bool,
    format: String,
}

/// One round of the report scheduler at `now`: takes up to `limit` due schedules (`for update
/// skip locked`: two schedulers never take one at once), asks for the run of each one's latest
/// occurrence after the last it ran (once, however many were missed while no scheduler ran),
/// and moves it to its next occurrence, in one transaction. A second scheduler that reaches the
/// same occurrence anyway finds the run already asked (unique schedule and occurrence).
pub async fn schedule_round(
    database: &ServiceDb,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Scheduled>, StoreError> {
    let mut tx = database.pool().begin().await?;
    let due: Vec<DueSchedule> = sqlx::query_as(
        "select s.tenant_id, s.schedule_id, s.report_id, s.cron, s.time_zone, s.channels, \
                s.owner, s.run_as, s.since, s.last_occurrence, r.name, r.dataset, r.columns, \
                r.filters, r.descending, r.format \
         from control.report_schedules s join control.reports r \
           on r.tenant_id = s.tenant_id and r.report_id = s.report_id \
         where s.enabled and s.next_run_at <= $1 \
         order by s.next_run_at limit $2 for update of s skip locked",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut done = Vec::with_capacity(due.len());
    for schedule in due {
        let tenant = TenantId::from(schedule.tenant_id);
        let parsed = CronSchedule::parse(&schedule.cron, &schedule.time_zone);
        let (occurrence, next) = match &parsed {
            Ok(parsed) => {
                let after = schedule
                    .last_occurrence
                    .unwrap_or(schedule.since)
                    .max(schedule.since);
                (
                    parsed.latest_at_or_before(now).filter(|at| *at > after),
                    parsed.next_after(now),
                )
            }
            Err(_) => (None, None),
        };
        let mut scheduled = Scheduled {
            tenant,
            schedule: schedule.schedule_id,
            occurrence,
            run: None,
            refused: None,
            next_run_at: next,
        };
        if let Some(occurrence) = occurrence {
            let (role, refused) = scheduled_role(&mut tx, &schedule).await?;
            let definition = ReportInput {
                name: schedule.name.clone(),
                dataset: Dataset::parse(&schedule.dataset)
                    .ok_or_else(|| StoreError::Invalid("a stored report does not parse".into()))?,
                columns: schedule.columns.clone(),
                filters: serde_json::from_value(schedule.filters.clone())
                    .map_err(|_| StoreError::Invalid("a stored report does not parse".into()))?,
                descending: schedule.descending,
                format: Format::parse(&schedule.format)
                    .ok_or_else(|| StoreError::Invalid("a stored report does not parse".into()))?,
            };
            let refused = refused.or_else(|| {
                (!role.allows(definition.dataset.permission())).then(|| {
                    format!(
                        "the schedule's owner, now {} {}, may not read this report's dataset",
                        article(role.as_str()),
                        role.as_str()
                    )
                })
            });
            let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "insert into control.report_runs (tenant_id, report_id, report_name, definition, \
                     requested_by, run_as, schedule_id, occurrence, deliver_to, status, error, \
                     finished_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     case when $10::text is null then 'queued' else 'failed' end, $10, \
                     case when $10::text is null then null else $11::timestamptz end) \
                 on conflict (tenant_id, schedule_id, occurrence) do nothing \
                 returning {RUN_COLUMNS}"
            )))
            .bind(schedule.tenant_id)
            .bind(schedule.report_id)
            .bind(&schedule.name)
            .bind(
                serde_json::to_value(&definition)
                    .map_err(|_| StoreError::Invalid("report definition".into()))?,
            )
            .bind(schedule.owner)
            .bind(role.as_str())
            .bind(schedule.schedule_id)
            .bind(occurrence)
            .bind(&schedule.channels)
            .bind(refused.as_deref())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let run = row.into_run()?;
                if let Some(reason) = &refused {
                    queue_deliveries(&mut tx, tenant, &run, &Outcome::Failed(reason.clone()))
                        .await?;
                }
                scheduled.run = Some(run.id);
            }
            scheduled.refused = refused;
        }
        let last_error = match &parsed {
            Err(error) => Some(format!("{}: {error}", error.parameter())),
            Ok(_) => scheduled.refused.clone(),
        };
        sqlx::query(
            "update control.report_schedules set \
                 next_run_at = coalesce($3, next_run_at), \
                 enabled = enabled and $3::timestamptz is not null, \
                 last_occurrence = coalesce($4, last_occurrence), last_error = left($5, 500) \
             where tenant_id = $1 and schedule_id = $2",
        )
        .bind(schedule.tenant_id)
        .bind(schedule.schedule_id)
        .bind(next)
        .bind(occurrence)
        .bind(last_error)
        .execute(&mut *tx)
        .await?;
        done.push(scheduled);
    }
    tx.commit().await?;
    Ok(done)
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The role a schedule's run reads in: its owner's role now (refused, saying why, when the
/// owner has left the workspace), or, saved with a token, the role it was saved in.
async fn scheduled_role(
    tx: &mut sqlx::PgConnection,
    schedule: &DueSchedule,
) -> Result<(Role, Option<String>), StoreError> {
    let saved: Role = schedule
        .run_as
        .parse()
        .map_err(|_| StoreError::Invalid("a stored schedule does not parse".into()))?;
    let Some(owner) = schedule.owner else {
        return Ok((saved, None));
    };
    let role: Option<String> = sqlx::query_scalar(
        "select role from control.members where tenant_id = $1 and user_id = $2",
    )
    .bind(schedule.tenant_id)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?;
    match role.and_then(|role| role.parse::<Role>().ok()) {
        Some(role) => Ok((role, None)),
        None => Ok((
            saved,
            Some(
                "the member who saved this schedule has left the workspace; save the \
                 schedule again to run it in your role"
                    .to_owned(),
            ),
        )),
    }
}

/// The role `user` holds in `tenant` now, if they are still a member: a run asked by someone
/// who has since left is not run, and one asked in a role since lowered runs in the lower.
pub async fn current_role(
    database: &ServiceDb,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = sqlx::query_scalar(
        "select role from control.members where tenant_id = $1 and user_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(database.pool())
    .await?;
    Ok(role.and_then(|role| role.parse().ok()))
}

/// Files whose download expired before `now`: the runner deletes them from the export store,
/// then [`forget_file`]s them.
pub async fn expired_files(
    database: &ServiceDb,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(TenantId, Uuid, String)>, StoreError> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select tenant_id, run_id, object_key from control.report_runs \
         where object_key is not null and expires_at < $1 order by expires_at limit $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, run, key)| (TenantId::from(tenant), run, key))
        .collect())
}

pub async fn forget_file(
    database: &ServiceDb,
    tenant: TenantId,
    run: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "update control.report_runs set object_key = null where tenant_id = $1 and run_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(run)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Appends `report.run` to the tenant's audit log, as the member who asked for the run (or the
/// token that did): what was exported, in which format, how many rows and bytes, or why not.
pub async fn record_export(
    database: &ServiceDb,
    tenant: TenantId,
    run: &Run,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let actor = match (run.requested_by, run.schedule_id) {
        (Some(user), _) => Actor::User(UserId::from(user)),
        (None, Some(_)) => Actor::System("report schedule"),
        (None, None) => Actor::System("api token"),
    };
    let mut details = serde_json::json!({
        "report": run.report_id,
        "dataset": run.definition.dataset.as_str(),
        "format": run.definition.format.as_str(),
        "role": run.run_as.as_str(),
    });
    if let Some(schedule) = run.schedule_id {
        details["schedule"] = schedule.to_string().into();
    }
    match outcome {
        Outcome::Succeeded { rows, bytes, .. } => {
            details["status"] = "succeeded".into();
            details["rows"] = (*rows).into();
            details["bytes"] = (*bytes).into();
        }
        Outcome::Failed(reason) => {
            details["status"] = "failed".into();
            details["error"] = reason.as_str().into();
        }
    }
    let mut tx = TenantTx::begin_service(database, Some(tenant), actor).await?;
    audit::append(
        &mut tx,
        AuditEntry::new("report.run", run.id.to_string()).details(details),
    )
    .await?;
    tx.commit().await
}
