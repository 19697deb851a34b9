//! Replay requests: recorded by whoever asks (an intent, audited), carried out by the pipeline.
//!
//! A range replay is bounded before it is recorded ([`check_range`]), and a tenant has at most
//! one bronze replay (a range or a rebuild) pending or running at a time, so no one can make the
//! pipeline re-read years of bronze, or queue rebuilds behind each other. The JSON API and the
//! CLI both go through [`request`], so they refuse alike.

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
