//! The report runner's side of the report tables (service handle).
//!
//! [`claim`] takes the oldest queued run (or a running one whose runner's lease ended) with
//! `for update skip locked` and leases it, so two runners never run one at once; the runner
//! writes the file, reporting [`progress`] (which renews the lease), and [`finish`]es it. A
//! runner that dies mid-run leaves the run to be taken again when its lease ends; after
//! [`MAX_ATTEMPTS`] it fails for good.

use domain::{Role, TenantId, UserId};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::reports::{RUN_COLUMNS, Run, RunRow};
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

pub async fn finish(
    database: &ServiceDb,
    tenant: TenantId,
    run: Uuid,
    now: OffsetDateTime,
    outcome: &Outcome,
) -> Result<(), StoreError> {
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
        .bind(run)
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
        .bind(run)
        .bind(now)
        .bind(reason),
    };
    query.execute(database.pool()).await?;
    Ok(())
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
    let actor = match run.requested_by {
        Some(user) => Actor::User(UserId::from(user)),
        None => Actor::System("api token"),
    };
    let mut details = serde_json::json!({
        "report": run.report_id,
        "dataset": run.definition.dataset.as_str(),
        "format": run.definition.format.as_str(),
        "role": run.run_as.as_str(),
    });
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
