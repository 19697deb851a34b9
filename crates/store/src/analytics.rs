//! The one read layer over a tenant's read models (`analytics.*`): metric series, entity lists
//! and details, and the catalogue of metric keys and extras fields. The pages, the JSON API, alert
//! rules and reports all read through it. Every function takes a [`TenantTx`]: row-level security
//! and the caller's role decide what is visible; nothing here filters by tenant on its own.
//!
//! Series of 1-minute and 5-minute steps read `analytics.metrics_min`; 1-hour and 1-day steps
//! read `analytics.metrics_hour`, the hourly rollup the materializer keeps exact in the same
//! transaction as the minutes. Buckets are aligned in UTC. Every statement is constant text
//! with bound parameters; a choice (the table a step reads, the order of a list) picks one of a
//! few constant statements.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::read_model::ColumnType;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::{StoreError, TenantTx};

/// A bucket width of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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

    /// [`Step::max_range`] in words, for an error message.
    fn max_range_words(self) -> &'static str {
        match self {
            Step::Minute => "1 day",
            Step::FiveMinutes => "7 days",
            Step::Hour => "90 days",
            Step::Day => "5 years",
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
#[serde(rename_all = "snake_case")]
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
#[serde(rename_all = "snake_case")]
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

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Site => "site",
            GroupBy::Device => "device",
        }
    }
}

/// A query parameter that is wrong, and why: the API names `parameter` in its error's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParameter {
    pub parameter: &'static str,
    pub message: String,
}

impl InvalidParameter {
    fn new(parameter: &'static str, message: impl Into<String>) -> Self {
        Self {
            parameter,
            message: message.into(),
        }
    }
}

impl From<InvalidParameter> for StoreError {
    fn from(invalid: InvalidParameter) -> Self {
        StoreError::InvalidParameter {
            parameter: invalid.parameter,
            message: invalid.message,
        }
    }
}

/// One metric series request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub key: String,
    /// Inclusive; rounded down to the step.
    pub from: OffsetDateTime,
    /// Exclusive: the last bucket is the one that starts before it, whole.
    pub to: OffsetDateTime,
    pub step: Step,
    pub aggregation: Aggregation,
    /// Readings of this site, of its devices and of its sessions (a session without a site is
    /// its device's site's).
    pub site: Option<String>,
    /// Readings of this device and of its sessions.
    pub device: Option<String>,
    /// Splits by the device (a session's reading: its session's device) or the site (a
    /// device's: its site; a session's: its own, else its device's). Readings without one (a
    /// site's own readings, by device) are left out.
    pub group_by: Option<GroupBy>,
    /// With `group_by`: the top `limit` groups (1 to 50), ranked by the aggregation over the
    /// whole range, greatest first, ties by id (in byte order).
    pub limit: u32,
}

impl SeriesQuery {
    /// Checks everything that can be checked without the database: key length, `from < to`,
    /// the range against [`Step::max_range`] (the message names the largest allowed range),
    /// `limit` between 1 and 50.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        if !(1..=200).contains(&self.key.chars().count()) {
            return Err(InvalidParameter::new(
                "key",
                "a metric key is 1 to 200 characters",
            ));
        }
        if self.from >= self.to {
            return Err(InvalidParameter::new("from", "from must be before to"));
        }
        if self.to - self.from > self.step.max_range() {
            return Err(InvalidParameter::new(
                "to",
                format!(
                    "a {} series covers at most {}; use a larger step or a shorter range",
                    self.step.as_str(),
                    self.step.max_range_words()
                ),
            ));
        }
        if !(1..=50).contains(&self.limit) {
            return Err(InvalidParameter::new("limit", "limit is 1 to 50"));
        }
        Ok(())
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

/// The series of `query` (validated first: an invalid query is
/// [`StoreError::InvalidParameter`]). Ungrouped, it is one series, with no points when nothing
/// matched; grouped, one series per group, the top-ranked first.
pub async fn series(tx: &mut TenantTx, query: &SeriesQuery) -> Result<Vec<Series>, StoreError> {
    let (statement, from, to) = series_statement(query)?;
    let rows: Vec<SeriesRow> = bind_series(sqlx::query_as(statement), query, from, to)
        .fetch_all(tx.connection())
        .await?;
    let mut lines: Vec<Series> = Vec::new();
    for row in rows {
        let point = Point {
            at: row.bucket,
            value: row.value,
            count: row.count,
        };
        match lines.last_mut() {
            Some(line) if line.group == row.group => line.points.push(point),
            _ => lines.push(Series {
                group: row.group,
                label: row.label,
                points: vec![point],
            }),
        }
    }
    if query.group_by.is_none() && lines.is_empty() {
        lines.push(Series {
            group: None,
            label: None,
            points: Vec::new(),
        });
    }
    Ok(lines)
}

/// The statement `query` runs (validated first) and the range of row times it reads.
fn series_statement(
    query: &SeriesQuery,
) -> Result<(&'static str, OffsetDateTime, OffsetDateTime), StoreError> {
    query.validate()?;
    let step = query.step.seconds();
    let from = floor_to(query.from, step, "from")?;
    let to = floor_to(query.to, step, "to")?;
    // The end of the bucket `to` falls in, unless it starts one: rows before it belong to
    // buckets that start before `to`.
    let to = if to == query.to {
        to
    } else {
        to + Duration::seconds(step)
    };
    let minutes = matches!(query.step, Step::Minute | Step::FiveMinutes);
    let statements = match (minutes, Shape::of(query)) {
        (true, Shape::Whole) => &SERIES_OF_MINUTES,
        (false, Shape::Whole) => &SERIES_OF_HOURS,
        (true, Shape::OneDevice) => &DEVICE_SERIES_OF_MINUTES,
        (false, Shape::OneDevice) => &DEVICE_SERIES_OF_HOURS,
        (true, Shape::OneSite) => &SITE_SERIES_OF_MINUTES,
        (false, Shape::OneSite) => &SITE_SERIES_OF_HOURS,
        (true, Shape::Grouped) => &GROUPED_SERIES_OF_MINUTES,
        (false, Shape::Grouped) => &GROUPED_SERIES_OF_HOURS,
        (true, Shape::Filtered) => &FILTERED_SERIES_OF_MINUTES,
        (false, Shape::Filtered) => &FILTERED_SERIES_OF_HOURS,
    };
    let statement = statements[match query.aggregation {
        Aggregation::Avg => 0,
        Aggregation::Min => 1,
        Aggregation::Max => 2,
        Aggregation::Sum => 3,
        Aggregation::Count => 4,
        Aggregation::Last => 5,
    }];
    Ok((statement, from, to))
}

