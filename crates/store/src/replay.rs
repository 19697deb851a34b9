//! Replay requests: recorded by whoever asks (an intent, audited), carried out by the pipeline.
//!
//! A range replay is bounded before it is recorded ([`check_range`]), and a tenant has at most
//! one bronze replay (a range or a rebuild) pending or running at a time, so no one can make the
//! pipeline re-read years of bronze, or queue rebuilds behind each other. The JSON API and the
//! CLI both go through [`request`], so they refuse alike.

use domain::{SourceId, TenantId};
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
    /// One source's dead letters that `selection` chooses, each to the consumer that failed it.
    SourceDeadLetters(LetterSelection),
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
    /// A dead-letter replay limited to one source, and within it (every condition given holds)
    /// to a reason code, a table, chosen letters, and latest failures in
    /// `[range_from, range_to)`.
    pub source_id: Option<Uuid>,
    pub reason_code: Option<String>,
    pub source_table: Option<String>,
    pub dlq_ids: Option<Vec<Uuid>>,
    /// How many letters a dead-letter replay found to replay when it started; with
    /// `events_replayed + events_failed`, its progress.
    pub events_total: Option<i64>,
}

/// The columns a [`ReplayRequest`] is read from.
pub(crate) const REQUEST_COLUMNS: &str = "request_id, tenant_id, kind, range_from, range_to, \
     status, events_replayed, events_failed, detail, source_id, reason_code, source_table, \
     dlq_ids, events_total";

/// Which of one source's dead letters a replay re-drives: every condition given must hold, and
/// only letters not replayed yet are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterSelection {
    pub source: SourceId,
    pub reason_code: Option<String>,
    /// `schema.table` of the letters' events.
    pub source_table: Option<String>,
    /// Chosen letters (1 to [`MAX_SELECTED_LETTERS`]).
    pub dlq_ids: Option<Vec<Uuid>>,
    /// Latest failure in `[from, to)`.
    pub failed_between: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl LetterSelection {
    /// Every letter of `source` waiting for a replay.
    pub fn all(source: SourceId) -> Self {
        Self {
            source,
            reason_code: None,
            source_table: None,
            dlq_ids: None,
            failed_between: None,
        }
    }

    /// The selection a recorded request holds (`None`: the request is not one source's
    /// dead-letter replay).
    pub fn of_request(request: &ReplayRequest) -> Option<Self> {
        if request.kind != "dlq" {
            return None;
        }
        Some(Self {
            source: SourceId::from_uuid(request.source_id?),
            reason_code: request.reason_code.clone(),
            source_table: request.source_table.clone(),
            dlq_ids: request.dlq_ids.clone(),
            failed_between: request.range_from.zip(request.range_to),
        })
    }

    /// Refuses a selection the request table would not hold, naming the parameter at fault.
    fn check(&self) -> Result<(), StoreError> {
        let invalid = |parameter, message: &str| {
            Err(StoreError::InvalidParameter {
                parameter,
                message: message.to_owned(),
            })
        };
        if let Some(code) = &self.reason_code
            && !crate::dlq::is_reason_code(code)
        {
            return invalid(
                "reason",
                "a reason code is snake_case, at most 64 characters",
            );
        }
        if let Some(table) = &self.source_table
            && (table.is_empty() || table.chars().count() > 300 || table.contains('\0'))
        {
            return invalid("table", "a table is `schema.table`, at most 300 characters");
        }
        if let Some(ids) = &self.dlq_ids
            && (ids.is_empty() || ids.len() > MAX_SELECTED_LETTERS)
        {
            return invalid("ids", "choose 1 to 1000 letters");
        }
        if let Some((from, to)) = self.failed_between
            && from >= to
        {
            return invalid(
                "to",
                "the window ends before it starts: `to` must be after `from`",
            );
        }
        Ok(())
    }
}

/// The most letters one replay may name.
pub const MAX_SELECTED_LETTERS: usize = 1000;

/// The longest range one replay may cover.
pub const MAX_RANGE: time::Duration = time::Duration::days(7);

/// How far past now a range may end (events still being committed).
pub const MAX_END_AHEAD: time::Duration = time::Duration::minutes(5);

/// Which bound of a range a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBound {
    From,
    To,
}

impl RangeBound {
    /// The bound's name as the API's body and the CLI's flag spell it (`from`, `to`).
    pub fn name(self) -> &'static str {
        match self {
            RangeBound::From => "from",
            RangeBound::To => "to",
        }
    }
}

