//! The tenant materializer against a real database: default mapping of the simulator's output,
//! ordering and tombstones, unchanged columns, typed extras, metrics_min, DLQ then fix then
//! replay, rebuild, and the convergence property.

use std::collections::BTreeMap;

use bus::{Delivery, Message};
use domain::{EventId, Lsn, SourceId, TenantId};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use store::Database;
use store::replay::ReplayKind;
use test_support::TestDatabase;
use time::OffsetDateTime;

use crate::support::tenant;

/// The base commit time of the fixtures' events: a fixed minute, so buckets are predictable.
pub fn base_time() -> OffsetDateTime {
    time::macros::datetime!(2026-11-20 10:00:00 UTC)
}

/// An event of `table` at position `lsn`.
#[allow(clippy::too_many_arguments)]
pub fn event(
    tenant: TenantId,
    source: SourceId,
    op: protocol::Op,
    table: &str,
    lsn: u64,
    key: Value,
    after: Option<Value>,
    unchanged: &[&str],
) -> protocol::Envelope {
    let event_time = base_time() + time::Duration::milliseconds(lsn as i64);
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    protocol::Envelope {
        tenant_id: tenant,
        source_id: source,
        event: protocol::ChangeEvent {
            event_id: EventId::derive(source, millis, Lsn(lsn), 0),
            op,
            schema: "public".into(),
            table: table.into(),
            lsn: Lsn(lsn),
            seq: 0,
            xid: Some(lsn),
            event_time,
            key: key.as_object().cloned().unwrap_or_default(),
            after: after.and_then(|after| after.as_object().cloned()),
            before: None,
            unchanged: unchanged.iter().map(|name| (*name).to_owned()).collect(),
            types: Default::default(),
        },
        replay: None,
    }
}

pub fn delivery(envelope: &protocol::Envelope) -> Delivery {
    Delivery {
        message: Message {
            tenant: envelope.tenant_id,
            id: envelope.event.event_id,
            payload: serde_json::to_vec(envelope).unwrap().into(),
        },
        partition: 0,
        position: 0,
    }
}

pub async fn materialize(
    database: &Database,
    envelopes: &[protocol::Envelope],
) -> pipeline::materializer::ApplyOutcome {
    let deliveries: Vec<Delivery> = envelopes.iter().map(delivery).collect();
    pipeline::materializer::apply(&database.service, &deliveries)
        .await
        .unwrap()
}

/// The content checksums of a tenant's read models.
pub async fn checksums(
    database: &Database,
    tenant: TenantId,
) -> BTreeMap<&'static str, (i64, String)> {
    store::service::read_models::checksums(&database.service, tenant)
        .await
        .unwrap()
}

/// A connection as a tenant member (RLS applies), for reading read models as a tenant does.
pub async fn as_viewer(test_database: &TestDatabase, tenant: TenantId) -> PgConnection {
    let mut connection = PgConnection::connect_with(&test_database.settings().app_options())
        .await
        .unwrap();
    sqlx::query("select set_config('tributary.tenant_id', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query("set role tributary_tenant_viewer")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

pub async fn extras(
    connection: &mut PgConnection,
    entity: &str,
) -> BTreeMap<String, (String, String)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select key, 'text', value from analytics.extras_text where entity_id = $1 \
         union all select key, 'num', value::text from analytics.extras_num where entity_id = $1 \
         union all select key, 'bool', value::text from analytics.extras_bool where entity_id = $1 \
         union all select key, 'time', to_char(value at time zone 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS') from analytics.extras_time where entity_id = $1",
    )
    .bind(entity)
    .fetch_all(connection)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, table, value)| (key, (table, value)))
        .collect()
}

fn pair(table: &str, value: &str) -> (String, String) {
    (table.to_owned(), value.to_owned())
}

