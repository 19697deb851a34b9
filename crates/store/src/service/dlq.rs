//! The dead-letter queue as the pipeline writes and replays it (service handle).

use domain::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dlq::DeadLetter;
use crate::replay::LetterSelection;
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

/// The condition on `pipeline.dlq` that a selection (parameters `$2` to `$7`, each null when
/// not given) puts on letters, after their tenant (`$1`) and `replayed_at is null`.
const SELECTED: &str = "tenant_id = $1 and replayed_at is null \
       and ($2::uuid is null or source_id = $2) \
       and ($3::text is null or reason_code = $3) \
       and ($4::text is null or source_table = $4) \
       and ($5::uuid[] is null or dlq_id = any($5)) \
       and ($6::timestamptz is null or last_failed_at >= $6) \
       and ($7::timestamptz is null or last_failed_at < $7)";

/// The parameters `$2` to `$7` of [`SELECTED`].
type SelectionParameters<'a> = (
    Option<Uuid>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a [Uuid]>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

fn parameters(selection: Option<&LetterSelection>) -> SelectionParameters<'_> {
    let Some(selection) = selection else {
        return (None, None, None, None, None, None);
    };
    let (from, to) = selection.failed_between.unzip();
    (
        Some(*selection.source.as_uuid()),
        selection.reason_code.as_deref(),
        selection.source_table.as_deref(),
        selection.dlq_ids.as_deref(),
        from,
        to,
    )
}

/// How many of a tenant's letters that `selection` chooses (`None`: all of them) wait for a
/// replay.
pub async fn count_pending(
    database: &ServiceDb,
    tenant: TenantId,
    selection: Option<&LetterSelection>,
) -> Result<i64, StoreError> {
    let (source, reason, table, ids, from, to) = parameters(selection);
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from pipeline.dlq where {SELECTED}"
    )))
    .bind(tenant.as_uuid())
    .bind(source)
    .bind(reason)
    .bind(table)
    .bind(ids)
    .bind(from)
    .bind(to)
    .fetch_one(database.pool())
    .await?)
}

/// Up to `limit` of a tenant's dead letters not yet replayed that `selection` chooses (`None`:
/// all of them), oldest first, after `after` (the last one of the previous page) if given.
pub async fn pending(
    database: &ServiceDb,
    tenant: TenantId,
    selection: Option<&LetterSelection>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<PendingLetter>, StoreError> {
    let (after_time, after_id) = after.unzip();
    let (source, reason, table, ids, from, to) = parameters(selection);
    let rows: Vec<(Uuid, OffsetDateTime, String, Option<Vec<u8>>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select dlq_id, created_at, consumer, message from pipeline.dlq \
             where {SELECTED} \
               and ($8::timestamptz is null or (created_at, dlq_id) > ($8, $9)) \
             order by created_at, dlq_id limit $10"
        )))
        .bind(tenant.as_uuid())
        .bind(source)
        .bind(reason)
        .bind(table)
        .bind(ids)
        .bind(from)
        .bind(to)
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

/// One dead letter held for a replay: while it is held, no other replay re-drives it, and it is
/// held only while it has not been replayed. Dropping it without [`LetterClaim::replayed`]
/// leaves the letter as it is (a failed replay counts its attempt through [`record`]).
pub struct LetterClaim {
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    dlq_id: Uuid,
}

/// Holds the letter `dlq_id` of `tenant` for a replay, waiting for another replay that holds it;
/// `None` when it was replayed meanwhile (by that other replay), so it is applied once.
///
/// The hold is a transaction-scoped advisory lock, not a row lock: the consumer the letter is
/// re-driven through may record it again ([`record`] updates the row), which a row lock held
/// here would block forever.
pub async fn claim(
    database: &ServiceDb,
    tenant: TenantId,
    dlq_id: Uuid,
) -> Result<Option<LetterClaim>, StoreError> {
    let mut transaction = database.pool().begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('dlq_replay'), hashtext($1))")
        .bind(dlq_id.to_string())
        .execute(&mut *transaction)
        .await?;
    // Read after the lock is held: a replay that held it before has committed its mark.
    let waiting: Option<bool> = sqlx::query_scalar(
        "select replayed_at is null from pipeline.dlq where tenant_id = $1 and dlq_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(dlq_id)
    .fetch_optional(&mut *transaction)
    .await?;
    if waiting != Some(true) {
        return Ok(None);
    }
    Ok(Some(LetterClaim {
        transaction,
        tenant,
        dlq_id,
    }))
}

impl std::fmt::Debug for LetterClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LetterClaim")
            .field("tenant", &self.tenant)
            .field("dlq_id", &self.dlq_id)
            .finish_non_exhaustive()
    }
}

impl LetterClaim {
    /// Marks the held letter replayed, and lets it go.
    pub async fn replayed(mut self) -> Result<(), StoreError> {
        sqlx::query(
            "update pipeline.dlq set replayed_at = now() where tenant_id = $1 and dlq_id = $2",
        )
        .bind(self.tenant.as_uuid())
        .bind(self.dlq_id)
        .execute(&mut *self.transaction)
        .await?;
        self.transaction.commit().await?;
        Ok(())
    }
}