/// Which statement a series takes, by its filters and grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The whole tenant, ungrouped: parameters $1-$4.
    Whole,
    /// One device, ungrouped: $1-$5.
    OneDevice,
    /// One site, ungrouped: $1-$5.
    OneSite,
    /// Grouped, unfiltered: $1-$8.
    Grouped,
    /// Grouped and filtered, or filtered by both a device and a site: $1-$8.
    Filtered,
}

impl Shape {
    fn of(query: &SeriesQuery) -> Self {
        match (&query.device, &query.site, query.group_by) {
            (None, None, None) => Shape::Whole,
            (None, None, Some(_)) => Shape::Grouped,
            (Some(_), None, None) => Shape::OneDevice,
            (None, Some(_), None) => Shape::OneSite,
            _ => Shape::Filtered,
        }
    }
}

/// `statement` (of [`series_statement`] for `query`) with its parameters bound: the key, the
/// range and the step; and for an attributed series the device, the site, the grouping and how
/// many groups.
///
/// A grouped or doubly filtered series is never a prepared statement kept on the connection:
/// its generic plan, made without the parameters, cannot see that a filter is absent or how
/// much of the table the range covers, and has joined every row to the devices by scanning
/// them; planned with its parameters each time, it costs a plan of about a millisecond. The
/// others have one right plan whatever the parameters (the key's rows in the range through the
/// index on key and time; or each entity's through the primary key), which PostgreSQL's
/// generic plan is, so they are kept prepared and not planned again.
fn bind_series<'q, O>(
    statement: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    query: &'q SeriesQuery,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let shape = Shape::of(query);
    let statement = statement
        .persistent(matches!(
            shape,
            Shape::Whole | Shape::OneDevice | Shape::OneSite
        ))
        .bind(&query.key)
        .bind(from)
        .bind(to)
        .bind(query.step.seconds() as f64);
    match shape {
        Shape::Whole => statement,
        Shape::OneDevice => statement.bind(query.device.as_deref()),
        Shape::OneSite => statement.bind(query.site.as_deref()),
        Shape::Grouped | Shape::Filtered => statement
            .bind(query.device.as_deref())
            .bind(query.site.as_deref())
            .bind(query.group_by.map(GroupBy::as_str))
            .bind(i64::from(query.limit)),
    }
}