/// A range replay refused before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RangeRefusal {
    /// `range_inverted`, `range_empty`, `range_in_future`, `range_ends_too_late` or
    /// `range_too_long`.
    pub code: &'static str,
    /// The bound at fault.
    pub bound: RangeBound,
    pub message: String,
}

/// Checks a replay range `[from, to)` against `now`: it must not be inverted or empty, must
/// not start in the future, may end at most [`MAX_END_AHEAD`] after now and may cover at most
/// [`MAX_RANGE`].
pub fn check_range(
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), RangeRefusal> {
    let refuse = |code, bound, message: &str| {
        Err(RangeRefusal {
            code,
            bound,
            message: message.to_owned(),
        })
    };
    if to < from {
        return refuse(
            "range_inverted",
            RangeBound::To,
            "the range ends before it starts: `to` must be after `from`",
        );
    }
    if to == from {
        return refuse(
            "range_empty",
            RangeBound::To,
            "the range is empty: `to` must be after `from`",
        );
    }
    if from > now {
        return refuse(
            "range_in_future",
            RangeBound::From,
            "the range starts in the future: `from` must not be after now",
        );
    }
    if to > now + MAX_END_AHEAD {
        return refuse(
            "range_ends_too_late",
            RangeBound::To,
            "the range ends more than 5 minutes from now",
        );
    }
    if to - from > MAX_RANGE {
        return refuse(
            "range_too_long",
            RangeBound::From,
            "the range covers more than 7 days: replay it in parts of at most 7 days",
        );
    }
    Ok(())
}

