//! The bodies of `POST /v1/events`: the batch an agent sends and the answer it gets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use domain::{EventId, Lsn, SourceId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ReasonCode;

/// What a change did. `read` is a row read by an initial snapshot, not by the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    Read,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Insert, Op::Update, Op::Delete, Op::Truncate, Op::Read];

    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
        }
    }

    /// Whether events of this operation identify a row (and so need a non-empty `key`).
    pub const fn has_key(self) -> bool {
        !matches!(self, Op::Truncate)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not one of the five operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op must be one of insert, update, delete, truncate, read")]
pub struct UnknownOp;

impl FromStr for Op {
    type Err = UnknownOp;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == text)
            .ok_or(UnknownOp)
    }
}

/// The body of `POST /v1/events`. Tenant and source come from the client certificate; the
/// optional ids here only let an agent assert which ones it believes it is, and must then
/// match the certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<SourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    pub events: Vec<ChangeEvent>,
    /// Column types given once for the batch's events of a table that carry none of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<TableTypes>,
}

/// The column types of one table, given once in a batch's top-level `types` for every event of
/// that table that has no `types` of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableTypes {
    pub schema: String,
    pub table: String,
    /// Column name → the source's type name, as an event's `types`.
    #[serde(
        serialize_with = "serialize_shared",
        deserialize_with = "deserialize_shared"
    )]
    pub columns: Arc<BTreeMap<String, String>>,
}

/// What an edge that reads a batch's top-level `types` says in its answers
/// ([`BatchResponse::features`]): an agent sends column types once per batch only to such an
/// edge, since an older one would ignore the field and store the events without their types.
pub const FEATURE_BATCH_TYPES: &str = "batch_types";

/// One row change read from a source's log (or from a snapshot, for `read`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// `EventId::derive(source, event_time in Unix milliseconds, lsn, seq)`; the edge checks it.
    pub event_id: EventId,
    pub op: Op,
    pub schema: String,
    pub table: String,
    /// The commit LSN of the transaction, written `X/Y`.
    pub lsn: Lsn,
    /// The position of this change within its transaction.
    pub seq: u32,
    /// The source's transaction id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    /// The commit time, RFC 3339 with an explicit offset.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
    /// The primary-key columns and their values; empty only for `truncate`.
    #[serde(default)]
    pub key: Map<String, Value>,
    /// The row after the change (insert, update, read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Map<String, Value>>,
    /// The row before the change, as much of it as the source logs (update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Map<String, Value>>,
    /// Columns an update left unchanged whose values the source did not send (PostgreSQL does
    /// not log an unchanged value stored out of line): absent from `after`, and a consumer keeps
    /// their previous values. Never a null or a placeholder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// Each column's type at the source (PostgreSQL's name for it, e.g. `integer`, `jsonb`,
    /// `timestamp with time zone`), when the source knows it.
    /// Shared: every event of a table carries the same map.
    #[serde(
        default,
        skip_serializing_if = "is_empty_map",
        serialize_with = "serialize_shared",
        deserialize_with = "deserialize_shared"
    )]
    pub types: Arc<BTreeMap<String, String>>,
}

fn is_empty_map(map: &Arc<BTreeMap<String, String>>) -> bool {
    map.is_empty()
}

fn serialize_shared<S: serde::Serializer>(
    map: &Arc<BTreeMap<String, String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    map.as_ref().serialize(serializer)
}

fn deserialize_shared<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<BTreeMap<String, String>>, D::Error> {
    BTreeMap::deserialize(deserializer).map(Arc::new)
}

impl ChangeEvent {
    /// The commit time in milliseconds since the Unix epoch, as the event id encodes it
    /// (rounded down).
    pub fn commit_unix_millis(&self) -> i64 {
        unix_millis(self.event_time)
    }

    /// The id this event must carry, for events of `source`.
    pub fn expected_event_id(&self, source: SourceId) -> EventId {
        EventId::derive(source, self.commit_unix_millis(), self.lsn, self.seq)
    }
}

/// Milliseconds since the Unix epoch, rounded down (towards the past).
pub(crate) fn unix_millis(time: OffsetDateTime) -> i64 {
    let millis = time.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// What the edge publishes to the bus for each accepted, masked event: the event with the
/// tenant and source taken from the client certificate. Internal to the platform (agents never
/// see it), versioned with this crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub tenant_id: TenantId,
    pub source_id: SourceId,
    pub event: ChangeEvent,
    /// Set when the event is re-driven from bronze by a replay request: consumers apply it like
    /// any other (idempotently, by event id); the bus carries it under a replay message id so
    /// its own duplicate window does not swallow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<uuid::Uuid>,
}

/// The answer to a batch the edge read: one result per event, in the batch's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<EventResult>,
    pub accepted: u32,
    pub duplicates: u32,
    pub rejected: u32,
    /// What this edge reads beyond the first version of the contract (for now
    /// [`FEATURE_BATCH_TYPES`]); absent from the answers of edges that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl BatchResponse {
    /// Whether the edge that answered reads a batch's top-level `types`.
    pub fn reads_batch_types(&self) -> bool {
        self.features
            .iter()
            .any(|feature| feature == FEATURE_BATCH_TYPES)
    }

    /// A response with the counters computed from `results`.
    pub fn from_results(results: Vec<EventResult>) -> Self {
        let count = |status: EventStatus| {
            let n = results.iter().filter(|r| r.status == status).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        Self {
            accepted: count(EventStatus::Accepted),
            duplicates: count(EventStatus::Duplicate),
            rejected: count(EventStatus::Rejected),
            results,
            features: vec![FEATURE_BATCH_TYPES.to_owned()],
        }
    }
}

/// What happened to one event. A `duplicate` was already stored (or appears earlier in the same
/// batch): the agent treats it like `accepted`. A `rejected` event is never retried as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Accepted,
    Duplicate,
    Rejected,
}

/// The outcome of the event at `index` of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    pub index: u32,
    /// The event's id, when it could be read.
    #[serde(default)]
    pub event_id: Option<EventId>,
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ReasonCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl EventResult {
    pub fn accepted(index: u32, event_id: EventId) -> Self {
        Self {
            index,
            event_id: Some(event_id),
            status: EventStatus::Accepted,
            code: None,
            message: None,
        }
    }

    pub fn duplicate(index: u32, event_id: EventId) -> Self {
        Self {
            index,
            event_id: Some(event_id),
            status: EventStatus::Duplicate,
            code: None,
            message: None,
        }
    }

    /// `message` must name the field and the rule, never a value of the event.
    pub fn rejected(
        index: u32,
        event_id: Option<EventId>,
        code: ReasonCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            index,
            event_id,
            status: EventStatus::Rejected,
            code: Some(code),
            message: Some(message.into()),
        }
    }
}
