//! Replay requests as the pipeline claims and carries them out (service handle).

use domain::TenantId;
use uuid::Uuid;

use crate::replay::{REQUEST_COLUMNS, ReplayRequest};
use crate::{ServiceDb, StoreError};

/// Claims the oldest pending request of any tenant (pipeline): it becomes `running`, and no
/// other worker gets it. A request still `running` 15 minutes after it started was abandoned
/// (its worker was killed) and is taken up again; replays are idempotent.
pub async fn claim_next(database: &ServiceDb) -> Result<Option<ReplayRequest>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update pipeline.replay_requests set status = 'running', started_at = now() \
         where (tenant_id, request_id) = ( \
             select tenant_id, request_id from pipeline.replay_requests \
             where kind in ('dlq', 'range', 'rebuild') \
               and (status = 'pending' \
                    or (status = 'running' and started_at < now() - interval '15 minutes')) \
             order by requested_at limit 1 for update skip locked) \
         returning {REQUEST_COLUMNS}"
    )))
    .fetch_optional(database.pool())
    .await?)
}

/// Claims one pending request (pipeline), e.g. the one an operator just recorded and runs now.
pub async fn claim(
    database: &ServiceDb,
    tenant: TenantId,
    request_id: Uuid,
) -> Result<Option<ReplayRequest>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update pipeline.replay_requests set status = 'running', started_at = now() \
         where tenant_id = $1 and request_id = $2 and status = 'pending' \
         returning {REQUEST_COLUMNS}"
    )))
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_optional(database.pool())
    .await?)
}

/// Records progress or the end of a request (pipeline).
pub async fn update(
    database: &ServiceDb,
    request: &ReplayRequest,
    status: &str,
    replayed: i64,
    failed: i64,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "update pipeline.replay_requests set status = $3, events_replayed = $4, \
             events_failed = $5, detail = $6, \
             finished_at = case when $3 in ('done', 'failed') then now() end \
         where tenant_id = $1 and request_id = $2",
    )
    .bind(request.tenant_id.as_uuid())
    .bind(request.request_id)
    .bind(status)
    .bind(replayed)
    .bind(failed)
    .bind(detail)
    .execute(database.pool())
    .await?;
    Ok(())
}

/// Records how many letters a dead-letter replay found to replay when it started (pipeline).
pub async fn set_total(
    database: &ServiceDb,
    request: &ReplayRequest,
    total: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update pipeline.replay_requests set events_total = $3 \
         where tenant_id = $1 and request_id = $2",
    )
    .bind(request.tenant_id.as_uuid())
    .bind(request.request_id)
    .bind(total)
    .execute(database.pool())
    .await?;
    Ok(())
}