#[tokio::test]
async fn the_simulators_output_maps_with_no_configuration() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let mut simulator =
        agent::simulator::Simulator::new(source, 20, 0, agent::simulator::Position::start());
    let envelopes: Vec<protocol::Envelope> = simulator
        .next_changes(400)
        .into_iter()
        .map(|event| protocol::Envelope {
            tenant_id: acme,
            source_id: source,
            event,
            replay: None,
        })
        .collect();
    let readings = envelopes
        .iter()
        .filter(|envelope| envelope.event.table == "readings")
        .count() as i64;
    let outcome = materialize(&database, &envelopes).await;
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
    let mut viewer = as_viewer(&test_database, acme).await;
    let (sites, devices, sessions): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from analytics.sites), (select count(*) from analytics.devices), \
                (select count(*) from analytics.sessions)",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!((sites, devices), (2, 20));
    assert!(sessions > 0);
    let (name, model, site): (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "select name, model, site_id from analytics.devices where device_id = 'device-3'",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    // Updates send only some columns: the others keep their values.
    assert_eq!(
        (name.as_deref(), site.as_deref()),
        (Some("Charger 3"), Some("site-1"))
    );
    assert!(model.is_some_and(|model| ["TX-22", "TX-50", "HPC-150"].contains(&model.as_str())));
    let (count, keys): (Option<i64>, Vec<String>) = sqlx::query_as(
        "select sum(value_count)::bigint, array_agg(distinct metric_key) from analytics.metrics_min",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!(count, Some(readings));
    assert_eq!(keys, vec!["power_kw".to_owned(), "voltage_v".to_owned()]);
    // Only fields no typed column has land in extras: the nested connector and payment details
    // (as JSON text).
    let (extras_keys,): (Vec<String>,) = sqlx::query_as(
        "select coalesce(array_agg(distinct key order by key), '{}') from analytics.extras_text",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!(extras_keys, ["connector", "payment"], "{extras_keys:?}");
}

#[tokio::test]
async fn newer_positions_win_and_deletes_leave_a_tombstone() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "device_id": "d1" });
    let insert = event(
        acme,
        source,
        Insert,
        "devices",
        100,
        key.clone(),
        Some(json!({ "device_id": "d1", "name": "first", "status": "up" })),
        &[],
    );
    let update = event(
        acme,
        source,
        Update,
        "devices",
        200,
        key.clone(),
        Some(json!({ "device_id": "d1", "status": "down" })),
        &[],
    );
    let delete = event(acme, source, Delete, "devices", 300, key.clone(), None, &[]);
    let late_update = event(
        acme,
        source,
        Update,
        "devices",
        250,
        key.clone(),
        Some(json!({ "device_id": "d1", "status": "resurrected" })),
        &[],
    );

    // Newest first, then the older ones, twice.
    materialize(&database, std::slice::from_ref(&update)).await;
    materialize(&database, &[insert.clone(), insert.clone(), update.clone()]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    let row: (Option<String>, Option<String>, i64) = sqlx::query_as(
        "select name, status, pos_lsn from analytics.devices where device_id = 'd1'",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!(row, (Some("first".into()), Some("down".into()), 200));

    materialize(&database, &[delete.clone(), late_update, insert]).await;
    let row: (Option<String>, Option<String>, i64, bool) = sqlx::query_as(
        "select name, status, pos_lsn, deleted_at is not null from analytics.devices \
         where device_id = 'd1'",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!(
        row,
        (None, None, 300, true),
        "a late older update resurrected the row"
    );
    assert!(extras(&mut viewer, "d1").await.is_empty());

    // A newer insert brings it back.
    let again = event(
        acme,
        source,
        Insert,
        "devices",
        400,
        key,
        Some(json!({ "device_id": "d1", "name": "second" })),
        &[],
    );
    materialize(&database, &[again]).await;
    let row: (Option<String>, bool) = sqlx::query_as(
        "select name, deleted_at is null from analytics.devices where device_id = 'd1'",
    )
    .fetch_one(&mut viewer)
    .await
    .unwrap();
    assert_eq!(row, (Some("second".into()), true));
}

#[tokio::test]
async fn unchanged_columns_keep_their_values_typed_or_extra() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "device_id": "d1" });
    let insert = event(
        acme,
        source,
        Insert,
        "devices",
        100,
        key.clone(),
        Some(json!({ "device_id": "d1", "name": "big", "notes": "long text", "status": "up" })),
        &[],
    );
    // The update did not send name and notes (unchanged, stored out of line).
    let update = event(
        acme,
        source,
        Update,
        "devices",
        200,
        key.clone(),
        Some(json!({ "device_id": "d1", "status": "down" })),
        &["name", "notes"],
    );
    // Out of order: the update arrives before the insert.
    materialize(&database, &[update, insert]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("select name, status from analytics.devices where device_id = 'd1'")
            .fetch_one(&mut viewer)
            .await
            .unwrap();
    assert_eq!(row, (Some("big".into()), Some("down".into())));
    assert_eq!(
        extras(&mut viewer, "d1").await,
        BTreeMap::from([("notes".to_owned(), pair("text", "long text"))])
    );
}