/// Why a replay request was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The range is out of bounds ([`check_range`]).
    #[error(transparent)]
    Range(#[from] RangeRefusal),
    /// A bronze replay (a range or a rebuild) of the tenant is already pending or running.
    #[error("a bronze replay or rebuild of this tenant is already under way")]
    UnderWay,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReplayError {
    fn from(error: sqlx::Error) -> Self {
        ReplayError::Store(error.into())
    }
}

/// Records a replay request of the transaction's tenant (audited), after checking a range's
/// bounds and, for a range or a rebuild, that no other bronze replay of the tenant is under way
/// (checked under a per-tenant lock held to the end of the transaction, so two requests at
/// once cannot both pass).
pub async fn request(tx: &mut TenantTx, kind: &ReplayKind) -> Result<Uuid, ReplayError> {
    let tenant = tx
        .tenant()
        .ok_or(StoreError::Forbidden("a replay needs a tenant scope"))?;
    let (kind_name, from, to) = match kind {
        ReplayKind::DeadLetters => ("dlq", None, None),
        ReplayKind::SourceDeadLetters(selection) => {
            selection.check()?;
            crate::dlq::require_source(tx, selection.source).await?;
            if let Some(ids) = &selection.dlq_ids {
                let known: i64 = sqlx::query_scalar(
                    "select count(*) from pipeline.dlq \
                     where tenant_id = $1 and source_id = $2 and dlq_id = any($3)",
                )
                .bind(tenant.as_uuid())
                .bind(selection.source.as_uuid())
                .bind(ids)
                .fetch_one(tx.connection())
                .await?;
                let mut distinct = ids.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if known != distinct.len() as i64 {
                    return Err(StoreError::NotFound("dead letter").into());
                }
            }
            let (from, to) = selection.failed_between.unzip();
            ("dlq", from, to)
        }
        ReplayKind::Rebuild => ("rebuild", None, None),
        ReplayKind::Range { from, to } => {
            check_range(*from, *to, OffsetDateTime::now_utc())?;
            ("range", Some(*from), Some(*to))
        }
    };
    if kind_name != "dlq" {
        sqlx::query("select pg_advisory_xact_lock(hashtext('replay'), hashtext($1))")
            .bind(tenant.to_string())
            .execute(tx.connection())
            .await?;
        let under_way: bool = sqlx::query_scalar(
            "select exists (select 1 from pipeline.replay_requests \
             where tenant_id = $1 and kind in ('range', 'rebuild') \
               and status in ('pending', 'running'))",
        )
        .bind(tenant.as_uuid())
        .fetch_one(tx.connection())
        .await?;
        if under_way {
            return Err(ReplayError::UnderWay);
        }
    }
    let request_id = Uuid::now_v7();
    let requested_by = match tx.actor() {
        crate::Actor::User(user) => Some(*user.as_uuid()),
        _ => None,
    };
    let selection = match kind {
        ReplayKind::SourceDeadLetters(selection) => Some(selection),
        _ => None,
    };
    sqlx::query(
        "insert into pipeline.replay_requests (tenant_id, request_id, kind, requested_by, \
         range_from, range_to, source_id, reason_code, source_table, dlq_ids) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .bind(kind_name)
    .bind(requested_by)
    .bind(from)
    .bind(to)
    .bind(selection.map(|selection| *selection.source.as_uuid()))
    .bind(selection.and_then(|selection| selection.reason_code.as_deref()))
    .bind(selection.and_then(|selection| selection.source_table.as_deref()))
    .bind(selection.and_then(|selection| selection.dlq_ids.as_deref()))
    .execute(tx.connection())
    .await?;
    let mut details = serde_json::json!({
        "kind": kind_name,
        "from": from.map(OffsetDateTime::unix_timestamp),
        "to": to.map(OffsetDateTime::unix_timestamp),
    });
    if let Some(selection) = selection {
        details["source_id"] = serde_json::json!(selection.source);
        details["reason_code"] = serde_json::json!(selection.reason_code);
        details["source_table"] = serde_json::json!(selection.source_table);
        details["letters_chosen"] = serde_json::json!(selection.dlq_ids.as_ref().map(Vec::len));
    }
    audit::append(
        tx,
        AuditEntry::new("replay.request", request_id.to_string()).details(details),
    )
    .await?;
    Ok(request_id)
}

/// A request as its tenant sees it.
pub async fn get(tx: &mut TenantTx, request_id: Uuid) -> Result<ReplayRequest, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {REQUEST_COLUMNS} from pipeline.replay_requests where request_id = $1"
    )))
    .bind(request_id)
    .fetch_optional(tx.connection())
    .await?
    .ok_or(StoreError::NotFound("replay request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_of(kind: &str, selection: &LetterSelection) -> ReplayRequest {
        let (from, to) = selection.failed_between.unzip();
        ReplayRequest {
            request_id: Uuid::now_v7(),
            tenant_id: TenantId::new_random(),
            kind: kind.to_owned(),
            range_from: from,
            range_to: to,
            status: "pending".into(),
            events_replayed: 0,
            events_failed: 0,
            detail: None,
            source_id: Some(*selection.source.as_uuid()),
            reason_code: selection.reason_code.clone(),
            source_table: selection.source_table.clone(),
            dlq_ids: selection.dlq_ids.clone(),
            events_total: None,
        }
    }

    #[test]
    fn a_recorded_selection_reads_back_as_chosen() {
        let now = OffsetDateTime::now_utc();
        let selection = LetterSelection {
            reason_code: Some("missing_key".into()),
            source_table: Some("public.devices".into()),
            dlq_ids: Some(vec![Uuid::now_v7()]),
            failed_between: Some((now - time::Duration::hours(1), now)),
            ..LetterSelection::all(SourceId::new_random())
        };
        assert_eq!(
            LetterSelection::of_request(&request_of("dlq", &selection)),
            Some(selection.clone())
        );
        // A range replay's bounds are not a dead-letter window; a tenant-wide one has no
        // source.
        assert_eq!(
            LetterSelection::of_request(&request_of("range", &selection)),
            None
        );
        let mut tenant_wide = request_of("dlq", &selection);
        tenant_wide.source_id = None;
        assert_eq!(LetterSelection::of_request(&tenant_wide), None);
    }

    #[test]
    fn a_selection_the_table_would_not_hold_is_refused_naming_the_field() {
        let source = SourceId::new_random();
        let now = OffsetDateTime::now_utc();
        assert!(LetterSelection::all(source).check().is_ok());
        for (selection, field) in [
            (
                LetterSelection {
                    reason_code: Some("Missing Key".into()),
                    ..LetterSelection::all(source)
                },
                "reason",
            ),
            (
                LetterSelection {
                    source_table: Some(String::new()),
                    ..LetterSelection::all(source)
                },
                "table",
            ),
            (
                LetterSelection {
                    dlq_ids: Some(Vec::new()),
                    ..LetterSelection::all(source)
                },
                "ids",
            ),
            (
                LetterSelection {
                    dlq_ids: Some((0..=MAX_SELECTED_LETTERS).map(|_| Uuid::now_v7()).collect()),
                    ..LetterSelection::all(source)
                },
                "ids",
            ),
            (
                LetterSelection {
                    failed_between: Some((now, now)),
                    ..LetterSelection::all(source)
                },
                "to",
            ),
        ] {
            match selection.check() {
                Err(StoreError::InvalidParameter { parameter, .. }) => {
                    assert_eq!(parameter, field)
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
