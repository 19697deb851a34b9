//! The dead-letter queue as the pipeline writes and replays it (service handle).

use domain::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dlq::DeadLetter;
use crate::{ServiceDb, StoreError};

/// Records a dead letter; a second failure of the same event for the same consumer counts an
/// attempt instead of adding a row. If PostgreSQL cannot hold the event as jsonb (the reason it
/// failed may be exactly that), the readable copy says so and the message bytes keep it whole.
pub async fn record(database: &ServiceDb, letter: &DeadLetter) -> Result<(), StoreError> {
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
    database: &ServiceDb,
    letter: &DeadLetter,
    event: &serde_json::Value,
) -> Result<(), StoreError> {
    // The bus message is acknowledged once this commits: durable whatever the server's default.
    let mut tx = database.pool().begin().await?;
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
    database: &ServiceDb,
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
    .fetch_all(database.pool())
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
    database: &ServiceDb,
    tenant: TenantId,
    dlq_ids: &[Uuid],
) -> Result<(), StoreError> {
    sqlx::query(
        "update pipeline.dlq set replayed_at = now() where tenant_id = $1 and dlq_id = any($2)",
    )
    .bind(tenant.as_uuid())
    .bind(dlq_ids)
    .execute(database.pool())
    .await?;
    Ok(())
}