#[tokio::test]
async fn extras_are_typed_and_move_when_their_type_changes() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "site_id": "s1" });
    let insert = event(
        acme,
        source,
        Insert,
        "sites",
        100,
        key.clone(),
        Some(json!({
            "site_id": "s1", "name": "Main", "capacity": 12.5, "open": true,
            "opened_on": "2024-05-01T08:30:00Z", "label": "north",
            "tags": ["a", "b"], "meta": { "floor": 2 }, "nothing": null,
        })),
        &[],
    );
    materialize(&database, &[insert]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    assert_eq!(
        extras(&mut viewer, "s1").await,
        BTreeMap::from([
            ("capacity".to_owned(), pair("num", "12.5")),
            ("open".to_owned(), pair("bool", "true")),
            ("opened_on".to_owned(), pair("time", "2024-05-01T08:30:00")),
            ("label".to_owned(), pair("text", "north")),
            ("tags".to_owned(), pair("text", r#"["a","b"]"#)),
            ("meta".to_owned(), pair("text", r#"{"floor":2}"#)),
        ])
    );
    // Types change: each field moves to its new table, nothing stays behind in the old one.
    let update = event(
        acme,
        source,
        Update,
        "sites",
        200,
        key.clone(),
        Some(json!({
            "site_id": "s1", "capacity": "full", "open": "2025-01-01", "label": 7,
            "tags": false,
        })),
        &[],
    );
    materialize(&database, &[update]).await;
    assert_eq!(
        extras(&mut viewer, "s1").await,
        BTreeMap::from([
            ("capacity".to_owned(), pair("text", "full")),
            ("open".to_owned(), pair("time", "2025-01-01T00:00:00")),
            ("opened_on".to_owned(), pair("time", "2024-05-01T08:30:00")),
            ("label".to_owned(), pair("num", "7")),
            ("tags".to_owned(), pair("bool", "false")),
            ("meta".to_owned(), pair("text", r#"{"floor":2}"#)),
        ])
    );
    // A delete removes them.
    materialize(
        &database,
        &[event(acme, source, Delete, "sites", 300, key, None, &[])],
    )
    .await;
    assert!(extras(&mut viewer, "s1").await.is_empty());
}

/// A negative zero is kept as sent in a typed column, an extra and a reading
/// (docs/protocol.md: "a negative zero stays -0.0 all the way").
#[tokio::test]
async fn a_negative_zero_stays_negative_in_the_read_models() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let site = event(
        acme,
        source,
        Insert,
        "sites",
        100,
        json!({ "site_id": "s1" }),
        Some(json!({ "site_id": "s1", "latitude": -0.0, "offset": -0.0 })),
        &[],
    );
    materialize(&database, &[site, reading(acme, source, 1, "d1", -0.0, 5)]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    let latitude: String = sqlx::query_scalar("select latitude::text from analytics.sites")
        .fetch_one(&mut viewer)
        .await
        .unwrap();
    let last: String = sqlx::query_scalar("select last_value::text from analytics.metrics_min")
        .fetch_one(&mut viewer)
        .await
        .unwrap();
    assert_eq!(
        (latitude.as_str(), last.as_str()),
        ("-0", "-0"),
        "typed column, reading"
    );
    assert_eq!(
        extras(&mut viewer, "s1").await,
        BTreeMap::from([("offset".to_owned(), pair("num", "-0"))])
    );
}

fn reading(
    tenant: TenantId,
    source: SourceId,
    id: u64,
    device: &str,
    value: f64,
    second: i64,
) -> protocol::Envelope {
    let measured = base_time() + time::Duration::seconds(second);
    event(
        tenant,
        source,
        protocol::Op::Insert,
        "readings",
        1000 + id,
        json!({ "reading_id": id }),
        Some(json!({
            "reading_id": id, "device_id": device, "metric": "power_kw", "value": value,
            "measured_at": measured.format(&time::format_description::well_known::Rfc3339).unwrap(),
        })),
        &[],
    )
}

#[tokio::test]
async fn metrics_min_is_exact_under_duplicates_and_late_readings() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let first = reading(acme, source, 1, "d1", 2.0, 5);
    let second = reading(acme, source, 2, "d1", 7.0, 50);
    let third = reading(acme, source, 3, "d1", 4.0, 20);
    let next_minute = reading(acme, source, 4, "d1", 1.0, 65);
    materialize(&database, &[second.clone(), first.clone(), second.clone()]).await;
    materialize(&database, &[next_minute, first, third]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    let rows: Vec<(OffsetDateTime, f64, i64, f64, f64, f64)> = sqlx::query_as(
        "select minute, value_sum, value_count, value_min, value_max, last_value \
         from analytics.metrics_min where entity_id = 'd1' and metric_key = 'power_kw' \
         order by minute",
    )
    .fetch_all(&mut viewer)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (base_time(), 13.0, 3, 2.0, 7.0, 7.0),
            (
                base_time() + time::Duration::minutes(1),
                1.0,
                1,
                1.0,
                1.0,
                1.0
            ),
        ]
    );
}

#[tokio::test]
async fn an_older_delete_arriving_after_a_sites_reading_leaves_the_reading() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "reading_id": 1 });
    let delete = event(
        acme,
        source,
        protocol::Op::Delete,
        "readings",
        1000,
        key.clone(),
        None,
        &[],
    );
    let insert = event(
        acme,
        source,
        protocol::Op::Insert,
        "readings",
        1008,
        key,
        Some(json!({
            "reading_id": 1, "site_id": "s1", "metric": "power_kw", "value": 3.5,
            "measured_at": "2026-11-20T10:00:30Z",
        })),
        &[],
    );
    // The delete has no columns to tell a site's reading from a device's: the newest event,
    // the insert, decides, whichever comes last in the batch.
    materialize(&database, &[insert, delete]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("select entity_kind, entity_id, value_count from analytics.metrics_min")
            .fetch_all(&mut viewer)
            .await
            .unwrap();
    assert_eq!(rows, [("site".to_owned(), "s1".to_owned(), 1)]);
}

/// The tenant's minutes of `metrics_min`: (entity kind, entity id, sum, count).
async fn buckets(viewer: &mut PgConnection) -> Vec<(String, String, f64, i64)> {
    sqlx::query_as(
        "select entity_kind, entity_id, value_sum, value_count from analytics.metrics_min \
         order by entity_kind, entity_id, minute",
    )
    .fetch_all(viewer)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_partial_update_of_a_sites_reading_stays_the_sites() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "reading_id": 1 });
    let insert = event(
        acme,
        source,
        protocol::Op::Insert,
        "readings",
        1000,
        key.clone(),
        Some(json!({
            "reading_id": 1, "site_id": "s1", "metric": "power_kw", "value": 3.5,
            "measured_at": "2026-11-20T10:00:30Z",
        })),
        &[],
    );
    // An update carrying only the column that changed: nothing in it says whose reading it
    // is, the row it folds into does.
    let update = event(
        acme,
        source,
        protocol::Op::Update,
        "readings",
        1008,
        key,
        Some(json!({ "reading_id": 1, "value": 4.5 })),
        &[],
    );
    materialize(&database, &[insert]).await;
    materialize(&database, &[update]).await;
    let mut viewer = as_viewer(&test_database, acme).await;
    assert_eq!(
        buckets(&mut viewer).await,
        [("site".to_owned(), "s1".to_owned(), 4.5, 1)]
    );
}

