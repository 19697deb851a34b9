//! The read layer (`store::analytics`) over read models the materializer wrote: series against a
//! brute-force recomputation from the readings that should exist (late, duplicated, replaced and
//! deleted ones included), the hourly rollup against the minutes, entity lists (filters, sorts,
//! keyset pages, extras, cursors), the catalogue, and tenant isolation through a member's
//! `TenantTx`.

use std::collections::{BTreeMap, BTreeSet};

use domain::{Role, SourceId, TenantId, UserId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use sqlx::PgConnection;
use store::analytics::{
    self, Aggregation, EntityKind, EntityQuery, EntitySort, GroupBy, SeriesQuery, Step,
};
use store::{Database, Scope, StoreError, TenantTx};
use test_support::TestDatabase;
use time::{Duration, OffsetDateTime};

use crate::materializer::{base_time, event, materialize};
use crate::support::tenant;

/// A transaction as a viewer of `tenant`, on the app handle: row-level security applies.
async fn viewer_tx(database: &Database, tenant: TenantId) -> TenantTx {
    TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: UserId::new_random(),
            role: Role::Viewer,
        },
    )
    .await
    .unwrap()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Upserts of `table` (key column `id_column`) at positions from `first_lsn`.
fn upserts(
    tenant: TenantId,
    source: SourceId,
    table: &str,
    id_column: &str,
    first_lsn: u64,
    rows: &[Value],
) -> Vec<protocol::Envelope> {
    rows.iter()
        .enumerate()
        .map(|(index, row)| {
            event(
                tenant,
                source,
                protocol::Op::Insert,
                table,
                first_lsn + index as u64 * 8,
                json!({ id_column: row[id_column] }),
                Some(row.clone()),
                &[],
            )
        })
        .collect()
}

/// The entities the series property runs over: two sites, five devices (one deleted, one
/// without a site), four sessions (one without a device, one without a site, one whose site is
/// not its device's).
async fn materialize_fleet(database: &Database, tenant: TenantId, source: SourceId) {
    let mut envelopes = upserts(
        tenant,
        source,
        "sites",
        "site_id",
        100,
        &[
            json!({ "site_id": "s1", "name": "North" }),
            json!({ "site_id": "s2", "name": "South" }),
        ],
    );
    envelopes.extend(upserts(
        tenant,
        source,
        "devices",
        "device_id",
        200,
        &[
            json!({ "device_id": "d1", "site_id": "s1", "name": "Alpha" }),
            json!({ "device_id": "d2", "site_id": "s1", "name": "Beta" }),
            json!({ "device_id": "d3", "site_id": "s2", "name": "Gamma" }),
            json!({ "device_id": "d4", "site_id": "s2", "name": "Delta" }),
            json!({ "device_id": "d5", "name": "Epsilon" }),
        ],
    ));
    envelopes.extend(upserts(
        tenant,
        source,
        "sessions",
        "session_id",
        300,
        &[
            json!({ "session_id": "x1", "device_id": "d1" }),
            json!({ "session_id": "x2", "device_id": "d3", "site_id": "s2" }),
            json!({ "session_id": "x3", "site_id": "s1" }),
            json!({ "session_id": "x4", "device_id": "d2", "site_id": "s2" }),
        ],
    ));
    envelopes.push(event(
        tenant,
        source,
        protocol::Op::Delete,
        "devices",
        400,
        json!({ "device_id": "d4" }),
        None,
        &[],
    ));
    let outcome = materialize(database, &envelopes).await;
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
}

/// The entities readings are generated for: (kind, id).
const READING_ENTITIES: [(&str, &str); 11] = [
    ("device", "d1"),
    ("device", "d2"),
    ("device", "d3"),
    ("device", "d4"),
    ("device", "d5"),
    ("session", "x1"),
    ("session", "x2"),
    ("session", "x3"),
    ("session", "x4"),
    ("site", "s1"),
    ("site", "s2"),
];

const KEYS: [&str; 2] = ["power_kw", "temp_c"];

/// One generated reading event.
#[derive(Debug, Clone)]
struct ReadingEvent {
    delete: bool,
    reading: u8,
    entity: usize,
    key: usize,
    /// In quarters: sums of quarters are exact in binary, so the brute force's sums are too.
    quarters: i32,
    second: i64,
}

fn reading_event() -> impl Strategy<Value = ReadingEvent> {
    (
        prop_oneof![5 => Just(false), 1 => Just(true)],
        0u8..40,
        0..READING_ENTITIES.len(),
        0..KEYS.len(),
        -400i32..400,
        // Dense in the first two hours, sparse over three days.
        prop_oneof![2 => 0i64..7_200, 1 => 0i64..259_200],
    )
        .prop_map(
            |(delete, reading, entity, key, quarters, second)| ReadingEvent {
                delete,
                reading,
                entity,
                key,
                quarters,
                second,
            },
        )
}

