//! Materialized truncates: a source TRUNCATE tombstones what its table fed (older than itself),
//! keeps the readings counted, lets later inserts re-create rows, and wins over older events
//! whenever they arrive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bus::Bus;
use domain::{SourceId, TenantId};
use protocol::Op::{Delete, Insert, Truncate, Update};
use serde_json::json;
use test_support::TestDatabase;
use time::OffsetDateTime;

use crate::materializer::{as_viewer, base_time, checksums, event, extras, materialize};
use crate::support::{message, start_materializer, tenant};

fn device(
    tenant: TenantId,
    source: SourceId,
    table: &str,
    lsn: u64,
    id: &str,
    name: &str,
) -> protocol::Envelope {
    event(
        tenant,
        source,
        Insert,
        table,
        lsn,
        json!({ "device_id": id }),
        Some(json!({ "device_id": id, "name": name, "notes": format!("about {id}") })),
        &[],
    )
}

pub fn truncate(tenant: TenantId, source: SourceId, table: &str, lsn: u64) -> protocol::Envelope {
    event(tenant, source, Truncate, table, lsn, json!({}), None, &[])
}

fn reading(
    tenant: TenantId,
    source: SourceId,
    lsn: u64,
    id: u64,
    device: &str,
) -> protocol::Envelope {
    event(
        tenant,
        source,
        Insert,
        "readings",
        lsn,
        json!({ "reading_id": id }),
        Some(json!({
            "reading_id": id, "device_id": device, "metric": "power_kw", "value": 2.5,
            "measured_at": "2026-11-20T10:00:30Z",
        })),
        &[],
    )
}

/// (name, pos_lsn, deleted_at) of each device of the tenant, by id, as a viewer reads them.
pub async fn devices(
    test_database: &TestDatabase,
    tenant: TenantId,
) -> BTreeMap<String, (Option<String>, i64, Option<OffsetDateTime>)> {
    let mut viewer = as_viewer(test_database, tenant).await;
    let rows: Vec<(String, Option<String>, i64, Option<OffsetDateTime>)> =
        sqlx::query_as("select device_id, name, pos_lsn, deleted_at from analytics.devices")
            .fetch_all(&mut viewer)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, name, lsn, deleted_at)| (id, (name, lsn, deleted_at)))
        .collect()
}

async fn readings_counted(test_database: &TestDatabase, tenant: TenantId) -> Option<i64> {
    let mut viewer = as_viewer(test_database, tenant).await;
    sqlx::query_scalar("select sum(value_count)::bigint from analytics.metrics_min")
        .fetch_one(&mut viewer)
        .await
        .unwrap()
}

/// Waits until the device `id` is materialized at position `lsn`.
async fn wait_for_device(test_database: &TestDatabase, tenant: TenantId, id: &str, lsn: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = devices(test_database, tenant).await;
        if seen.get(id).is_some_and(|(_, pos, _)| *pos == lsn) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "device {id} never reached position {lsn}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_truncate_tombstones_what_its_table_fed_and_keeps_the_readings() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let _materializer = start_materializer(&database, bus.clone());
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let publish = async |envelopes: &[protocol::Envelope]| {
        let messages: Vec<bus::Message> = envelopes.iter().map(message).collect();
        bus.publish(&messages).await.unwrap();
    };

    publish(&[
        device(acme, source, "devices", 100, "d1", "one"),
        device(acme, source, "devices", 110, "d2", "two"),
        reading(acme, source, 115, 1, "d1"),
        // Another table feeding devices: a truncate of `devices` leaves its rows alone. (Last:
        // once it is materialized, so is everything published before it.)
        device(acme, source, "chargers", 120, "c1", "charger"),
    ])
    .await;
    wait_for_device(&test_database, acme, "c1", 120).await;
    assert_eq!(readings_counted(&test_database, acme).await, Some(1));

    let truncated_at = base_time() + time::Duration::milliseconds(200);
    publish(&[
        truncate(acme, source, "devices", 200),
        // A later insert re-creates its row.
        device(acme, source, "devices", 300, "d2", "two again"),
        // A truncate of the readings: they happened, they stay counted.
        truncate(acme, source, "readings", 210),
    ])
    .await;
    wait_for_device(&test_database, acme, "d2", 300).await;
    publish(&[
        // An update older than the truncate, arriving after it: it cannot resurrect d1.
        event(
            acme,
            source,
            Update,
            "devices",
            150,
            json!({ "device_id": "d1" }),
            Some(json!({ "device_id": "d1", "name": "late" })),
            &[],
        ),
        // Published after it, so once this is materialized the late update was applied too.
        device(acme, source, "chargers", 600, "c2", "marker"),
    ])
    .await;
    wait_for_device(&test_database, acme, "c2", 600).await;
    let seen = devices(&test_database, acme).await;
    assert_eq!(
        seen,
        BTreeMap::from([
            ("d1".to_owned(), (None, 200, Some(truncated_at))),
            ("d2".to_owned(), (Some("two again".to_owned()), 300, None)),
            ("c1".to_owned(), (Some("charger".to_owned()), 120, None)),
            ("c2".to_owned(), (Some("marker".to_owned()), 600, None)),
        ])
    );
    let mut viewer = as_viewer(&test_database, acme).await;
    assert!(
        extras(&mut viewer, "d1").await.is_empty(),
        "a tombstone keeps no extras"
    );
    assert_eq!(extras(&mut viewer, "d2").await.len(), 1);
    assert_eq!(extras(&mut viewer, "c1").await.len(), 1);
    assert_eq!(readings_counted(&test_database, acme).await, Some(1));
}