#[tokio::test]
async fn a_readings_state_lives_in_its_row_moves_there_and_stays_behind_when_deleted() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let key = json!({ "reading_id": 1 });
    let reading_event = |op, lsn, after: Option<Value>| {
        event(acme, source, op, "readings", lsn, key.clone(), after, &[])
    };
    let image = json!({
        "reading_id": 1, "site_id": "s1", "metric": "power_kw", "value": 3.5,
        "measured_at": "2026-11-20T10:00:30Z",
    });
    let mut admin = test_database.admin().await;
    // Where the reading's state is: (in entity_state, in its reading row).
    async fn places(admin: &mut PgConnection, tenant: TenantId) -> (i64, i64) {
        sqlx::query_as(
            "select (select count(*) from pipeline.entity_state \
                     where tenant_id = $1 and entity_kind = 'reading'), \
                    (select count(*) from pipeline.metric_readings \
                     where tenant_id = $1 and state is not null)",
        )
        .bind(tenant.as_uuid())
        .fetch_one(admin)
        .await
        .unwrap()
    }
    let outcome = materialize(
        &database,
        &[reading_event(
            protocol::Op::Insert,
            1000,
            Some(image.clone()),
        )],
    )
    .await;
    assert_eq!(outcome.applied, 1, "{outcome:?}");
    assert_eq!(places(&mut admin, acme).await, (0, 1));

    // As a reading stored before its row kept its state.
    sqlx::query(
        "with moved as (update pipeline.metric_readings set state = null \
             where tenant_id = $1 returning tenant_id, reading_id) \
         insert into pipeline.entity_state (tenant_id, entity_kind, entity_id, state) \
         select m.tenant_id, 'reading', m.reading_id, r.state::jsonb \
         from moved m join pipeline.metric_readings r using (tenant_id, reading_id)",
    )
    .bind(acme.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(places(&mut admin, acme).await, (1, 0));
    // An update carrying one column folds into the stored state, wherever it is kept, and
    // the state moves into the row.
    let update = reading_event(
        protocol::Op::Update,
        1008,
        Some(json!({ "reading_id": 1, "value": 4.5 })),
    );
    materialize(&database, &[update]).await;
    assert_eq!(places(&mut admin, acme).await, (0, 1));
    let mut viewer = as_viewer(&test_database, acme).await;
    assert_eq!(
        buckets(&mut viewer).await,
        [("site".to_owned(), "s1".to_owned(), 4.5, 1)]
    );

    // Deleted, the reading has no row: its state, the tombstone, is kept in entity_state, and
    // an older insert arriving late cannot bring the reading back.
    materialize(
        &database,
        &[reading_event(protocol::Op::Delete, 1016, None)],
    )
    .await;
    assert_eq!(places(&mut admin, acme).await, (1, 0));
    materialize(
        &database,
        &[reading_event(protocol::Op::Insert, 1004, Some(image))],
    )
    .await;
    assert_eq!(places(&mut admin, acme).await, (1, 0));
    assert!(buckets(&mut viewer).await.is_empty());
}

