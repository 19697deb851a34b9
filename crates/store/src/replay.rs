//! Replay requests: recorded by whoever asks (an intent, audited), carried out by the pipeline.

use domain::TenantId;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::{StoreError, TenantTx};

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayKind {
    /// The tenant's dead letters, each to the consumer that failed it.
    DeadLetters,
    /// The tenant's bronze events committed in `[from, to)`, through the downstream consumers.
    Range {
        from: OffsetDateTime,
        to: OffsetDateTime,
    },
    /// Re-materialize the tenant's read models from bronze.
    Rebuild,
}

/// A replay request and its progress.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReplayRequest {
    pub request_id: Uuid,
    #[sqlx(try_from = "Uuid")]
    pub tenant_id: TenantId,
    pub kind: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub range_from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub range_to: Option<OffsetDateTime>,
    /// pending, running, done or failed.
    pub status: String,
    pub events_replayed: i64,
    pub events_failed: i64,
    pub detail: Option<String>,
}

/// Records a replay request of the transaction's tenant (audited).
pub async fn request(tx: &mut TenantTx, kind: &ReplayKind) -> Result<Uuid, StoreError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a replay needs a tenant scope"))?;
    let (kind_name, from, to) = match kind {
        ReplayKind::DeadLetters => ("dlq", None, None),
        ReplayKind::Rebuild => ("rebuild", None, None),
        ReplayKind::Range { from, to } => {
            if from >= to {
                return Err(StoreError::Invalid(
                    "the range must end after it starts".into(),
                ));
            }
            ("range", Some(*from), Some(*to))
        }
    };
    let request_id = Uuid::now_v7();
    let requested_by = match tx.actor() {
        crate::Actor::User(user) => Some(*user.as_uuid()),
        _ => None,
    };
    sqlx::query(
        "insert into pipeline.replay_requests (tenant_id, request_id, kind, requested_by, \
         range_from, range_to) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .bind(kind_name)
    .bind(requested_by)
    .bind(from)
    .bind(to)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("replay.request", request_id.to_string()).details(serde_json::json!({
            "kind": kind_name,
            "from": from.map(OffsetDateTime::unix_timestamp),
            "to": to.map(OffsetDateTime::unix_timestamp),
        })),
    )
    .await?;
    Ok(request_id)
}

/// A request as its tenant sees it.
pub async fn get(tx: &mut TenantTx, request_id: Uuid) -> Result<ReplayRequest, StoreError> {
    sqlx::query_as(
        "select request_id, tenant_id, kind, range_from, range_to, status, events_replayed, \
         events_failed, detail from pipeline.replay_requests where request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("replay request"))
}
