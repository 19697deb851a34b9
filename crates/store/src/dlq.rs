//! The per-tenant dead-letter queue: events valid on the wire that a consumer could not apply,
//! kept with the reason until they are replayed.

use domain::{EventId, SourceId, TenantId};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{StoreError, TenantTx};

/// A dead letter to record.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub tenant: TenantId,
    pub consumer: &'static str,
    pub event_id: EventId,
    pub source: SourceId,
    /// Stable snake_case code, e.g. `bronze_rejected`.
    pub reason_code: &'static str,
    /// Human explanation; never a customer value.
    pub reason: String,
    /// The (masked) event, readable.
    pub event: serde_json::Value,
    /// The exact bus message, which a replay re-drives.
    pub message: Vec<u8>,
}

/// A dead letter as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetterRecord {
    pub dlq_id: Uuid,
    pub consumer: String,
    pub event_id: Uuid,
    pub source_id: Uuid,
    pub reason_code: String,
    pub reason: String,
    pub attempts: i32,
    /// The first failure.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The latest failure.
    #[serde(with = "time::serde::rfc3339")]
    pub last_failed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub replayed_at: Option<OffsetDateTime>,
}

/// The transaction's tenant's dead letters, newest first.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<DeadLetterRecord>, StoreError> {
    Ok(sqlx::query_as(
        "select dlq_id, consumer, event_id, source_id, reason_code, reason, attempts, created_at, \
                last_failed_at, replayed_at from pipeline.dlq \
         order by tenant_id, created_at desc limit $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(tx.connection())
    .await?)
}
