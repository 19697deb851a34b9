//! The per-tenant dead-letter queue: events valid on the wire that a consumer could not apply,
//! kept with the reason until they are replayed.

use domain::{EventId, SourceId, TenantId};
use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Database, StoreError, TenantTx};

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

/// Records a dead letter; a second failure of the same event for the same consumer counts an
/// attempt instead of adding a row. If PostgreSQL cannot hold the event as jsonb (the reason it
/// failed may be exactly that), the readable copy says so and the message bytes keep it whole.
pub async fn record(database: &Database, letter: &DeadLetter) -> Result<(), StoreError> {
    match insert(database, letter, &letter.event).await {
        Err(error)
            if matches!(
                error.sqlstate().as_deref(),
                Some("22P05" | "22P02" | "22021")
            ) =>
        {
            let unreadable = serde_json::json!({
                "unreadable": "the event cannot be stored as jsonb; its bytes are kept for replay"
            });
            insert(database, letter, &unreadable).await
        }
        other => other,
    }
}

async fn insert(
    database: &Database,
    letter: &DeadLetter,
    event: &serde_json::Value,
) -> Result<(), StoreError> {
    // The bus message is acknowledged once this commits: durable whatever the server's default.
    let mut tx = database.service_pool().begin().await?;
    sqlx::query("set local synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into pipeline.dlq (tenant_id, dlq_id, consumer, event_id, source_id, reason_code, \
             reason, event, message) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         on conflict (tenant_id, consumer, event_id) do update \
             set attempts = pipeline.dlq.attempts + 1, replayed_at = null, \
                 reason_code = excluded.reason_code, reason = excluded.reason, \
                 last_failed_at = now()",
    )
    .bind(letter.tenant.as_uuid())
    .bind(Uuid::now_v7())
    .bind(letter.consumer)
    .bind(letter.event_id.as_uuid())
    .bind(letter.source.as_uuid())
    .bind(letter.reason_code)
    .bind(letter.reason.chars().take(2000).collect::<String>())
    .bind(event)
    .bind(&letter.message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A dead letter waiting for replay: which consumer failed it and the bus message.
#[derive(Debug, Clone)]
pub struct PendingLetter {
    pub dlq_id: Uuid,
    pub created_at: OffsetDateTime,
    pub consumer: String,
    /// `None` for a letter recorded without its message: it cannot be replayed.
    pub message: Option<Vec<u8>>,
}

/// Up to `limit` of a tenant's dead letters not yet replayed, oldest first, after `after` (the
/// last one of the previous page) if given.
pub async fn pending(
    database: &Database,
    tenant: TenantId,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<PendingLetter>, StoreError> {
    let (after_time, after_id) = after.unzip();
    let rows: Vec<(Uuid, OffsetDateTime, String, Option<Vec<u8>>)> = sqlx::query_as(
        "select dlq_id, created_at, consumer, message from pipeline.dlq \
         where tenant_id = $1 and replayed_at is null \
           and ($2::timestamptz is null or (created_at, dlq_id) > ($2, $3)) \
         order by created_at, dlq_id limit $4",
    )
    .bind(tenant.as_uuid())
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(database.service_pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(dlq_id, created_at, consumer, message)| PendingLetter {
            dlq_id,
            created_at,
            consumer,
            message,
        })
        .collect())
}

/// Marks dead letters as replayed successfully.
pub async fn mark_replayed(
    database: &Database,
    tenant: TenantId,
    dlq_ids: &[Uuid],
) -> Result<(), StoreError> {
    sqlx::query(
        "update pipeline.dlq set replayed_at = now() where tenant_id = $1 and dlq_id = any($2)",
    )
    .bind(tenant.as_uuid())
    .bind(dlq_ids)
    .execute(database.service_pool())
    .await?;
    Ok(())
}

/// A dead letter as listed.
#[derive(Debug, Clone, Serialize)]
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
    let rows = sqlx::query(
        "select dlq_id, consumer, event_id, source_id, reason_code, reason, attempts, created_at, \
                last_failed_at, replayed_at from pipeline.dlq \
         order by tenant_id, created_at desc limit $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(tx.connection())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetterRecord {
                dlq_id: row.try_get("dlq_id")?,
                consumer: row.try_get("consumer")?,
                event_id: row.try_get("event_id")?,
                source_id: row.try_get("source_id")?,
                reason_code: row.try_get("reason_code")?,
                reason: row.try_get("reason")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
                last_failed_at: row.try_get("last_failed_at")?,
                replayed_at: row.try_get("replayed_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
