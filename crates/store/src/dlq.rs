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

/// Whether `code` is a reason code as the DLQ stores them: snake_case, at most 64 characters.
pub fn is_reason_code(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && code.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The most letters one page of the explorer holds.
pub const MAX_PAGE: i64 = 200;

/// The most groups of one source listed (a group is a reason code and a table).
const MAX_GROUPS: i64 = 1000;

/// The tenant of a transaction that reads dead letters.
fn tenant_of(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("dead letters need a tenant scope"))
}

/// Checks that `source` is one of the transaction's tenant's sources: another tenant's source,
/// or none, is not found.
pub async fn require_source(tx: &mut TenantTx, source: SourceId) -> Result<(), StoreError> {
    let tenant = tenant_of(tx)?;
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from control.sources where tenant_id = $1 and source_id = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .fetch_one(tx.connection())
    .await?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound("source"))
    }
}

/// A source's letters of one reason code and one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LetterGroup {
    pub reason_code: String,
    /// `schema.table` of the events; `None` for letters whose event is not readable.
    pub source_table: Option<String>,
    /// Every letter of the group, replayed or not.
    pub letters: i64,
    /// The letters not replayed yet.
    pub waiting: i64,
    /// The group's first failure.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: OffsetDateTime,
    /// The group's latest failure.
    #[serde(with = "time::serde::rfc3339")]
    pub latest_failed_at: OffsetDateTime,
}

/// A source's letters grouped by reason code and table, the latest failing group first.
pub async fn groups(tx: &mut TenantTx, source: SourceId) -> Result<Vec<LetterGroup>, StoreError> {
    let tenant = tenant_of(tx)?;
    Ok(sqlx::query_as(
        "select reason_code, source_table, count(*) as letters, \
                count(*) filter (where replayed_at is null) as waiting, \
                min(created_at) as first_failed_at, max(last_failed_at) as latest_failed_at \
         from pipeline.dlq where tenant_id = $1 and source_id = $2 \
         group by reason_code, source_table \
         order by latest_failed_at desc, reason_code, source_table nulls last limit $3",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(MAX_GROUPS)
    .fetch_all(tx.connection())
    .await?)
}

/// How many letters of each source of the transaction's tenant wait for a replay (sources
/// without any are left out).
pub async fn waiting_by_source(
    tx: &mut TenantTx,
) -> Result<std::collections::HashMap<SourceId, i64>, StoreError> {
    let tenant = tenant_of(tx)?;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select source_id, count(*) from pipeline.dlq \
         where tenant_id = $1 and replayed_at is null group by source_id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(source, count)| (SourceId::from_uuid(source), count))
        .collect())
}

/// Which of a source's letters the explorer lists; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LetterFilter {
    pub reason_code: Option<String>,
    /// `schema.table`.
    pub source_table: Option<String>,
    /// Latest failure at or after this time.
    pub failed_from: Option<OffsetDateTime>,
    /// Latest failure before this time.
    pub failed_to: Option<OffsetDateTime>,
    /// `Some(true)`: replayed letters only; `Some(false)`: letters waiting for a replay only.
    pub replayed: Option<bool>,
}

/// Where a page of letters ends: the last letter's latest failure and id. Written as text for
/// a `cursor` parameter ([`LetterCursor::encode`]) and read back with [`LetterCursor::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetterCursor {
    pub last_failed_at: OffsetDateTime,
    pub dlq_id: Uuid,
}

impl LetterCursor {
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.last_failed_at.unix_timestamp_nanos() / 1000,
            self.dlq_id.simple()
        )
    }

    /// The cursor `text` holds; an invalid parameter `cursor` when it is not one.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidParameter {
            parameter: "cursor",
            message: "the cursor is not one a page of letters gave".into(),
        };
        let (micros, id) = text.split_once('_').ok_or_else(invalid)?;
        let micros: i128 = micros.parse().map_err(|_| invalid())?;
        let last_failed_at =
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| invalid())?;
        let dlq_id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Self {
            last_failed_at,
            dlq_id,
        })
    }
}

