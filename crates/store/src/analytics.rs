//! The one read layer over a tenant's read models (`analytics.*`): metric series, entity lists
//! and details, and the catalogue of metric keys and extras fields. The pages, the JSON API, alert
//! rules and reports all read through it. Every function takes a [`TenantTx`]: row-level security
//! and the caller's role decide what is visible; nothing here filters by tenant on its own.
//!
//! Series of 1-minute and 5-minute steps read `analytics.metrics_min`; 1-hour and 1-day steps
//! read `analytics.metrics_hour`, the hourly rollup the materializer keeps exact in the same
//! transaction as the minutes. Buckets are aligned in UTC.

use time::{Duration, OffsetDateTime};
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// A bucket width of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    Minute,
    FiveMinutes,
    Hour,
    Day,
}

impl Step {
    /// `1m`, `5m`, `1h`, `1d`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "1m" => Step::Minute,
            "5m" => Step::FiveMinutes,
            "1h" => Step::Hour,
            "1d" => Step::Day,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Step::Minute => 60,
            Step::FiveMinutes => 300,
            Step::Hour => 3_600,
            Step::Day => 86_400,
        }
    }

    /// The longest range a series of this step may cover (about 2,000 buckets at most).
    pub fn max_range(self) -> Duration {
        match self {
            Step::Minute => Duration::days(1),
            Step::FiveMinutes => Duration::days(7),
            Step::Hour => Duration::days(90),
            Step::Day => Duration::days(5 * 366),
        }
    }

    /// The step a range is best shown at: the finest whose maximum range holds it.
    pub fn for_range(range: Duration) -> Self {
        [Step::Minute, Step::FiveMinutes, Step::Hour, Step::Day]
            .into_iter()
            .find(|step| range <= step.max_range())
            .unwrap_or(Step::Day)
    }
}

/// How the readings of a bucket become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Aggregation {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// The reading measured last in the bucket (ties: the newest source position).
    Last,
}

impl Aggregation {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "avg" => Aggregation::Avg,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "sum" => Aggregation::Sum,
            "count" => Aggregation::Count,
            "last" => Aggregation::Last,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Last => "last",
        }
    }
}

/// What a series is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GroupBy {
    Site,
    Device,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "site" => GroupBy::Site,
            "device" => GroupBy::Device,
            _ => return None,
        })
    }
}

/// A query parameter that is wrong, and why: the API names `parameter` in its error's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParameter {
    pub parameter: &'static str,
    pub message: String,
}

/// One metric series request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub key: String,
    /// Inclusive; rounded down to the step.
    pub from: OffsetDateTime,
    /// Exclusive.
    pub to: OffsetDateTime,
    pub step: Step,
    pub aggregation: Aggregation,
    /// Readings of this site, of its devices and of its sessions.
    pub site: Option<String>,
    /// Readings of this device and of its sessions.
    pub device: Option<String>,
    pub group_by: Option<GroupBy>,
    /// With `group_by`: the top `limit` groups (1 to 50), ranked by the aggregation over the
    /// whole range, greatest first.
    pub limit: u32,
}

impl SeriesQuery {
    /// Checks everything that can be checked without the database: key length, `from < to`,
    /// the range against [`Step::max_range`] (the message names the largest allowed range),
    /// `limit` between 1 and 50.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        todo!("read layer")
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// The bucket's start.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub value: f64,
    /// Readings in the bucket.
    pub count: i64,
}

/// One line of a chart: the whole selection, or one group of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The site or device id of the group; `None` when not grouped.
    pub group: Option<String>,
    /// The group's name when the read model has one.
    pub label: Option<String>,
    /// Buckets that hold readings, in time order (empty buckets are left out).
    pub points: Vec<Point>,
}

/// The series of `query` (validated first: an invalid query is `StoreError::Invalid`).
pub async fn series(_tx: &mut TenantTx, _query: &SeriesQuery) -> Result<Vec<Series>, StoreError> {
    todo!("read layer")
}

/// The entity kinds with a list and a detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EntityKind {
    Site,
    Device,
    Session,
}

/// The order of an entity list. Every order ends with the id, so paging is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntitySort {
    Id,
    Name,
    /// Devices: `last_seen_at`; sessions: `started_at`; sites: `updated_at`.
    Recent,
    UpdatedAt,
}

/// An entity list request; filters that do not apply to the kind are invalid.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityQuery {
    /// Case-insensitive substring of the id or the name.
    pub search: Option<String>,
    /// Devices and sessions of a site.
    pub site: Option<String>,
    /// Sessions of a device.
    pub device: Option<String>,
    pub status: Option<String>,
    pub sort: Option<EntitySort>,
    pub descending: bool,
    /// 1 to 500; default 50.
    pub limit: Option<u32>,
    /// The opaque `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One site, device or session: its typed columns and its typed extras.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    pub kind: EntityKind,
    pub id: String,
    pub source_id: uuid::Uuid,
    /// The typed columns of the kind (name, site_id, status, ...), by column name.
    pub columns: serde_json::Map<String, serde_json::Value>,
    /// Typed extras by key: string, number, boolean or RFC 3339 time.
    pub extras: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityPage {
    pub items: Vec<Entity>,
    /// Present when there may be more.
    pub next_cursor: Option<String>,
}

/// A page of entities (deleted ones are not listed).
pub async fn entities(
    _tx: &mut TenantTx,
    _kind: EntityKind,
    _query: &EntityQuery,
) -> Result<EntityPage, StoreError> {
    todo!("read layer")
}

/// One entity, `None` when it does not exist, was deleted, or is another tenant's.
pub async fn entity(
    _tx: &mut TenantTx,
    _kind: EntityKind,
    _id: &str,
) -> Result<Option<Entity>, StoreError> {
    todo!("read layer")
}

/// A metric key the tenant has readings of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricKey {
    pub key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub readings: i64,
    /// Distinct entities with readings of it.
    pub entities: i64,
}

/// A typed extras field of an entity kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtrasField {
    pub entity_kind: EntityKind,
    pub key: String,
    /// `text`, `number`, `boolean` or `time`.
    pub value_type: &'static str,
    /// Entities that have it.
    pub entities: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalogue {
    pub metrics: Vec<MetricKey>,
    pub extras: Vec<ExtrasField>,
}

pub async fn catalogue(_tx: &mut TenantTx) -> Result<Catalogue, StoreError> {
    todo!("read layer")
}