#[tokio::test]
async fn sums_are_exact_and_the_same_in_any_order() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let source = SourceId::new_random();
    let values = [0.1, 0.2, 0.3, 1e16, -1e16];
    let mut sums = Vec::new();
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [3, 0, 4, 2, 1]] {
        let tenant = tenant(&database, "Sums").await;
        // One reading per batch, so each is added to the bucket on its own.
        for index in order {
            materialize(
                &database,
                &[reading(
                    tenant,
                    source,
                    index as u64,
                    "d1",
                    values[index],
                    10,
                )],
            )
            .await;
        }
        let mut viewer = as_viewer(&test_database, tenant).await;
        let (sum, count): (f64, i64) =
            sqlx::query_as("select value_sum, value_count from analytics.metrics_min")
                .fetch_one(&mut viewer)
                .await
                .unwrap();
        assert_eq!(count, 5);
        sums.push(sum.to_bits());
    }
    // The decimal sum rounded once: 0.6, where adding the doubles gives 0.6000000000000001,
    // or 0, or 2, depending on the order.
    assert_eq!(sums, [0.6f64.to_bits(); 3]);
}

#[tokio::test]
async fn a_bucket_without_an_exact_sum_is_recounted_when_it_gains_a_reading() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    materialize(&database, &[reading(acme, source, 1, "d1", 2.0, 5)]).await;
    // As a row written before exact sums were kept, with figures a recount will correct.
    let mut admin = test_database.admin().await;
    sqlx::query(
        "update analytics.metrics_min set value_sum_exact = null, last_measured_at = null, \
             last_reading_id = null, value_count = 99, value_sum = 99 where tenant_id = $1",
    )
    .bind(acme.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    // Its hour has an exact sum but no last reading: it cannot be added to either.
    sqlx::query(
        "update analytics.metrics_hour set last_reading_id = null, value_count = 99, \
             value_sum = 99, value_sum_exact = 99 where tenant_id = $1",
    )
    .bind(acme.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    let outcome = materialize(&database, &[reading(acme, source, 2, "d1", 3.0, 20)]).await;
    assert_eq!(outcome.applied, 1, "{outcome:?}");
    let mut viewer = as_viewer(&test_database, acme).await;
    for table in ["metrics_min", "metrics_hour"] {
        let row: (f64, i64, f64, f64, f64, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select value_sum, value_count, value_min, value_max, last_value, \
                    value_sum_exact is not null and last_reading_id is not null \
             from analytics.{table}"
        )))
        .fetch_one(&mut viewer)
        .await
        .unwrap();
        assert_eq!(row, (5.0, 2, 2.0, 3.0, 3.0, true), "{table}");
    }
}