/// The readings' events, reading `n` at position 1000 + 8n.
fn reading_envelopes(
    tenant: TenantId,
    source: SourceId,
    events: &[ReadingEvent],
) -> Vec<protocol::Envelope> {
    events
        .iter()
        .enumerate()
        .map(|(index, reading)| {
            let lsn = 1000 + index as u64 * 8;
            let (kind, id) = READING_ENTITIES[reading.entity];
            let after = (!reading.delete).then(|| {
                json!({
                    "reading_id": reading.reading,
                    format!("{kind}_id"): id,
                    "metric": KEYS[reading.key],
                    "value": f64::from(reading.quarters) / 4.0,
                    "measured_at": rfc3339(base_time() + Duration::seconds(reading.second)),
                })
            });
            // Whole images: an update would merge with the columns of older events, and the
            // reading's entity would not be the newest event's alone.
            let op = if reading.delete {
                protocol::Op::Delete
            } else {
                protocol::Op::Insert
            };
            event(
                tenant,
                source,
                op,
                "readings",
                lsn,
                json!({ "reading_id": reading.reading }),
                after,
                &[],
            )
        })
        .collect()
}

/// A reading that should exist: the newest event of its id, unless that deleted it.
#[derive(Debug, Clone)]
struct Reading {
    id: String,
    kind: &'static str,
    entity: &'static str,
    key: &'static str,
    value: f64,
    measured_at: OffsetDateTime,
    lsn: i64,
}

impl Reading {
    /// The order "last" picks by: measured at, position, reading id in byte order.
    fn last_key(&self) -> (OffsetDateTime, i64, &[u8]) {
        (self.measured_at, self.lsn, self.id.as_bytes())
    }
}

fn expected_readings(source: SourceId, events: &[ReadingEvent]) -> Vec<Reading> {
    let mut newest: BTreeMap<u8, (usize, &ReadingEvent)> = BTreeMap::new();
    for (index, reading) in events.iter().enumerate() {
        newest.insert(reading.reading, (index, reading));
    }
    newest
        .into_values()
        .filter(|(_, reading)| !reading.delete)
        .map(|(index, reading)| {
            let (kind, entity) = READING_ENTITIES[reading.entity];
            Reading {
                id: format!("{source}:{}", reading.reading),
                kind,
                entity,
                key: KEYS[reading.key],
                value: f64::from(reading.quarters) / 4.0,
                measured_at: base_time() + Duration::seconds(reading.second),
                lsn: 1000 + index as i64 * 8,
            }
        })
        .collect()
}

/// What the read models say about the fleet, read as the service: device -> site,
/// session -> (device, site), and the names of live devices and sites.
#[derive(Debug, Default)]
struct Fleet {
    device_site: BTreeMap<String, Option<String>>,
    session: BTreeMap<String, (Option<String>, Option<String>)>,
    names: BTreeMap<(&'static str, String), String>,
}

impl Fleet {
    async fn read(connection: &mut PgConnection, tenant: TenantId) -> Fleet {
        let mut fleet = Fleet::default();
        let devices: Vec<(String, Option<String>, Option<String>, bool)> = sqlx::query_as(
            "select device_id, site_id, name, deleted_at is not null from analytics.devices \
             where tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *connection)
        .await
        .unwrap();
        for (device, site, name, deleted) in devices {
            if let (Some(name), false) = (name, deleted) {
                fleet.names.insert(("device", device.clone()), name);
            }
            fleet.device_site.insert(device, site);
        }
        let sites: Vec<(String, Option<String>, bool)> = sqlx::query_as(
            "select site_id, name, deleted_at is not null from analytics.sites \
             where tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *connection)
        .await
        .unwrap();
        for (site, name, deleted) in sites {
            if let (Some(name), false) = (name, deleted) {
                fleet.names.insert(("site", site), name);
            }
        }
        let sessions: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "select session_id, device_id, site_id from analytics.sessions where tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *connection)
        .await
        .unwrap();
        for (session, device, site) in sessions {
            fleet.session.insert(session, (device, site));
        }
        fleet
    }

    /// A reading's device and site, as the read layer documents them.
    fn attribute(&self, reading: &Reading) -> (Option<String>, Option<String>) {
        match reading.kind {
            "device" => (
                Some(reading.entity.to_owned()),
                self.device_site.get(reading.entity).cloned().flatten(),
            ),
            "session" => {
                let (device, site) = self
                    .session
                    .get(reading.entity)
                    .cloned()
                    .unwrap_or_default();
                let site = site.or_else(|| {
                    device
                        .as_ref()
                        .and_then(|device| self.device_site.get(device).cloned().flatten())
                });
                (device, site)
            }
            _ => (None, Some(reading.entity.to_owned())),
        }
    }
}

/// The aggregates of a set of readings.
#[derive(Debug, Clone)]
struct Aggregate<'a> {
    sum: f64,
    count: i64,
    min: f64,
    max: f64,
    last: &'a Reading,
}

impl<'a> Aggregate<'a> {
    fn new(reading: &'a Reading) -> Self {
        Aggregate {
            sum: reading.value,
            count: 1,
            min: reading.value,
            max: reading.value,
            last: reading,
        }
    }