/// A dead letter as the explorer shows it: its failures and its (masked) event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LetterDetail {
    pub dlq_id: Uuid,
    pub consumer: String,
    pub event_id: Uuid,
    pub source_id: Uuid,
    pub reason_code: String,
    pub reason: String,
    /// `schema.table` of the event, when it is readable.
    pub source_table: Option<String>,
    pub attempts: i32,
    /// The first failure.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The latest failure.
    #[serde(with = "time::serde::rfc3339")]
    pub last_failed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub replayed_at: Option<OffsetDateTime>,
    /// The event as the edge published it: masked by the tenant's policy before it left the
    /// edge, so never more than bronze holds.
    pub event: serde_json::Value,
}

/// One page of letters, and where the next one starts (`None` on the last).
#[derive(Debug, Clone)]
pub struct LetterPage {
    pub letters: Vec<LetterDetail>,
    pub next: Option<LetterCursor>,
}

/// A page of `source`'s letters that `filter` keeps, latest failure first, after `after` (the
/// previous page's [`LetterPage::next`]); at most `limit` (1 to [`MAX_PAGE`]).
pub async fn page(
    tx: &mut TenantTx,
    source: SourceId,
    filter: &LetterFilter,
    after: Option<LetterCursor>,
    limit: i64,
) -> Result<LetterPage, StoreError> {
    let tenant = tenant_of(tx)?;
    let limit = limit.clamp(1, MAX_PAGE);
    let mut letters: Vec<LetterDetail> = sqlx::query_as(
        "select dlq_id, consumer, event_id, source_id, reason_code, reason, source_table, attempts, \
                created_at, last_failed_at, replayed_at, event \
         from pipeline.dlq where tenant_id = $1 and source_id = $2 \
           and ($3::text is null or reason_code = $3) \
           and ($4::text is null or source_table = $4) \
           and ($5::timestamptz is null or last_failed_at >= $5) \
           and ($6::timestamptz is null or last_failed_at < $6) \
           and ($7::boolean is null or (replayed_at is not null) = $7) \
           and ($8::timestamptz is null or (last_failed_at, dlq_id) < ($8, $9)) \
         order by last_failed_at desc, dlq_id desc limit $10",
    )
    .bind(tenant.as_uuid())
    .bind(source.as_uuid())
    .bind(filter.reason_code.as_deref())
    .bind(filter.source_table.as_deref())
    .bind(filter.failed_from)
    .bind(filter.failed_to)
    .bind(filter.replayed)
    .bind(after.map(|cursor| cursor.last_failed_at))
    .bind(after.map(|cursor| cursor.dlq_id))
    .bind(limit + 1)
    .fetch_all(tx.connection())
    .await?;
    let next = if letters.len() as i64 > limit {
        letters.truncate(limit as usize);
        letters.last().map(|letter| LetterCursor {
            last_failed_at: letter.last_failed_at,
            dlq_id: letter.dlq_id,
        })
    } else {
        None
    };
    Ok(LetterPage { letters, next })
}

/// One letter of the transaction's tenant; another tenant's is not found.
pub async fn get(tx: &mut TenantTx, dlq_id: Uuid) -> Result<LetterDetail, StoreError> {
    let tenant = tenant_of(tx)?;
    sqlx::query_as(
        "select dlq_id, consumer, event_id, source_id, reason_code, reason, source_table, attempts, \
                created_at, last_failed_at, replayed_at, event \
         from pipeline.dlq where tenant_id = $1 and dlq_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(dlq_id)
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("dead letter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_anything_else_is_refused() {
        let cursor = LetterCursor {
            last_failed_at: OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000)
                .unwrap(),
            dlq_id: Uuid::now_v7(),
        };
        assert_eq!(LetterCursor::parse(&cursor.encode()).unwrap(), cursor);
        for text in [
            "",
            "_",
            "12",
            "x_y",
            "12_not-a-uuid",
            &format!("_{}", cursor.dlq_id),
        ] {
            assert!(
                matches!(
                    LetterCursor::parse(text),
                    Err(StoreError::InvalidParameter {
                        parameter: "cursor",
                        ..
                    })
                ),
                "{text:?}"
            );
        }
    }
}