/// Requests a replay of the tenant's dead letters, as an admin would, and carries it out.
pub async fn replay_dead_letters(
    database: &Database,
    bus: &bus::EmbeddedBus,
    tenant: TenantId,
) -> store::replay::ReplayRequest {
    let request = request_dlq_replay(database, tenant).await;
    pipeline::replay::run_request(&database.service, bus, tenant, request)
        .await
        .unwrap()
        .unwrap()
}

async fn request_dlq_replay(database: &Database, tenant: TenantId) -> uuid::Uuid {
    let mut tx = crate::support::admin_tx(database, tenant).await;
    let id = store::replay::request(&mut tx, &ReplayKind::DeadLetters)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Maps the table `gadgets` of `source`: devices, id in `gid`, `label` feeding the name.
pub async fn map_gadgets_as_devices(database: &Database, tenant: TenantId, source: SourceId) {
    put_mapping(
        database,
        tenant,
        &store::read_models::MappingRow {
            source_id: *source.as_uuid(),
            source_table: "gadgets".into(),
            entity_kind: "device".into(),
            id_column: Some("gid".into()),
            columns: BTreeMap::from([("label".into(), "name".into())]),
            reading_entity_kind: None,
        },
    )
    .await;
}

pub async fn put_mapping(
    database: &Database,
    tenant: TenantId,
    row: &store::read_models::MappingRow,
) {
    let mut tx = crate::support::admin_tx(database, tenant).await;
    store::read_models::put_mapping(&mut tx, row).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn dead_letters_apply_exactly_once_after_the_mapping_is_fixed() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let events = vec![
        // A latitude that is not a number.
        event(
            acme,
            source,
            Insert,
            "sites",
            20,
            json!({ "site_id": "s1" }),
            Some(json!({ "site_id": "s1", "latitude": "north-ish" })),
            &[],
        ),
        // No key at all.
        event(
            acme,
            source,
            Insert,
            "devices",
            30,
            json!({}),
            Some(json!({ "name": "anonymous" })),
            &[],
        ),
        // A reading without a value.
        event(
            acme,
            source,
            Insert,
            "readings",
            40,
            json!({ "reading_id": 1 }),
            Some(
                json!({ "reading_id": 1, "device_id": "g1", "metric": "temp",
                          "measured_at": "2026-11-20T10:00:00Z" }),
            ),
            &[],
        ),
        // Fine.
        event(
            acme,
            source,
            Insert,
            "devices",
            50,
            json!({ "device_id": "ok" }),
            Some(json!({ "device_id": "ok" })),
            &[],
        ),
    ];
    let outcome = materialize(&database, &events).await;
    assert_eq!((outcome.applied, outcome.dead_lettered.len()), (1, 3));
    let mut service = test_database.service().await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "select reason_code from pipeline.dlq where tenant_id = $1 and consumer = 'materializer' \
         order by reason_code",
    )
    .bind(acme.as_uuid())
    .fetch_all(&mut service)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        ["invalid_reading", "missing_key", "uncoercible_type"]
    );

    // Fix one cause: stop mapping latitude (it becomes an extra).
    put_mapping(
        &database,
        acme,
        &store::read_models::MappingRow {
            source_id: *source.as_uuid(),
            source_table: "sites".into(),
            entity_kind: "site".into(),
            id_column: None,
            columns: BTreeMap::new(),
            reading_entity_kind: None,
        },
    )
    .await;
    let done = replay_dead_letters(&database, &bus, acme).await;
    assert_eq!(
        (
            done.status.as_str(),
            done.events_replayed,
            done.events_failed
        ),
        ("done", 1, 2)
    );
    // A second replay finds nothing new to apply and changes nothing.
    let mut viewer = as_viewer(&test_database, acme).await;
    let before = store::service::read_models::checksums(&database.service, acme)
        .await
        .unwrap();
    let done = replay_dead_letters(&database, &bus, acme).await;
    assert_eq!((done.events_replayed, done.events_failed), (0, 2));
    assert_eq!(
        store::service::read_models::checksums(&database.service, acme)
            .await
            .unwrap(),
        before
    );
    assert_eq!(
        extras(&mut viewer, "s1").await,
        BTreeMap::from([("latitude".to_owned(), pair("text", "north-ish"))])
    );
    let sites: i64 = sqlx::query_scalar("select count(*) from analytics.sites")
        .fetch_one(&mut viewer)
        .await
        .unwrap();
    assert_eq!(sites, 1, "the replayed letter applied once");
}