/// The relations the plan of the statement [`series`] runs for `query` reads, with the same
/// parameters, from `EXPLAIN` (for the dashboard benchmark, which shows which table a series
/// read).
pub(crate) async fn explain_series(
    tx: &mut TenantTx,
    query: &SeriesQuery,
) -> Result<Vec<String>, StoreError> {
    let (statement, from, to) = series_statement(query)?;
    let explain = format!("explain (format json) {statement}");
    let (plan,): (serde_json::Value,) = bind_series(
        sqlx::query_as(sqlx::AssertSqlSafe(explain)),
        query,
        from,
        to,
    )
    .fetch_one(tx.connection())
    .await?;
    fn relations(node: &serde_json::Value, found: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(fields) => {
                if let Some(serde_json::Value::String(name)) = fields.get("Relation Name") {
                    found.push(name.clone());
                }
                fields.values().for_each(|value| relations(value, found));
            }
            serde_json::Value::Array(values) => {
                values.iter().for_each(|value| relations(value, found))
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    relations(&plan, &mut found);
    found.sort();
    found.dedup();
    Ok(found)
}

/// `at` rounded down to a multiple of `seconds` since the Unix epoch (UTC).
fn floor_to(
    at: OffsetDateTime,
    seconds: i64,
    parameter: &'static str,
) -> Result<OffsetDateTime, InvalidParameter> {
    let unix = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(unix - unix.rem_euclid(seconds))
        .map_err(|_| InvalidParameter::new(parameter, "the time is out of range"))
}

/// One bucket of one group: its value by the query's aggregation and its readings.
#[derive(sqlx::FromRow)]
struct SeriesRow {
    #[sqlx(rename = "grp")]
    group: Option<String>,
    label: Option<String>,
    bucket: OffsetDateTime,
    value: f64,
    count: i64,
}

/// The value of a bucket (or a group's score) by each aggregation, over rows with the columns
/// of `metrics_min` and `metrics_hour`. An average is the rounded exact sum over the count, so
/// equal averages compare equal; a sum is the exact sum rounded once; the last value is the
/// newest of the rows' by (measured at, position, reading id in byte order). Each statement
/// computes only its own: an aggregate under a `case` is computed whichever branch is taken.
macro_rules! aggregate {
    (avg) => {
        "sum(coalesce(value_sum_exact, value_sum::text::numeric))::float8 \
         / sum(value_count)::float8"
    };
    (min) => {
        "min(value_min)"
    };
    (max) => {
        "max(value_max)"
    };
    (sum) => {
        "sum(coalesce(value_sum_exact, value_sum::text::numeric))::float8"
    };
    (count) => {
        "sum(value_count)::float8"
    };
    (last) => {
        "(array_agg(last_value order by last_measured_at desc nulls last, last_pos_lsn desc, \
             last_pos_seq desc, last_reading_id collate \"C\" desc nulls last))[1]"
    };
}

/// The bucket of a row time `$time`: $4 the step in seconds, aligned in UTC.
macro_rules! bucket {
    ($($time:literal),+) => {
        concat!(
            "date_bin(make_interval(secs => $4), ",
            $($time,)+
            ", timestamptz '2000-01-01 00:00:00+00')"
        )
    };
}

/// The series of the whole tenant over `$table`, whose bucket time is `$time`, by `$agg`.
/// Parameters: $1 the key, $2-$3 the range of row times, $4 the step in seconds. Reads the
/// key's rows in the range through the index on (tenant, key, time) and nothing else.
macro_rules! series_statement {
    ($table:literal, $time:literal, $agg:ident) => {
        concat!(
            "select null::text as grp, null::text as label, ",
            bucket!($time),
            " as bucket, ",
            aggregate!($agg),
            " as value, sum(value_count)::bigint as count from ",
            $table,
            " where metric_key = $1 and ",
            $time,
            " >= $2 and ",
            $time,
            " < $3 group by bucket order by bucket"
        )
    };
}

/// The series statement over `$table`, whose bucket time is `$time`, by `$agg`, of a device or
/// a site or split by them, over the rows of `$rows` (aliased `m`). Parameters: $1 the key,
/// $2-$3 the range of row times, $4 the step in seconds, $5 the device, $6 the site, $7 the
/// grouping (`device`, `site` or null), $8 how many groups (ranked by the same aggregation over
/// the whole range).
///
/// Each row is attributed to a device (its own, or its session's) and a site (its own, its
/// device's, or its session's, else its session's device's), whether or not they were deleted.
/// Only the columns the grouping and the filters use are kept, so the planner leaves out the
/// joins the others would need. Only the top groups' rows are bucketed, and only their names
/// are looked up. Groups match by `coalesce(grp, '')` (ungrouped, every row's is null), which
/// a hash join can serve where `is not distinct from` cannot.
macro_rules! attributed_series_statement {
    ($rows:expr, $time:literal, $agg:ident) => {
        concat!(
            "with attributed as ( \
                 select m.value_sum, m.value_sum_exact, \
                     m.value_count, m.value_min, m.value_max, m.last_value, m.last_measured_at, \
                     m.last_pos_lsn, m.last_pos_seq, m.last_reading_id, ",
            bucket!("m.", $time),
            " as bucket, \
                     case m.entity_kind when 'device' then m.entity_id \
                         when 'session' then s.device_id end as device_id, \
                     case m.entity_kind when 'site' then m.entity_id \
                         when 'device' then d.site_id \
                         else coalesce(s.site_id, sd.site_id) end as site_id \
                 from ",
            $rows,
            " left join analytics.sessions s on m.entity_kind = 'session' \
                     and s.tenant_id = m.tenant_id and s.session_id = m.entity_id \
                 left join analytics.devices d on m.entity_kind = 'device' \
                     and d.tenant_id = m.tenant_id and d.device_id = m.entity_id \
                 left join analytics.devices sd on sd.tenant_id = s.tenant_id \
                     and sd.device_id = s.device_id \
                 where m.metric_key = $1 and m.",
            $time,
            " >= $2 and m.",
            $time,
            " < $3 \
             ), \
             kept as materialized ( \
                 select a.bucket, a.value_sum, a.value_sum_exact, a.value_count, \
                     a.value_min, a.value_max, a.last_value, a.last_measured_at, \
                     a.last_pos_lsn, a.last_pos_seq, a.last_reading_id, \
                     case $7::text when 'device' then a.device_id \
                         when 'site' then a.site_id end as grp \
                 from attributed a \
                 where ($5::text is null or a.device_id = $5) \
                     and ($6::text is null or a.site_id = $6) \
                     and ($7::text is null or case $7::text when 'device' then a.device_id \
                         when 'site' then a.site_id end is not null) \
             ), \
             ranked as ( \
                 select grp, ",
            aggregate!($agg),
            " as score \
                 from kept group by grp \
                 order by score desc, grp collate \"C\" \
                 limit $8 \
             ), \
             labelled as ( \
                 select r.grp, r.score, coalesce(ld.name, ls.name) as label \
                 from ranked r \
                 left join analytics.devices ld on $7::text = 'device' \
                     and ld.device_id = r.grp and ld.deleted_at is null \
                 left join analytics.sites ls on $7::text = 'site' \
                     and ls.site_id = r.grp and ls.deleted_at is null \
             ), \
             buckets as ( \
                 select grp, bucket, ",
            aggregate!($agg),
            " as value, sum(value_count)::bigint as count \
                 from kept \
                 where coalesce(grp, '') in (select coalesce(grp, '') from ranked) \
                 group by grp, bucket \
             ) \
             select b.grp, r.label, b.bucket, b.value, b.count \
             from buckets b \
             join labelled r on coalesce(r.grp, '') = coalesce(b.grp, '') \
             order by r.score desc, b.grp collate \"C\", b.bucket"
        )
    };
}

/// The entities (`kind`, `id`) whose readings belong to a device ($5) or, without one, to a
/// site ($6), as the attribution of [`attributed_series_statement!`] gives them: the device's
/// own and its sessions'; or the site's own, its devices' (deleted or not), its sessions' and
/// those of the sessions without a site whose device is the site's. Each branch reads through
/// an index (the sessions of a site through migration 0028's).
macro_rules! attributable_entities {
    () => {
        "(select 'device'::text as kind, $5::text as id where $5::text is not null \
          union all select 'session', session_id from analytics.sessions \
              where $5::text is not null and device_id = $5 \
          union all select 'site', $6::text where $5::text is null \
          union all select 'device', device_id from analytics.devices \
              where $5::text is null and site_id = $6 \
          union all select 'session', session_id from analytics.sessions \
              where $5::text is null and site_id = $6 \
          union all select 'session', s.session_id from analytics.sessions s \
              join analytics.devices d on d.tenant_id = s.tenant_id \
                  and d.device_id = s.device_id \
              where $5::text is null and s.site_id is null and d.site_id = $6 \
         ) e"
    };
}

/// The rows of a series of a device ($5) or, without one, of a site ($6), each entity's read
/// through the primary key. With both, the attribution then keeps the device's rows of the
/// site.
macro_rules! filtered_rows {
    ($table:literal) => {
        concat!(
            attributable_entities!(),
            " join ",
            $table,
            " m on m.entity_kind = e.kind and m.entity_id = e.id"
        )
    };
}

/// Whether entities of kind `$kind` hold readings of the key $1 (migration 0028's
/// `metric_kinds`): a condition of no row, so each branch of [`device_entities!`] and
/// [`site_entities!`] is read only when its kind holds the key.
macro_rules! holds_key {
    ($kind:literal) => {
        concat!(
            "exists (select from analytics.metric_kinds \
                 where metric_key = $1 and entity_kind = '",
            $kind,
            "')"
        )
    };
}

/// The entities whose readings are a device's ($5): its own and its sessions'.
macro_rules! device_entities {
    () => {
        concat!(
            "(select 'device'::text as kind, $5::text as id where ",
            holds_key!("device"),
            " union all select 'session', session_id from analytics.sessions \
                 where device_id = $5 and ",
            holds_key!("session"),
            ") e"
        )
    };
}

/// The entities whose readings are a site's ($5): its own, its devices' (deleted or not), its
/// sessions' and those of the sessions without a site whose device is the site's.
macro_rules! site_entities {
    () => {
        concat!(
            "(select 'site'::text as kind, $5::text as id where ",
            holds_key!("site"),
            " union all select 'device', device_id from analytics.devices \
                 where site_id = $5 and ",
            holds_key!("device"),
            " union all select 'session', session_id from analytics.sessions \
                 where site_id = $5 and ",
            holds_key!("session"),
            " union all select 'session', s.session_id from analytics.sessions s \
                 join analytics.devices d on d.tenant_id = s.tenant_id \
                     and d.device_id = s.device_id \
                 where s.site_id is null and d.site_id = $5 and ",
            holds_key!("session"),
            ") e"
        )
    };
}

/// The series statement over `$table`, whose bucket time is `$time`, by `$agg`, of the rows of
/// the entities `$entities` (aliased `e`: [`device_entities!`] or [`site_entities!`]),
/// ungrouped: exactly the rows the attribution of [`attributed_series_statement!`] gives the
/// device or the site, so none is needed, each entity's read through the primary key.
/// Parameters: $1 the key, $2-$3 the range of row times, $4 the step in seconds, $5 the device
/// or the site.
macro_rules! entity_series_statement {
    ($entities:ident, $table:literal, $time:literal, $agg:ident) => {
        concat!(
            "select null::text as grp, null::text as label, ",
            bucket!("m.", $time),
            " as bucket, ",
            aggregate!($agg),
            " as value, sum(value_count)::bigint as count from ",
            $entities!(),
            " join ",
            $table,
            " m on m.entity_kind = e.kind and m.entity_id = e.id \
             where m.metric_key = $1 and m.",
            $time,
            " >= $2 and m.",
            $time,
            " < $3 group by bucket order by bucket"
        )
    };
}

macro_rules! device_series_statement {
    ($table:literal, $time:literal, $agg:ident) => {
        entity_series_statement!(device_entities, $table, $time, $agg)
    };
}

macro_rules! site_series_statement {
    ($table:literal, $time:literal, $agg:ident) => {
        entity_series_statement!(site_entities, $table, $time, $agg)
    };
}

/// The statements of a series by table and by aggregation, in the order avg, min, max, sum,
/// count, last.
macro_rules! series_statements {
    ($statement:ident, $table:expr, $time:literal) => {
        [
            $statement!($table, $time, avg),
            $statement!($table, $time, min),
            $statement!($table, $time, max),
            $statement!($table, $time, sum),
            $statement!($table, $time, count),
            $statement!($table, $time, last),
        ]
    };
}

const SERIES_OF_MINUTES: [&str; 6] =
    series_statements!(series_statement, "analytics.metrics_min", "minute");
const SERIES_OF_HOURS: [&str; 6] =
    series_statements!(series_statement, "analytics.metrics_hour", "hour");
const GROUPED_SERIES_OF_MINUTES: [&str; 6] = series_statements!(
    attributed_series_statement,
    "analytics.metrics_min m",
    "minute"
);
const GROUPED_SERIES_OF_HOURS: [&str; 6] = series_statements!(
    attributed_series_statement,
    "analytics.metrics_hour m",
    "hour"
);
const DEVICE_SERIES_OF_MINUTES: [&str; 6] =
    series_statements!(device_series_statement, "analytics.metrics_min", "minute");
const DEVICE_SERIES_OF_HOURS: [&str; 6] =
    series_statements!(device_series_statement, "analytics.metrics_hour", "hour");
const SITE_SERIES_OF_MINUTES: [&str; 6] =
    series_statements!(site_series_statement, "analytics.metrics_min", "minute");
const SITE_SERIES_OF_HOURS: [&str; 6] =
    series_statements!(site_series_statement, "analytics.metrics_hour", "hour");
const FILTERED_SERIES_OF_MINUTES: [&str; 6] = series_statements!(
    attributed_series_statement,
    filtered_rows!("analytics.metrics_min"),
    "minute"
);
const FILTERED_SERIES_OF_HOURS: [&str; 6] = series_statements!(
    attributed_series_statement,
    filtered_rows!("analytics.metrics_hour"),
    "hour"
);

/// The entity kinds with a list and a detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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

/// The most entities one page holds, and how many when the caller does not say.
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

/// A page of entities (deleted ones are not listed). Filters that do not apply to the kind (a
/// site of sites, a device of devices or sites, a status of sites) and a sort by name of
/// sessions, which have none, are invalid parameters.
pub async fn entities(
    tx: &mut TenantTx,
    kind: EntityKind,
    query: &EntityQuery,
) -> Result<EntityPage, StoreError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(InvalidParameter::new("limit", "limit is 1 to 500").into());
    }
    let not_of = |parameter: &'static str, kinds: &str| {
        InvalidParameter::new(parameter, format!("{parameter} filters {kinds} only"))
    };
    if kind == EntityKind::Site && query.site.is_some() {
        return Err(not_of("site", "devices and sessions").into());
    }
    if kind != EntityKind::Session && query.device.is_some() {
        return Err(not_of("device", "sessions").into());
    }
    if kind == EntityKind::Site && query.status.is_some() {
        return Err(not_of("status", "devices and sessions").into());
    }
    let sort = query.sort.unwrap_or(EntitySort::Id);
    if kind == EntityKind::Session && sort == EntitySort::Name {
        return Err(InvalidParameter::new("sort", "sessions have no name to sort by").into());
    }
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| Cursor::decode(cursor, sort, query.descending))
        .transpose()?;
    let search = query.search.as_deref().map(|search| {
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let unfiltered_by_id = sort == EntitySort::Id
        && search.is_none()
        && query.site.is_none()
        && query.status.is_none()
        && query.device.is_none();
    let mut rows = if unfiltered_by_id {
        id_page(tx, kind, query.descending, after.as_ref(), limit).await?
    } else {
        any_page(tx, kind, query, sort, search, after.as_ref(), limit).await?
    };
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            Cursor {
                sort: sort.as_str().to_owned(),
                descending: query.descending,
                value: last.sort_value.clone(),
                id: last.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(EntityPage {
        items: entities_of(kind, rows),
        next_cursor,
    })
}

/// A page in id order with no search and no filter, by a statement kept prepared; one row
/// more than `limit` when there is a next page.
async fn id_page(
    tx: &mut TenantTx,
    kind: EntityKind,
    descending: bool,
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<EntityRow>, StoreError> {
    let pages = match kind {
        EntityKind::Site => SITES_BY_ID,
        EntityKind::Device => DEVICES_BY_ID,
        EntityKind::Session => SESSIONS_BY_ID,
    };
    let statement = pages[usize::from(descending)][usize::from(after.is_some())];
    let mut page = sqlx::query_as::<_, EntityRow>(statement).bind(EntitySort::Id.as_str());
    if let Some(after) = after {
        page = page.bind(after.id.clone());
    }
    Ok(page
        .bind(i64::from(limit) + 1)
        .fetch_all(tx.connection())
        .await?)
}

/// A page of any shape, by [`entity_page!`]'s statement planned with its parameters.
async fn any_page(
    tx: &mut TenantTx,
    kind: EntityKind,
    query: &EntityQuery,
    sort: EntitySort,
    search: Option<String>,
    after: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<EntityRow>, StoreError> {
    let statement = match (kind, query.descending) {
        (EntityKind::Site, false) => SITES_ASCENDING,
        (EntityKind::Site, true) => SITES_DESCENDING,
        (EntityKind::Device, false) => DEVICES_ASCENDING,
        (EntityKind::Device, true) => DEVICES_DESCENDING,
        (EntityKind::Session, false) => SESSIONS_ASCENDING,
        (EntityKind::Session, true) => SESSIONS_DESCENDING,
    };
    let mut statement = sqlx::query_as::<_, EntityRow>(statement)
        .persistent(false)
        .bind(sort.as_str())
        .bind(search)
        .bind(after.map(|after| after.value.is_none()))
        .bind(after.map(|after| after.value.clone().unwrap_or_default()))
        .bind(after.map(|after| after.id.clone()))
        // One more than the page: whether there is a next page.
        .bind(i64::from(limit) + 1);
    statement = match kind {
        EntityKind::Site => statement,
        EntityKind::Device => statement.bind(&query.site).bind(&query.status),
        EntityKind::Session => statement
            .bind(&query.site)
            .bind(&query.status)
            .bind(&query.device),
    };
    let tenant = tx.tenant().map(|tenant| *tenant.as_uuid());
    Ok(statement.bind(tenant).fetch_all(tx.connection()).await?)
}

/// One entity, `None` when it does not exist, was deleted, or is another tenant's.
pub async fn entity(
    tx: &mut TenantTx,
    kind: EntityKind,
    id: &str,
) -> Result<Option<Entity>, StoreError> {
    let statement = match kind {
        EntityKind::Site => SITE,
        EntityKind::Device => DEVICE,
        EntityKind::Session => SESSION,
    };
    let row: Option<EntityRow> = sqlx::query_as(statement)
        .bind(EntitySort::Id.as_str())
        .bind(id)
        .fetch_optional(tx.connection())
        .await?;
    Ok(row.and_then(|row| entities_of(kind, vec![row]).pop()))
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Site => "site",
            EntityKind::Device => "device",
            EntityKind::Session => "session",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "site" => EntityKind::Site,
            "device" => EntityKind::Device,
            "session" => EntityKind::Session,
            _ => return None,
        })
    }

    fn read_model(self) -> domain::read_model::EntityKind {
        match self {
            EntityKind::Site => domain::read_model::EntityKind::Site,
            EntityKind::Device => domain::read_model::EntityKind::Device,
            EntityKind::Session => domain::read_model::EntityKind::Session,
        }
    }
}

impl EntitySort {
    fn as_str(self) -> &'static str {
        match self {
            EntitySort::Id => "id",
            EntitySort::Name => "name",
            EntitySort::Recent => "recent",
            EntitySort::UpdatedAt => "updated_at",
        }
    }
}