#[tokio::test]
async fn a_truncate_wins_over_older_events_that_arrive_after_it() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let source = SourceId::new_random();
    let events = |tenant: TenantId| {
        vec![
            device(tenant, source, "devices", 100, "d1", "one"),
            event(
                tenant,
                source,
                Update,
                "devices",
                150,
                json!({ "device_id": "d1" }),
                Some(json!({ "device_id": "d1", "status": "up" })),
                &[],
            ),
            event(
                tenant,
                source,
                Delete,
                "devices",
                160,
                json!({ "device_id": "d3" }),
                None,
                &[],
            ),
            truncate(tenant, source, "devices", 200),
            device(tenant, source, "devices", 300, "d1", "one again"),
            device(tenant, source, "devices", 310, "d2", "two"),
            truncate(tenant, source, "devices", 400),
            event(
                tenant,
                source,
                Update,
                "devices",
                500,
                json!({ "device_id": "d2" }),
                Some(json!({ "device_id": "d2", "status": "back" })),
                &[],
            ),
        ]
    };
    let in_order = tenant(&database, "In order").await;
    for envelope in events(in_order) {
        let outcome = materialize(&database, &[envelope]).await;
        assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
    }
    // Newest first, each truncate before everything it supersedes, one event per batch.
    let reversed = tenant(&database, "Reversed").await;
    for envelope in events(reversed).into_iter().rev() {
        materialize(&database, &[envelope]).await;
    }
    // Everything in one batch, twice.
    let one_batch = tenant(&database, "One batch").await;
    let mut batch = events(one_batch);
    batch.extend(events(one_batch));
    materialize(&database, &batch).await;

    let expected = devices(&test_database, in_order).await;
    assert_eq!(
        expected,
        BTreeMap::from([
            (
                "d1".to_owned(),
                (
                    None,
                    400,
                    Some(base_time() + time::Duration::milliseconds(400))
                )
            ),
            ("d2".to_owned(), (None, 500, None)),
            (
                "d3".to_owned(),
                (
                    None,
                    400,
                    Some(base_time() + time::Duration::milliseconds(400))
                )
            ),
        ]),
        "d2 keeps only what came after the last truncate"
    );
    let status: Option<String> = sqlx::query_scalar(
        "select status from analytics.devices where tenant_id = $1 and device_id = 'd2'",
    )
    .bind(in_order.as_uuid())
    .fetch_one(&mut test_database.service().await)
    .await
    .unwrap();
    assert_eq!(status.as_deref(), Some("back"));
    let expected = checksums(&database, in_order).await;
    for other in [reversed, one_batch] {
        assert_eq!(checksums(&database, other).await, expected);
    }
}