#[tokio::test]
async fn a_rebuild_reproduces_the_read_models_and_leaves_other_tenants_alone() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let mut published = Vec::new();
    let mut truncate_lsn = 0;
    for tenant in [acme, globex] {
        let source = SourceId::new_random();
        let mut simulator =
            agent::simulator::Simulator::new(source, 12, 0, agent::simulator::Position::start());
        let mut events = simulator.next_changes(300);
        if tenant == acme {
            // The sessions table truncated halfway: the rebuild must reproduce that too.
            truncate_lsn = events[150].lsn.0 + 1;
            let mut truncate = event(
                acme,
                source,
                protocol::Op::Truncate,
                "sessions",
                truncate_lsn,
                json!({}),
                None,
                &[],
            )
            .event;
            truncate.event_time = events[150].event_time;
            events.insert(151, truncate);
        }
        for event in events {
            published.push(crate::support::message(&protocol::Envelope {
                tenant_id: tenant,
                source_id: source,
                event,
                replay: None,
            }));
        }
    }
    bus::Bus::publish(&bus, &published).await.unwrap();
    let writer = crate::support::start_bronze_writer(&database, bus.clone());
    crate::support::wait_for_bronze(&database, acme, 301).await;
    crate::support::wait_for_bronze(&database, globex, 300).await;
    drop(writer);
    let deliveries: Vec<Delivery> = published
        .into_iter()
        .map(|message| Delivery {
            message,
            partition: 0,
            position: 0,
        })
        .collect();
    pipeline::materializer::apply(&database.service, &deliveries)
        .await
        .unwrap();
    let acme_before = store::service::read_models::checksums(&database.service, acme)
        .await
        .unwrap();
    let globex_before = store::service::read_models::checksums(&database.service, globex)
        .await
        .unwrap();
    assert!(acme_before["analytics.devices"].0 == 12 && acme_before["analytics.metrics_min"].0 > 0);
    let truncated: i64 = sqlx::query_scalar(
        "select count(*) from analytics.sessions \
         where tenant_id = $1 and pos_lsn = $2 and deleted_at is not null",
    )
    .bind(acme.as_uuid())
    .bind(truncate_lsn as i64)
    .fetch_one(&mut test_database.service().await)
    .await
    .unwrap();
    assert!(truncated > 0, "the truncate tombstoned no session");

    // Damage Acme's read models the way a bug would, then rebuild.
    let mut admin = test_database.admin().await;
    sqlx::query("update analytics.devices set name = 'wrong' where tenant_id = $1")
        .bind(acme.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("delete from analytics.metrics_min where tenant_id = $1")
        .bind(acme.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    assert_ne!(
        store::service::read_models::checksums(&database.service, acme)
            .await
            .unwrap(),
        acme_before
    );
    let outcome = pipeline::materializer::rebuild(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(outcome.events, 301);
    assert_eq!(
        store::service::read_models::checksums(&database.service, acme)
            .await
            .unwrap(),
        acme_before
    );
    assert_eq!(
        store::service::read_models::checksums(&database.service, globex)
            .await
            .unwrap(),
        globex_before
    );
}

#[tokio::test]
async fn what_the_database_refuses_is_dead_lettered_alone_and_other_tenants_apply() {
    use protocol::Op::Insert;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let tenants = [
        tenant(&database, "Acme").await,
        tenant(&database, "Globex").await,
        tenant(&database, "Initech").await,
    ];
    let source = SourceId::new_random();
    // A rule the materializer does not know, so only the database can refuse the event.
    let mut admin = test_database.admin().await;
    sqlx::raw_sql(
        "alter table analytics.devices add constraint no_poison check (name <> 'poison')",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let device = |tenant: TenantId, lsn: u64, name: &str| {
        event(
            tenant,
            source,
            Insert,
            "devices",
            lsn,
            json!({ "device_id": format!("d{lsn}") }),
            Some(json!({ "device_id": format!("d{lsn}"), "name": name })),
            &[],
        )
    };
    // One batch of three tenants (so of two transactions), Acme's second event poisoned.
    let mut batch = Vec::new();
    for lsn in 1..=6 {
        for tenant in tenants {
            let name = if tenant == tenants[0] && lsn == 2 {
                "poison"
            } else {
                "fine"
            };
            batch.push(device(tenant, lsn, name));
        }
    }
    let outcome = materialize(&database, &batch).await;
    assert_eq!(outcome.applied, 17);
    assert_eq!(outcome.dead_lettered, [batch[3].event.event_id]);
    for tenant in tenants {
        let expected = if tenant == tenants[0] { 5 } else { 6 };
        let devices: i64 = sqlx::query_scalar(
            "select count(*) from analytics.devices where tenant_id = $1 and name = 'fine'",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(devices, expected);
    }
    let (reason, letters): (String, i64) = sqlx::query_as(
        "select min(reason_code), count(*) from pipeline.dlq where consumer = 'materializer'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((reason.as_str(), letters), ("materializer_rejected", 1));
}

#[tokio::test]
async fn replaying_one_tenants_dead_letters_never_writes_another_tenants_rows() {
    use protocol::Op::*;
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let source = SourceId::new_random();
    // A dead letter of Acme whose message claims to be Globex's event (as only a forged row
    // could): the replay runs in Acme's context and refuses it.
    let forged = event(
        globex,
        source,
        Insert,
        "devices",
        10,
        json!({ "device_id": "intruder" }),
        Some(json!({ "device_id": "intruder" })),
        &[],
    );
    let mut admin = test_database.admin().await;
    sqlx::query(
        "insert into pipeline.dlq (tenant_id, dlq_id, consumer, event_id, source_id, reason_code, \
             reason, event, message) \
         values ($1, gen_random_uuid(), 'materializer', $2, $3, 'no_mapping', 'forged', '{}', $4)",
    )
    .bind(acme.as_uuid())
    .bind(forged.event.event_id.as_uuid())
    .bind(source.as_uuid())
    .bind(serde_json::to_vec(&forged).unwrap())
    .execute(&mut admin)
    .await
    .unwrap();
    let done = replay_dead_letters(&database, &bus, acme).await;
    assert_eq!((done.events_replayed, done.events_failed), (0, 1));
    for tenant in [acme, globex] {
        let checksums = store::service::read_models::checksums(&database.service, tenant)
            .await
            .unwrap();
        assert!(
            checksums.values().all(|(rows, _)| *rows == 0),
            "{checksums:?}"
        );
    }
}