/// Where a page ends: the last row's sort value and id, and the order they belong to (a cursor
/// of another order is refused rather than misread). Opaque to callers: base64url of its JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "s")]
    sort: String,
    #[serde(rename = "d")]
    descending: bool,
    #[serde(rename = "v")]
    value: Option<String>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        // A struct of strings and a boolean always serializes.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str, sort: EntitySort, descending: bool) -> Result<Self, InvalidParameter> {
        let invalid = || {
            InvalidParameter::new(
                "cursor",
                "not a cursor of this list; start from the first page",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.sort != sort.as_str() || cursor.descending != descending {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// An entity's row: its typed columns as JSON (times as the database writes them) and the
/// value it is sorted by.
#[derive(sqlx::FromRow)]
struct EntityRow {
    id: String,
    source_id: uuid::Uuid,
    updated_at: OffsetDateTime,
    columns: serde_json::Value,
    sort_value: Option<String>,
    /// See [`extras_of!`].
    extras: Option<serde_json::Value>,
}

/// The entities of `rows`, their extras (read with them) as the API gives them: strings,
/// numbers, booleans, and times as RFC 3339 in UTC.
fn entities_of(kind: EntityKind, rows: Vec<EntityRow>) -> Vec<Entity> {
    let time_columns: Vec<&str> = kind
        .read_model()
        .typed_columns()
        .iter()
        .filter(|(_, column_type)| *column_type == ColumnType::Time)
        .map(|(name, _)| *name)
        .collect();
    rows.into_iter()
        .map(|row| {
            let mut columns = match row.columns {
                serde_json::Value::Object(columns) => columns,
                _ => serde_json::Map::new(),
            };
            // The database writes times in the session's time zone: the API's are in UTC.
            for name in &time_columns {
                if let Some(serde_json::Value::String(text)) = columns.get(*name)
                    && let Ok(at) = OffsetDateTime::parse(text, &Rfc3339)
                {
                    columns.insert((*name).to_owned(), rfc3339(at));
                }
            }
            let extras = match row.extras {
                Some(serde_json::Value::Object(extras)) => extras
                    .into_iter()
                    .map(|(key, typed)| (key, extra_value(typed)))
                    .collect(),
                _ => serde_json::Map::new(),
            };
            Entity {
                kind,
                extras,
                id: row.id,
                source_id: row.source_id,
                columns,
                updated_at: row.updated_at,
            }
        })
        .collect()
}

/// One extra as [`extras_of!`] gives it, `[type, value]`, as the API gives it. PostgreSQL
/// writes a double that JSON cannot hold (not-a-number, the infinities) as a string: null, as
/// the API writes those; a time in the session's time zone: in UTC.
fn extra_value(typed: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Array(mut pair) = typed else {
        return serde_json::Value::Null;
    };
    let value = pair.pop().unwrap_or(serde_json::Value::Null);
    match (pair.pop(), value) {
        (Some(serde_json::Value::String(kind)), value) => match (kind.as_str(), value) {
            ("text", text @ serde_json::Value::String(_)) => text,
            ("number", serde_json::Value::Number(number)) => {
                number.as_f64().map_or(serde_json::Value::Null, json_number)
            }
            ("boolean", flag @ serde_json::Value::Bool(_)) => flag,
            ("time", serde_json::Value::String(text)) => {
                OffsetDateTime::parse(&text, &Rfc3339).map_or(serde_json::Value::Null, rfc3339)
            }
            _ => serde_json::Value::Null,
        },
        _ => serde_json::Value::Null,
    }
}

/// A double as a JSON number; not-a-number and the infinities, which JSON lacks, as null.
fn json_number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// A time as RFC 3339 text in UTC.
fn rfc3339(at: OffsetDateTime) -> serde_json::Value {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// A time as text that sorts as the time does (in byte order), for a sort value: migration
/// 0028's function, which its index on the sessions' start holds.
macro_rules! sortable_time {
    ($column:literal) => {
        concat!("analytics.sort_time(", $column, ")")
    };
}

/// The live sites with their typed columns and, by $1 (`id`, `name`, `recent`, `updated_at`),
/// the value they sort by (null sorts after every value).
macro_rules! live_sites {
    () => {
        concat!(
            "select tenant_id, site_id as id, source_id, updated_at, name, \
                 jsonb_build_object('name', name, 'region', region, 'timezone', timezone, \
                     'latitude', latitude, 'longitude', longitude) as columns, \
                 case $1::text when 'name' then lower(name) \
                     when 'recent' then ",
            sortable_time!("updated_at"),
            " when 'updated_at' then ",
            sortable_time!("updated_at"),
            " else '' end as sort_value \
             from analytics.sites where deleted_at is null"
        )
    };
}

/// The live devices, as [`live_sites!`].
macro_rules! live_devices {
    () => {
        concat!(
            "select tenant_id, device_id as id, source_id, updated_at, name, site_id, status, \
                 jsonb_build_object('site_id', site_id, 'name', name, 'kind', kind, \
                     'model', model, 'status', status, 'firmware', firmware, \
                     'last_seen_at', last_seen_at) as columns, \
                 case $1::text when 'name' then lower(name) \
                     when 'recent' then ",
            sortable_time!("last_seen_at"),
            " when 'updated_at' then ",
            sortable_time!("updated_at"),
            " else '' end as sort_value \
             from analytics.devices where deleted_at is null"
        )
    };
}

/// The live sessions, as [`live_sites!`]; they have no name.
macro_rules! live_sessions {
    () => {
        concat!(
            "select tenant_id, session_id as id, source_id, updated_at, null::text as name, site_id, \
                 status, device_id, \
                 jsonb_build_object('device_id', device_id, 'site_id', site_id, \
                     'status', status, 'started_at', started_at, 'ended_at', ended_at) \
                     as columns, \
                 case $1::text when 'recent' then ",
            sortable_time!("started_at"),
            " when 'updated_at' then ",
            sortable_time!("updated_at"),
            " else '' end as sort_value \
             from analytics.sessions where deleted_at is null"
        )
    };
}

/// The typed extras of the entity `e.id` of kind `$kind`, as a JSON object of key to
/// `[type, value]` (see [`ExtraValue`]), null without any: a subquery of the row, so a list or
/// a detail is one statement, and one of a page is evaluated for the page's rows only (after
/// the limit).
macro_rules! extras_of {
    ($kind:literal) => {
        concat!(
            "(select jsonb_object_agg(x.key, jsonb_build_array(x.value_type, x.value)) from ( \
                 select key, 'text' as value_type, to_jsonb(value) as value \
                 from analytics.extras_text \
                 where entity_kind = '",
            $kind,
            "' and entity_id = e.id \
                 union all select key, 'number', to_jsonb(value) from analytics.extras_num \
                 where entity_kind = '",
            $kind,
            "' and entity_id = e.id \
                 union all select key, 'boolean', to_jsonb(value) from analytics.extras_bool \
                 where entity_kind = '",
            $kind,
            "' and entity_id = e.id \
                 union all select key, 'time', to_jsonb(value) from analytics.extras_time \
                 where entity_kind = '",
            $kind,
            "' and entity_id = e.id \
             ) x) as extras"
        )
    };
}

/// The columns of an [`EntityRow`] of the entities `e` of kind `$kind`.
macro_rules! entity_row {
    ($kind:literal) => {
        concat!(
            "select id, source_id, updated_at, columns, sort_value, ",
            extras_of!($kind),
            " from ("
        )
    };
}

/// A page of `$kind`: $2 a search pattern (ILIKE, `\` escapes) on the id or the name; after
/// the cursor $3-$5 (sort value is null, sort value, id) in the order `$order`, compared by
/// `$after`; at most $6 rows; then the kind's `$filters`. Sort values and ids compare in byte
/// order, nulls after every value.
///
/// Planned with its parameters (never kept prepared), the sort value of a sort by id is the
/// constant empty text and the order is the id's alone, which the index on the id in byte order
/// (migration 0025) serves, and a cursor of that sort (always an empty sort value) is a seek
/// on it.
macro_rules! entity_page {
    ($kind:literal, $entities:ident, $filters:literal, $after:literal, $order:literal) => {
        concat!(
            entity_row!($kind),
            $entities!(),
            ") e where ($2::text is null or e.id ilike $2 escape '\\' \
                 or e.name ilike $2 escape '\\') ",
            $filters,
            " and ($5::text is null or (e.sort_value is null, coalesce(e.sort_value, '') \
                 collate \"C\", e.id collate \"C\") ",
            $after,
            " ($3::boolean, $4::text collate \"C\", $5::text collate \"C\")) \
             and ($1::text <> 'id' or $5::text is null or e.id collate \"C\" ",
            $after,
            " $5::text collate \"C\") \
             order by e.sort_value is null ",
            $order,
            ", coalesce(e.sort_value, '') collate \"C\" ",
            $order,
            ", e.id collate \"C\" ",
            $order,
            " limit $6"
        )
    };
}

// Each page names its tenant (the last parameter) besides the row-level security that enforces
// it: the policy's tenant is an init plan the planner cannot see into, so it would estimate a
// tenant's rows as an average tenant's, and a tenant with most of a table's rows would have them
// sorted (every sort value computed) where its index gives the first rows in order.

/// Sites: $7 the tenant.
const SITES_ASCENDING: &str = entity_page!(
    "site",
    live_sites,
    "and ($7::uuid is null or e.tenant_id = $7)",
    ">",
    "asc"
);
const SITES_DESCENDING: &str = entity_page!(
    "site",
    live_sites,
    "and ($7::uuid is null or e.tenant_id = $7)",
    "<",
    "desc"
);
/// Devices: $7 the site, $8 the status, $9 the tenant.
const DEVICES_ASCENDING: &str = entity_page!(
    "device",
    live_devices,
    "and ($7::text is null or e.site_id = $7) and ($8::text is null or e.status = $8) \
     and ($9::uuid is null or e.tenant_id = $9)",
    ">",
    "asc"
);
const DEVICES_DESCENDING: &str = entity_page!(
    "device",
    live_devices,
    "and ($7::text is null or e.site_id = $7) and ($8::text is null or e.status = $8) \
     and ($9::uuid is null or e.tenant_id = $9)",
    "<",
    "desc"
);
/// Sessions: $7 the site, $8 the status, $9 the device, $10 the tenant.
const SESSIONS_ASCENDING: &str = entity_page!(
    "session",
    live_sessions,
    "and ($7::text is null or e.site_id = $7) and ($8::text is null or e.status = $8) \
     and ($9::text is null or e.device_id = $9) and ($10::uuid is null or e.tenant_id = $10)",
    ">",
    "asc"
);
const SESSIONS_DESCENDING: &str = entity_page!(
    "session",
    live_sessions,
    "and ($7::text is null or e.site_id = $7) and ($8::text is null or e.status = $8) \
     and ($9::text is null or e.device_id = $9) and ($10::uuid is null or e.tenant_id = $10)",
    "<",
    "desc"
);

/// A page of `$kind` in id order with no search and no filter (the explorer's and the API's
/// default list): $1 the sort (`id`), then the id after which the page starts when `$after` is
/// a comparison (`>` or `<`, else empty: the first page), and at most the last parameter's
/// rows. One plan whatever the parameters (a seek on migration 0025's index on the id in byte
/// order), so these are kept prepared, unlike [`entity_page!`], which serves every shape.
macro_rules! id_page {
    ($kind:literal, $entities:ident, first, $order:literal) => {
        concat!(
            entity_row!($kind),
            $entities!(),
            ") e order by e.id collate \"C\" ",
            $order,
            " limit $2"
        )
    };
    ($kind:literal, $entities:ident, after $after:literal, $order:literal) => {
        concat!(
            entity_row!($kind),
            $entities!(),
            ") e where e.id collate \"C\" ",
            $after,
            " $2::text collate \"C\" order by e.id collate \"C\" ",
            $order,
            " limit $3"
        )
    };
}

/// The pages of [`id_page!`] of each kind: `[ascending, descending]` of `[first, after]`.
macro_rules! id_pages {
    ($kind:literal, $entities:ident) => {
        [
            [
                id_page!($kind, $entities, first, "asc"),
                id_page!($kind, $entities, after ">", "asc"),
            ],
            [
                id_page!($kind, $entities, first, "desc"),
                id_page!($kind, $entities, after "<", "desc"),
            ],
        ]
    };
}

const SITES_BY_ID: [[&str; 2]; 2] = id_pages!("site", live_sites);
const DEVICES_BY_ID: [[&str; 2]; 2] = id_pages!("device", live_devices);
const SESSIONS_BY_ID: [[&str; 2]; 2] = id_pages!("session", live_sessions);

/// One live entity of a kind by id ($2); $1 is the (unused) sort.
const SITE: &str = concat!(entity_row!("site"), live_sites!(), ") e where e.id = $2");
const DEVICE: &str = concat!(
    entity_row!("device"),
    live_devices!(),
    ") e where e.id = $2"
);
const SESSION: &str = concat!(
    entity_row!("session"),
    live_sessions!(),
    ") e where e.id = $2"
);

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

/// The tenant's metric keys and typed extras fields, in key order.
///
/// A key's first and last seen are the first and last minutes with readings of it (each read
/// through the index on key and minute), its readings and entities are summed over its series
/// (`analytics.metric_series`, one row per entity and key, kept exact by triggers on the hourly
/// rollup), so the catalogue never aggregates every hour. An extras field's first and last seen are those of the values entities hold now (see
/// `seen_at`, migration 0022): its first seen is when the longest-unchanged entity that has it
/// was written, not when the field first appeared.
pub async fn catalogue(tx: &mut TenantTx) -> Result<Catalogue, StoreError> {
    let metric_rows: Vec<MetricRow> = sqlx::query_as(CATALOGUE_METRICS)
        .fetch_all(tx.connection())
        .await?;
    // Every hour has minutes (the transaction that writes one writes the other), so a key
    // always has a first and a last minute.
    let metrics = metric_rows
        .into_iter()
        .filter_map(|row| {
            Some(MetricKey {
                key: row.metric_key,
                first_seen: row.first_seen?,
                last_seen: row.last_seen?,
                readings: row.readings,
                entities: row.entities,
            })
        })
        .collect();
    let extras_rows: Vec<(String, String, String, i64, OffsetDateTime, OffsetDateTime)> =
        sqlx::query_as(CATALOGUE_EXTRAS)
            .fetch_all(tx.connection())
            .await?;
    let mut extras = Vec::with_capacity(extras_rows.len());
    for (entity_kind, key, value_type, entities, first_seen, last_seen) in extras_rows {
        let entity_kind = EntityKind::parse(&entity_kind)
            .ok_or_else(|| StoreError::Invalid(format!("no entity kind {entity_kind}")))?;
        let value_type = match value_type.as_str() {
            "text" => "text",
            "number" => "number",
            "boolean" => "boolean",
            "time" => "time",
            other => return Err(StoreError::Invalid(format!("no extras type {other}"))),
        };
        extras.push(ExtrasField {
            entity_kind,
            key,
            value_type,
            entities,
            first_seen,
            last_seen,
        });
    }
    Ok(Catalogue { metrics, extras })
}

/// A metric key of the catalogue as read.
#[derive(sqlx::FromRow)]
struct MetricRow {
    metric_key: String,
    first_seen: Option<OffsetDateTime>,
    last_seen: Option<OffsetDateTime>,
    readings: i64,
    entities: i64,
}

/// Each key with its readings and entities (summed over its series, one row each, which
/// triggers on the hourly rollup keep: migration 0038), and its first and last minute.
const CATALOGUE_METRICS: &str = "with keys as ( \
         select tenant_id, metric_key, sum(readings)::bigint as readings, \
             count(*) as entities \
         from analytics.metric_series group by tenant_id, metric_key \
     ) \
     select k.metric_key, \
         (select min(m.minute) from analytics.metrics_min m \
          where m.tenant_id = k.tenant_id and m.metric_key = k.metric_key) as first_seen, \
         (select max(m.minute) from analytics.metrics_min m \
          where m.tenant_id = k.tenant_id and m.metric_key = k.metric_key) as last_seen, \
         k.readings, k.entities \
     from keys k order by k.metric_key collate \"C\"";

/// Each (entity kind, key, type) of the extras with the entities that have it and when it was
/// written first and last.
const CATALOGUE_EXTRAS: &str = "select entity_kind, key, value_type, count(*) as entities, \
         min(seen_at), max(seen_at) \
     from ( \
         select entity_kind, key, 'text' as value_type, seen_at from analytics.extras_text \
         union all select entity_kind, key, 'number', seen_at from analytics.extras_num \
         union all select entity_kind, key, 'boolean', seen_at from analytics.extras_bool \
         union all select entity_kind, key, 'time', seen_at from analytics.extras_time \
     ) x \
     group by entity_kind, key, value_type \
     order by entity_kind, key collate \"C\", value_type";

/// One change of an entity's source row, as bronze keeps it (masked as the edge stored it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
    /// insert, update, delete or read (a snapshot row).
    pub op: String,
    /// `schema.table` of the source row.
    pub table: String,
    pub lsn: i64,
    pub seq: i32,
    /// The row's image after the change (before it, for a delete), as sent.
    pub image: serde_json::Map<String, serde_json::Value>,
    /// For an update with its old image: the fields whose value changed.
    pub changed: Vec<String>,
}

/// How far back an entity's history is searched: its source table's events of that long are
/// read for the row's key (bronze has no index on keys, so the bound keeps the read to a
/// week's partitions).
pub const HISTORY_DAYS: i32 = 7;

/// The latest `limit` changes, newest first, of the source row an entity was last written
/// from: the event at the entity's position names the source table and the row's key, and
/// that row's events of the last [`HISTORY_DAYS`] follow. Bronze's own grants decide who may
/// read it (owners, admins and operators); another tenant's rows are not visible.
pub async fn entity_history(
    tx: &mut TenantTx,
    kind: EntityKind,
    id: &str,
    limit: i64,
) -> Result<Vec<Change>, StoreError> {
    // The table and id column come from the kind, never from input.
    let (table, id_column) = match kind {
        EntityKind::Site => ("analytics.sites", "site_id"),
        EntityKind::Device => ("analytics.devices", "device_id"),
        EntityKind::Session => ("analytics.sessions", "session_id"),
    };
    let statement = format!(
        "with origin as ( \
             select b.source_id, b.schema_name, b.table_name, b.payload -> 'key' as key \
             from {table} e \
             join bronze.cdc_events b on b.tenant_id = e.tenant_id and b.source_id = e.source_id \
                 and b.lsn = e.pos_lsn and b.seq = e.pos_seq \
             where e.{id_column} = $1 \
             limit 1 \
         ) \
         select b.event_time, b.op, b.schema_name || '.' || b.table_name, b.lsn, b.seq, b.payload \
         from bronze.cdc_events b join origin o on b.source_id = o.source_id \
             and b.schema_name = o.schema_name and b.table_name = o.table_name \
             and b.payload -> 'key' = o.key \
         where b.event_time > now() - make_interval(days => $3) \
         order by b.lsn desc, b.seq desc \
         limit $2"
    );
    let rows: Vec<(OffsetDateTime, String, String, i64, i32, serde_json::Value)> =
        sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .bind(id)
            .bind(limit.clamp(1, 500))
            .bind(HISTORY_DAYS)
            .fetch_all(tx.connection())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(event_time, op, table, lsn, seq, payload)| {
            let image_of = |field: &str| payload.get(field).and_then(|v| v.as_object()).cloned();
            let after = image_of("after");
            let before = image_of("before");
            let changed = match (&before, &after) {
                (Some(before), Some(after)) => after
                    .iter()
                    .filter(|(field, value)| before.get(*field) != Some(value))
                    .map(|(field, _)| field.clone())
                    .collect(),
                _ => Vec::new(),
            };
            Change {
                event_time,
                op,
                table,
                lsn,
                seq,
                image: after
                    .or(before)
                    .or_else(|| image_of("key"))
                    .unwrap_or_default(),
                changed,
            }
        })
        .collect())
}