    fn add(&mut self, reading: &'a Reading) {
        self.sum += reading.value;
        self.count += 1;
        self.min = self.min.min(reading.value);
        self.max = self.max.max(reading.value);
        if reading.last_key() > self.last.last_key() {
            self.last = reading;
        }
    }

    fn value(&self, aggregation: Aggregation) -> f64 {
        match aggregation {
            Aggregation::Avg => self.sum / self.count as f64,
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::Sum => self.sum,
            Aggregation::Count => self.count as f64,
            Aggregation::Last => self.last.value,
        }
    }
}

fn floor(at: OffsetDateTime, step: Step) -> OffsetDateTime {
    let unix = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(unix - unix.rem_euclid(step.seconds())).unwrap()
}

/// A series as the brute force computes it: (group, label, [(bucket, value, count)]).
type Line = (
    Option<String>,
    Option<String>,
    Vec<(OffsetDateTime, f64, i64)>,
);

fn brute_force_series(fleet: &Fleet, readings: &[Reading], query: &SeriesQuery) -> Vec<Line> {
    let from = floor(query.from, query.step);
    let mut groups: BTreeMap<Option<String>, Vec<&Reading>> = BTreeMap::new();
    for reading in readings {
        let (device, site) = fleet.attribute(reading);
        let bucket = floor(reading.measured_at, query.step);
        if reading.key != query.key
            || bucket < from
            || bucket >= query.to
            || query.device.is_some() && device != query.device
            || query.site.is_some() && site != query.site
        {
            continue;
        }
        let group = match query.group_by {
            None => None,
            Some(GroupBy::Device) => match device {
                Some(device) => Some(device),
                None => continue,
            },
            Some(GroupBy::Site) => match site {
                Some(site) => Some(site),
                None => continue,
            },
        };
        groups.entry(group).or_default().push(reading);
    }
    let mut ranked: Vec<(f64, Option<String>, Vec<&Reading>)> = groups
        .into_iter()
        .map(|(group, readings)| {
            let mut whole = Aggregate::new(readings[0]);
            for reading in &readings[1..] {
                whole.add(reading);
            }
            (whole.value(query.aggregation), group, readings)
        })
        .collect();
    // Greatest first, ties by id in byte order (BTreeMap order, kept by the stable sort).
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.truncate(query.limit as usize);
    let lines: Vec<Line> = ranked
        .into_iter()
        .map(|(_, group, readings)| {
            let mut buckets: BTreeMap<OffsetDateTime, Aggregate> = BTreeMap::new();
            for reading in readings {
                let bucket = floor(reading.measured_at, query.step);
                buckets
                    .entry(bucket)
                    .and_modify(|aggregate| aggregate.add(reading))
                    .or_insert_with(|| Aggregate::new(reading));
            }
            let label = group.as_ref().and_then(|group| {
                let kind = if query.group_by == Some(GroupBy::Device) {
                    "device"
                } else {
                    "site"
                };
                fleet.names.get(&(kind, group.clone())).cloned()
            });
            let points = buckets
                .into_iter()
                .map(|(at, aggregate)| (at, aggregate.value(query.aggregation), aggregate.count))
                .collect();
            (group, label, points)
        })
        .collect();
    if lines.is_empty() && query.group_by.is_none() {
        return vec![(None, None, Vec::new())];
    }
    lines
}

/// The filters the property draws from: (device, site).
const FILTERS: [(Option<&str>, Option<&str>); 10] = [
    (None, None),
    (None, None),
    (Some("d1"), None),
    (Some("d2"), None),
    (Some("d4"), None),
    (Some("nope"), None),
    (None, Some("s1")),
    (None, Some("s2")),
    (Some("d1"), Some("s1")),
    (Some("d3"), Some("s1")),
];

const STEPS: [Step; 4] = [Step::Minute, Step::FiveMinutes, Step::Hour, Step::Day];
const AGGREGATIONS: [Aggregation; 6] = [
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::Sum,
    Aggregation::Count,
    Aggregation::Last,
];

fn series_query() -> impl Strategy<Value = SeriesQuery> {
    (
        0..KEYS.len(),
        0..STEPS.len(),
        0..AGGREGATIONS.len(),
        0..FILTERS.len(),
        prop_oneof![
            Just(None),
            Just(Some(GroupBy::Device)),
            Just(Some(GroupBy::Site))
        ],
        1u32..5,
        // From a little before the data to its end, at any second.
        -7_200i64..259_200,
        1i64..=1_000,
    )
        .prop_map(
            |(key, step, aggregation, filter, group_by, limit, from, span)| {
                let step = STEPS[step];
                let from = base_time() + Duration::seconds(from);
                // Up to the step's whole range, but no more than the data's four days.
                let longest = step.max_range().min(Duration::days(4));
                let span: Duration = longest * (span as f64 / 1_000.0);
                let to = from + span.max(Duration::SECOND);
                SeriesQuery {
                    key: KEYS[key].to_owned(),
                    from,
                    to,
                    step,
                    aggregation: AGGREGATIONS[aggregation],
                    device: FILTERS[filter].0.map(str::to_owned),
                    site: FILTERS[filter].1.map(str::to_owned),
                    group_by,
                    limit,
                }
            },
        )
}

/// A line without its values: group, label, and each point's bucket and count.
type Shape = (Option<String>, Option<String>, Vec<(OffsetDateTime, i64)>);

fn assert_series_match(actual: &[analytics::Series], expected: &[Line], query: &SeriesQuery) {
    let shape = |lines: &[Line]| -> Vec<Shape> {
        lines
            .iter()
            .map(|(group, label, points)| {
                (
                    group.clone(),
                    label.clone(),
                    points.iter().map(|(at, _, count)| (*at, *count)).collect(),
                )
            })
            .collect()
    };
    let actual_lines: Vec<Line> = actual
        .iter()
        .map(|series| {
            (
                series.group.clone(),
                series.label.clone(),
                series
                    .points
                    .iter()
                    .map(|point| (point.at, point.value, point.count))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(shape(&actual_lines), shape(expected), "{query:?}");
    for ((_, _, actual), (_, _, expected)) in actual_lines.iter().zip(expected) {
        for ((at, actual, _), (_, expected, _)) in actual.iter().zip(expected) {
            assert!(
                (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "bucket {at}: {actual} where the brute force has {expected}; {query:?}"
            );
        }
    }
}

/// Every hour of `metrics_hour` is its minutes of `metrics_min` summed: (entity kind, entity,
/// key, hour) -> (sum, count, min, max, last value, last position).
async fn assert_hours_roll_up_minutes(connection: &mut PgConnection, tenant: TenantId) {
    type Bucket = (String, String, String, OffsetDateTime);
    type Figures = (f64, i64, f64, f64, f64, i64);
    /// A bucket's key and figures as read.
    type RollupRow = (
        String,
        String,
        String,
        OffsetDateTime,
        f64,
        i64,
        f64,
        f64,
        f64,
        i64,
    );
    let minutes: Vec<RollupRow> = sqlx::query_as(
        "select entity_kind, entity_id, metric_key, minute, value_sum, value_count, \
                 value_min, value_max, last_value, last_pos_lsn \
             from analytics.metrics_min where tenant_id = $1 \
             order by last_measured_at, last_pos_lsn, last_reading_id collate \"C\"",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    let mut expected: BTreeMap<Bucket, Figures> = BTreeMap::new();
    // In the order of their last readings: each minute's last replaces the hour's so far.
    for (kind, entity, key, minute, sum, count, min, max, last, lsn) in minutes {
        let hour = floor(minute, Step::Hour);
        expected
            .entry((kind, entity, key, hour))
            .and_modify(|figures| {
                figures.0 += sum;
                figures.1 += count;
                figures.2 = figures.2.min(min);
                figures.3 = figures.3.max(max);
                figures.4 = last;
                figures.5 = lsn;
            })
            .or_insert((sum, count, min, max, last, lsn));
    }
    let hours: Vec<RollupRow> = sqlx::query_as(
        "select entity_kind, entity_id, metric_key, hour, value_sum, value_count, \
                 value_min, value_max, last_value, last_pos_lsn \
             from analytics.metrics_hour where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    let actual: BTreeMap<Bucket, Figures> = hours
        .into_iter()
        .map(
            |(kind, entity, key, hour, sum, count, min, max, last, lsn)| {
                ((kind, entity, key, hour), (sum, count, min, max, last, lsn))
            },
        )
        .collect();
    assert_eq!(
        actual, expected,
        "metrics_hour is not the rollup of metrics_min"
    );
    // And each series' count (what the catalogue sums) is the readings of its hours.
    let mut counted: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for ((kind, entity, key, _), figures) in &expected {
        *counted
            .entry((kind.clone(), entity.clone(), key.clone()))
            .or_default() += figures.1;
    }
    let series: BTreeMap<(String, String, String), i64> = sqlx::query_as(
        "select entity_kind, entity_id, metric_key, readings from analytics.metric_series \
         where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *connection)
    .await
    .unwrap()
    .into_iter()
    .map(
        |(kind, entity, key, readings): (String, String, String, i64)| {
            ((kind, entity, key), readings)
        },
    )
    .collect();
    assert_eq!(
        series, counted,
        "metric_series is not the count of metrics_hour"
    );
}

#[test]
fn series_equal_a_brute_force_over_the_readings_and_hours_roll_up_minutes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (test_database, database) = runtime.block_on(async {
        let test_database = TestDatabase::new().await;
        let database = test_database.connect().await;
        (test_database, database)
    });
    let strategy = (
        proptest::collection::vec(reading_event(), 1..80),
        any::<u64>(),
        proptest::collection::vec(prop_oneof![3 => 1usize..6, 1 => 6usize..80], 1..6),
        proptest::collection::vec(series_query(), 12),
    )
        .prop_flat_map(|(events, seed, batch_sizes, queries)| {
            let count = events.len();
            (
                Just(events),
                // Each event's copies: at least one, sometimes three.
                proptest::collection::vec(1usize..4, count),
                Just(seed),
                Just(batch_sizes),
                Just(queries),
            )
        });
    let mut runner = TestRunner::new(Config {
        cases: 12,
        ..Config::default()
    });
    runner
        .run(&strategy, |(events, copies, seed, batch_sizes, queries)| {
            runtime.block_on(async {
                let tenant = tenant(&database, "Series").await;
                let source = SourceId::new_random();
                materialize_fleet(&database, tenant, source).await;
                let mut delivered: Vec<protocol::Envelope> = Vec::new();
                for (envelope, copies) in reading_envelopes(tenant, source, &events)
                    .iter()
                    .zip(&copies)
                {
                    for _ in 0..*copies {
                        delivered.push(envelope.clone());
                    }
                }
                // Late and out of order: a deterministic shuffle from the generated seed.
                let mut state = seed | 1;
                for index in (1..delivered.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    delivered.swap(index, (state % (index as u64 + 1)) as usize);
                }
                let mut rest = delivered.as_slice();
                let mut sizes = batch_sizes.iter().cycle();
                while !rest.is_empty() {
                    let size = (*sizes.next().unwrap()).min(rest.len());
                    let (batch, remaining) = rest.split_at(size);
                    let outcome = materialize(&database, batch).await;
                    prop_assert!(outcome.dead_lettered.is_empty(), "{:?}", outcome);
                    rest = remaining;
                }

                let readings = expected_readings(source, &events);
                let mut service = test_database.service().await;
                let mut stored: Vec<(String, String, String, String, f64, i64)> = sqlx::query_as(
                    "select reading_id, entity_kind, entity_id, metric_key, value, pos_lsn \
                     from pipeline.metric_readings where tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .fetch_all(&mut service)
                .await
                .unwrap();
                stored.sort_by(|a, b| a.0.cmp(&b.0));
                let mut modelled: Vec<(String, String, String, String, f64, i64)> = readings
                    .iter()
                    .map(|reading| {
                        (
                            reading.id.clone(),
                            reading.kind.to_owned(),
                            reading.entity.to_owned(),
                            reading.key.to_owned(),
                            reading.value,
                            reading.lsn,
                        )
                    })
                    .collect();
                modelled.sort_by(|a, b| a.0.cmp(&b.0));
                let missing: Vec<_> = modelled
                    .iter()
                    .filter(|row| !stored.contains(row))
                    .collect();
                let unexpected: Vec<_> = stored
                    .iter()
                    .filter(|row| !modelled.contains(row))
                    .collect();
                prop_assert!(
                    missing.is_empty() && unexpected.is_empty(),
                    "the model of the readings: missing {:?}, unexpected {:?}",
                    missing,
                    unexpected
                );
                assert_hours_roll_up_minutes(&mut service, tenant).await;
                let fleet = Fleet::read(&mut service, tenant).await;

                let mut tx = viewer_tx(&database, tenant).await;
                for query in &queries {
                    let actual = analytics::series(&mut tx, query).await.unwrap();
                    let expected = brute_force_series(&fleet, &readings, query);
                    assert_series_match(&actual, &expected, query);
                }
                tx.rollback().await.unwrap();
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn series_queries_are_validated() {
    let query = SeriesQuery {
        key: "power_kw".into(),
        from: base_time(),
        to: base_time() + Duration::hours(1),
        step: Step::Minute,
        aggregation: Aggregation::Avg,
        site: None,
        device: None,
        group_by: None,
        limit: 10,
    };
    assert_eq!(query.validate(), Ok(()));
    let refused = |query: SeriesQuery| query.validate().unwrap_err();
    assert_eq!(
        refused(SeriesQuery {
            key: String::new(),
            ..query.clone()
        })
        .parameter,
        "key"
    );
    assert_eq!(
        refused(SeriesQuery {
            key: "k".repeat(201),
            ..query.clone()
        })
        .parameter,
        "key"
    );
    assert_eq!(
        refused(SeriesQuery {
            to: query.from,
            ..query.clone()
        })
        .parameter,
        "from"
    );
    let too_long = refused(SeriesQuery {
        to: query.from + Duration::days(1) + Duration::SECOND,
        ..query.clone()
    });
    assert_eq!(
        (too_long.parameter, too_long.message.as_str()),
        (
            "to",
            "a 1m series covers at most 1 day; use a larger step or a shorter range"
        )
    );
    // Exactly the longest range is allowed.
    let longest = SeriesQuery {
        to: query.from + Duration::days(7),
        step: Step::FiveMinutes,
        ..query.clone()
    };
    assert_eq!(longest.validate(), Ok(()));
    for limit in [0, 51] {
        assert_eq!(
            refused(SeriesQuery {
                limit,
                ..query.clone()
            })
            .parameter,
            "limit"
        );
    }
}

/// The entities fixture: sites, devices with extras of every type, sessions.
async fn materialize_entities(database: &Database, tenant: TenantId, source: SourceId) {
    let mut envelopes = upserts(
        tenant,
        source,
        "sites",
        "site_id",
        100,
        &[
            json!({ "site_id": "s1", "name": "north", "region": "eu", "latitude": 48.5 }),
            json!({ "site_id": "s2", "name": "South" }),
            json!({ "site_id": "s3" }),
        ],
    );
    envelopes.extend(upserts(
        tenant,
        source,
        "devices",
        "device_id",
        200,
        &[
            json!({ "device_id": "d1", "site_id": "s1", "name": "Charger 1", "status": "online",
                    "last_seen_at": "2026-11-20T09:00:00Z", "colour": "red", "capacity": 22.5,
                    "public": true, "installed": "2025-03-01T08:30:00Z" }),
            json!({ "device_id": "d2", "site_id": "s1", "name": "charger_2", "status": "offline",
                    "last_seen_at": "2026-11-20T11:00:00Z", "colour": "blue" }),
            json!({ "device_id": "d3", "site_id": "s2", "name": "100% Charger",
                    "status": "online" }),
            json!({ "device_id": "d4", "site_id": "s2", "status": "online",
                    "last_seen_at": "2026-11-19T23:00:00Z" }),
            json!({ "device_id": "d5", "name": "Zeta", "status": "online", "colour": "red",
                    "last_seen_at": "2026-11-20T10:00:00Z" }),
            json!({ "device_id": "d6", "site_id": "s1", "name": "Gone", "status": "online" }),
            json!({ "device_id": "d7", "site_id": "s2", "name": "charger 7", "capacity": 50 }),
        ],
    ));
    envelopes.extend(upserts(
        tenant,
        source,
        "sessions",
        "session_id",
        300,
        &[
            json!({ "session_id": "x1", "device_id": "d1", "site_id": "s1", "status": "open",
                    "started_at": "2026-11-20T08:00:00Z" }),
            json!({ "session_id": "x2", "device_id": "d1", "site_id": "s1", "status": "closed",
                    "started_at": "2026-11-19T08:00:00Z", "kwh": 12 }),
            json!({ "session_id": "x3", "device_id": "d3", "site_id": "s2", "status": "open" }),
        ],
    ));
    envelopes.push(event(
        tenant,
        source,
        protocol::Op::Delete,
        "devices",
        400,
        json!({ "device_id": "d6" }),
        None,
        &[],
    ));
    let outcome = materialize(database, &envelopes).await;
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
}

/// Every page of a list, `page` rows at a time: the ids in order, and the items.
async fn all_pages(
    tx: &mut TenantTx,
    kind: EntityKind,
    query: &EntityQuery,
    page: u32,
) -> Vec<analytics::Entity> {
    let mut items = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let result = analytics::entities(
            tx,
            kind,
            &EntityQuery {
                limit: Some(page),
                cursor: cursor.clone(),
                ..query.clone()
            },
        )
        .await
        .unwrap();
        assert!(result.items.len() <= page as usize);
        items.extend(result.items);
        match result.next_cursor {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
    panic!("100 pages of a list of a few rows: the cursor does not advance");
}

fn ids(items: &[analytics::Entity]) -> Vec<&str> {
    items.iter().map(|item| item.id.as_str()).collect()
}

fn invalid_parameter(result: Result<analytics::EntityPage, StoreError>) -> &'static str {
    match result {
        Err(StoreError::InvalidParameter { parameter, .. }) => parameter,
        other => panic!("expected an invalid parameter, got {other:?}"),
    }
}

#[tokio::test]
async fn entity_lists_filter_sort_and_page_through_every_row_once() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    materialize_entities(&database, acme, source).await;
    let mut tx = viewer_tx(&database, acme).await;

    // Each order, both directions, pages of 1, 2 and 50: every live row exactly once, in order.
    let orders = [
        (EntitySort::Id, ["d1", "d2", "d3", "d4", "d5", "d7"]),
        // By lower-cased name in byte order, nameless last.
        (EntitySort::Name, ["d3", "d1", "d7", "d2", "d5", "d4"]),
        // By last seen, never seen last.
        (EntitySort::Recent, ["d4", "d1", "d5", "d2", "d3", "d7"]),
        // One transaction wrote them all: ties, by id.
        (EntitySort::UpdatedAt, ["d1", "d2", "d3", "d4", "d5", "d7"]),
    ];
    for (sort, expected) in orders {
        for page in [1, 2, 50] {
            let ascending = all_pages(
                &mut tx,
                EntityKind::Device,
                &EntityQuery {
                    sort: Some(sort),
                    ..EntityQuery::default()
                },
                page,
            )
            .await;
            let descending = all_pages(
                &mut tx,
                EntityKind::Device,
                &EntityQuery {
                    sort: Some(sort),
                    descending: true,
                    ..EntityQuery::default()
                },
                page,
            )
            .await;
            let mut reversed = ids(&descending);
            reversed.reverse();
            assert_eq!(ids(&ascending), reversed, "{sort:?}, pages of {page}");
            assert_eq!(ids(&ascending), expected, "{sort:?}, pages of {page}");
        }
    }

    // Filters, and a search whose % and _ are literal.
    let list = async |tx: &mut TenantTx, kind: EntityKind, query: EntityQuery| {
        ids(&all_pages(tx, kind, &query, 2).await)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for (query, expected) in [
        (
            EntityQuery {
                site: Some("s1".into()),
                ..EntityQuery::default()
            },
            vec!["d1", "d2"],
        ),
        (
            EntityQuery {
                status: Some("online".into()),
                site: Some("s2".into()),
                ..EntityQuery::default()
            },
            vec!["d3", "d4"],
        ),
        (
            EntityQuery {
                search: Some("CHARGER".into()),
                ..EntityQuery::default()
            },
            vec!["d1", "d2", "d3", "d7"],
        ),
        (
            EntityQuery {
                search: Some("%".into()),
                ..EntityQuery::default()
            },
            vec!["d3"],
        ),
        (
            EntityQuery {
                search: Some("_".into()),
                ..EntityQuery::default()
            },
            vec!["d2"],
        ),
        (
            EntityQuery {
                search: Some("d5".into()),
                ..EntityQuery::default()
            },
            vec!["d5"],
        ),
    ] {
        assert_eq!(
            list(&mut tx, EntityKind::Device, query.clone()).await,
            expected,
            "{query:?}"
        );
    }
    assert_eq!(
        list(
            &mut tx,
            EntityKind::Session,
            EntityQuery {
                device: Some("d1".into()),
                sort: Some(EntitySort::Recent),
                ..EntityQuery::default()
            }
        )
        .await,
        ["x2", "x1"]
    );
    assert_eq!(
        list(
            &mut tx,
            EntityKind::Site,
            EntityQuery {
                sort: Some(EntitySort::Name),
                ..EntityQuery::default()
            }
        )
        .await,
        ["s1", "s2", "s3"]
    );

    // Columns and extras: typed values, times in RFC 3339 UTC.
    let d1 = analytics::entity(&mut tx, EntityKind::Device, "d1")
        .await
        .unwrap()
        .expect("d1 exists");
    assert_eq!(d1.source_id, *source.as_uuid());
    assert_eq!(
        Value::Object(d1.columns.clone()),
        json!({ "site_id": "s1", "name": "Charger 1", "kind": null, "model": null,
                "status": "online", "firmware": null, "last_seen_at": "2026-11-20T09:00:00Z" })
    );
    let typed: BTreeSet<&str> = domain::read_model::EntityKind::Device
        .typed_columns()
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        d1.columns
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        typed
    );
    assert_eq!(
        Value::Object(d1.extras.clone()),
        json!({ "colour": "red", "capacity": 22.5, "public": true,
                "installed": "2025-03-01T08:30:00Z" })
    );
    // A page carries the same extras as the detail.
    let page = analytics::entities(
        &mut tx,
        EntityKind::Device,
        &EntityQuery {
            limit: Some(1),
            ..EntityQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.items, vec![d1]);
    assert!(
        analytics::entity(&mut tx, EntityKind::Device, "d6")
            .await
            .unwrap()
            .is_none(),
        "a deleted device has a detail"
    );
    assert!(
        analytics::entity(&mut tx, EntityKind::Site, "d1")
            .await
            .unwrap()
            .is_none()
    );

    // Refused: a malformed cursor, a cursor of another order, filters of other kinds, limits.
    let first = analytics::entities(
        &mut tx,
        EntityKind::Device,
        &EntityQuery {
            limit: Some(1),
            ..EntityQuery::default()
        },
    )
    .await
    .unwrap();
    for cursor in ["not a cursor!".to_owned(), "e30".to_owned()] {
        assert_eq!(
            invalid_parameter(
                analytics::entities(
                    &mut tx,
                    EntityKind::Device,
                    &EntityQuery {
                        cursor: Some(cursor),
                        ..EntityQuery::default()
                    },
                )
                .await
            ),
            "cursor"
        );
    }
    assert_eq!(
        invalid_parameter(
            analytics::entities(
                &mut tx,
                EntityKind::Device,
                &EntityQuery {
                    cursor: first.next_cursor,
                    sort: Some(EntitySort::Name),
                    ..EntityQuery::default()
                },
            )
            .await
        ),
        "cursor"
    );
    for (kind, query, parameter) in [
        (
            EntityKind::Site,
            EntityQuery {
                status: Some("online".into()),
                ..EntityQuery::default()
            },
            "status",
        ),
        (
            EntityKind::Device,
            EntityQuery {
                device: Some("d1".into()),
                ..EntityQuery::default()
            },
            "device",
        ),
        (
            EntityKind::Session,
            EntityQuery {
                sort: Some(EntitySort::Name),
                ..EntityQuery::default()
            },
            "sort",
        ),
        (
            EntityKind::Device,
            EntityQuery {
                limit: Some(501),
                ..EntityQuery::default()
            },
            "limit",
        ),
    ] {
        assert_eq!(
            invalid_parameter(analytics::entities(&mut tx, kind, &query).await),
            parameter
        );
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_catalogue_counts_keys_and_extras_fields() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    materialize_entities(&database, acme, source).await;
    let reading = |n: u64, device: &str, key: &str, minutes: i64| {
        event(
            acme,
            source,
            protocol::Op::Insert,
            "readings",
            1000 + n * 8,
            json!({ "reading_id": n }),
            Some(json!({
                "reading_id": n, "device_id": device, "metric": key, "value": n,
                "measured_at": rfc3339(base_time() + Duration::minutes(minutes)),
            })),
            &[],
        )
    };
    let outcome = materialize(
        &database,
        &[
            reading(1, "d1", "power_kw", 0),
            reading(2, "d1", "power_kw", 0),
            reading(3, "d2", "power_kw", 90),
            reading(4, "d2", "power_kw", 3_000),
            reading(5, "d2", "temp_c", 5),
        ],
    )
    .await;
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
    let mut tx = viewer_tx(&database, acme).await;
    let catalogue = analytics::catalogue(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let metrics: Vec<(&str, OffsetDateTime, OffsetDateTime, i64, i64)> = catalogue
        .metrics
        .iter()
        .map(|key| {
            (
                key.key.as_str(),
                key.first_seen,
                key.last_seen,
                key.readings,
                key.entities,
            )
        })
        .collect();
    assert_eq!(
        metrics,
        [
            (
                "power_kw",
                base_time(),
                base_time() + Duration::minutes(3_000),
                4,
                2
            ),
            (
                "temp_c",
                base_time() + Duration::minutes(5),
                base_time() + Duration::minutes(5),
                1,
                1
            ),
        ]
    );
    let extras: Vec<(EntityKind, &str, &str, i64)> = catalogue
        .extras
        .iter()
        .map(|field| {
            assert!(field.first_seen <= field.last_seen);
            (
                field.entity_kind,
                field.key.as_str(),
                field.value_type,
                field.entities,
            )
        })
        .collect();
    assert_eq!(
        extras,
        [
            (EntityKind::Device, "capacity", "number", 2),
            (EntityKind::Device, "colour", "text", 3),
            (EntityKind::Device, "installed", "time", 1),
            (EntityKind::Device, "public", "boolean", 1),
            (EntityKind::Session, "kwh", "number", 1),
        ]
    );
}

#[tokio::test]
async fn another_tenants_entities_and_series_are_invisible() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    materialize_entities(&database, globex, SourceId::new_random()).await;
    let outcome = materialize(
        &database,
        &[event(
            globex,
            SourceId::new_random(),
            protocol::Op::Insert,
            "readings",
            1000,
            json!({ "reading_id": 1 }),
            Some(json!({
                "reading_id": 1, "device_id": "d1", "metric": "power_kw", "value": 5,
                "measured_at": rfc3339(base_time()),
            })),
            &[],
        )],
    )
    .await;
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");

    // Globex sees its own: the test would pass vacuously otherwise.
    let mut globex_tx = viewer_tx(&database, globex).await;
    assert!(
        analytics::entity(&mut globex_tx, EntityKind::Device, "d1")
            .await
            .unwrap()
            .is_some()
    );
    globex_tx.rollback().await.unwrap();

    let mut tx = viewer_tx(&database, acme).await;
    assert_eq!(
        analytics::entity(&mut tx, EntityKind::Device, "d1")
            .await
            .unwrap(),
        None
    );
    for kind in [EntityKind::Site, EntityKind::Device, EntityKind::Session] {
        let page = analytics::entities(&mut tx, kind, &EntityQuery::default())
            .await
            .unwrap();
        assert!(page.items.is_empty(), "{kind:?}: {:?}", page.items);
    }
    for step in STEPS {
        for group_by in [None, Some(GroupBy::Device)] {
            let series = analytics::series(
                &mut tx,
                &SeriesQuery {
                    key: "power_kw".into(),
                    from: base_time() - Duration::hours(1),
                    to: base_time() + Duration::hours(1),
                    step,
                    aggregation: Aggregation::Count,
                    site: None,
                    device: None,
                    group_by,
                    limit: 10,
                },
            )
            .await
            .unwrap();
            let points: usize = series.iter().map(|line| line.points.len()).sum();
            assert_eq!(points, 0, "{step:?} {group_by:?}: {series:?}");
        }
    }
    let catalogue = analytics::catalogue(&mut tx).await.unwrap();
    assert_eq!((catalogue.metrics, catalogue.extras), (vec![], vec![]));
    tx.rollback().await.unwrap();
}
