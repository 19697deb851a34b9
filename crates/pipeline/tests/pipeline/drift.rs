//! The schema-drift inbox: fields no typed column claims are counted per source table, kind,
//! field and JSON type as the materializer applies them; a dismissed one stays hidden until a
//! new type of it is seen; a promoted one becomes a typed column after the rebuild it requests.

use std::collections::BTreeMap;

use bus::Delivery;
use domain::{SourceId, TenantId};
use protocol::Op::{Insert, Update};
use serde_json::json;
use store::Database;
use store::analytics::{self, EntityKind};
use store::drift::DriftField;
use test_support::TestDatabase;
use time::OffsetDateTime;

use crate::materializer::{base_time, delivery, event, put_mapping};
use crate::support::{admin_tx, message, start_bronze_writer, tenant, wait_for_bronze};

async fn drift_fields(database: &Database, tenant: TenantId) -> Vec<DriftField> {
    let mut tx = admin_tx(database, tenant).await;
    let fields = store::drift::list(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    fields
}

/// The listed fields as (field, JSON type, rows, first seen, last seen), by field and type.
fn summary(fields: &[DriftField]) -> Vec<(String, String, i64, OffsetDateTime, OffsetDateTime)> {
    let mut rows: Vec<_> = fields
        .iter()
        .map(|field| {
            (
                field.field_name.clone(),
                field.json_type.clone(),
                field.rows,
                field.first_seen_at,
                field.last_seen_at,
            )
        })
        .collect();
    rows.sort();
    rows
}

fn at(lsn: i64) -> OffsetDateTime {
    base_time() + time::Duration::milliseconds(lsn)
}

async fn device(database: &Database, tenant: TenantId, id: &str) -> analytics::Entity {
    let mut tx = admin_tx(database, tenant).await;
    let entity = analytics::entity(&mut tx, EntityKind::Device, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("device {id} is in the read layer"));
    tx.commit().await.unwrap();
    entity
}

#[tokio::test]
async fn drift_fields_are_counted_dismissed_until_a_new_type_and_promoted_by_a_rebuild() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let source = SourceId::new_random();
    put_mapping(
        &database,
        acme,
        &store::read_models::MappingRow {
            source_id: *source.as_uuid(),
            source_table: "public.devices".into(),
            entity_kind: "device".into(),
            id_column: None,
            columns: BTreeMap::from([("name".into(), "name".into())]),
            reading_entity_kind: None,
        },
    )
    .await;
    let insert = |lsn: u64, id: &str, after: serde_json::Value| {
        event(
            acme,
            source,
            Insert,
            "devices",
            lsn,
            json!({ "device_id": id }),
            Some(after),
            &[],
        )
    };
    let update = |lsn: u64, id: &str, after: serde_json::Value| {
        event(
            acme,
            source,
            Update,
            "devices",
            lsn,
            json!({ "device_id": id }),
            Some(after),
            &[],
        )
    };
    let first_batch = [
        insert(
            10,
            "d1",
            json!({ "device_id": "d1", "name": "A", "colour": "red", "rating": 3, "gone": null }),
        ),
        insert(
            20,
            "d2",
            json!({ "device_id": "d2", "name": "B", "colour": "blue" }),
        ),
    ];
    let second_batch = [update(30, "d1", json!({ "device_id": "d1", "rating": 4 }))];
    let third_batch = [update(
        40,
        "d1",
        json!({ "device_id": "d1", "rating": "four" }),
    )];
    let all: Vec<&protocol::Envelope> = first_batch
        .iter()
        .chain(&second_batch)
        .chain(&third_batch)
        .collect();
    let published: Vec<bus::Message> = all.iter().map(|envelope| message(envelope)).collect();
    bus::Bus::publish(&bus, &published).await.unwrap();
    let writer = start_bronze_writer(&database, bus.clone());
    wait_for_bronze(&database, acme, 4).await;
    drop(writer);
    let apply = |batch: &[protocol::Envelope]| {
        let deliveries: Vec<Delivery> = batch.iter().map(delivery).collect();
        let database = database.service.clone();
        async move {
            let outcome = pipeline::materializer::apply(&database, &deliveries)
                .await
                .unwrap();
            assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
        }
    };

    // Unclaimed fields are counted with their type and the events' own times; the id, the
    // claimed name and a null are not drift.
    apply(&first_batch).await;
    let listed = drift_fields(&database, acme).await;
    assert_eq!(
        summary(&listed),
        [
            ("colour".into(), "string".into(), 2, at(10), at(20)),
            ("rating".into(), "number".into(), 1, at(10), at(10)),
        ]
    );
    assert!(
        listed
            .iter()
            .all(|field| field.source_id == *source.as_uuid()
                && field.schema_name == "public"
                && field.table_name == "devices"
                && field.entity_kind == "device")
    );
    assert!(
        drift_fields(&database, globex).await.is_empty(),
        "another workspace sees none of them"
    );

    // Dismissed: hidden while the field keeps its type, shown again with a new one.
    let rating = listed
        .iter()
        .find(|field| field.field_name == "rating")
        .unwrap();
    let mut tx = admin_tx(&database, globex).await;
    assert!(
        matches!(
            store::drift::dismiss(&mut tx, rating.drift_id).await,
            Err(store::drift::DriftError::NotFound)
        ),
        "another workspace cannot dismiss it"
    );
    drop(tx);
    let mut tx = admin_tx(&database, acme).await;
    store::drift::dismiss(&mut tx, rating.drift_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    apply(&second_batch).await;
    assert_eq!(
        summary(&drift_fields(&database, acme).await),
        [("colour".into(), "string".into(), 2, at(10), at(20))],
        "a dismissed field of the same type stays hidden"
    );
    apply(&third_batch).await;
    assert_eq!(
        summary(&drift_fields(&database, acme).await),
        [
            ("colour".into(), "string".into(), 2, at(10), at(20)),
            ("rating".into(), "string".into(), 1, at(40), at(40)),
        ],
        "a new type of a dismissed field shows"
    );
    let before = device(&database, acme, "d1").await;
    assert_eq!(before.extras.get("colour"), Some(&json!("red")));
    assert!(
        before
            .columns
            .get("model")
            .is_none_or(serde_json::Value::is_null),
        "{before:?}"
    );

    // A field seen as a string cannot become a number column: nothing changes.
    let colour = drift_fields(&database, acme)
        .await
        .into_iter()
        .find(|field| field.field_name == "colour")
        .unwrap();
    let mut tx = admin_tx(&database, acme).await;
    let refused = store::drift::promote(&mut tx, colour.drift_id, "last_seen_at").await;
    assert!(
        matches!(refused, Err(store::drift::DriftError::Incompatible(_))),
        "{refused:?}"
    );
    drop(tx);

    // Promoted: the mapping names it and a rebuild is requested in one transaction; the rebuild
    // makes it a typed column and takes it out of the extras and of the inbox.
    let mut tx = admin_tx(&database, acme).await;
    let promotion = store::drift::promote(&mut tx, colour.drift_id, "model")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        promotion.mapping.columns,
        BTreeMap::from([
            ("colour".into(), "model".into()),
            ("name".into(), "name".into())
        ])
    );
    let listed = summary(&drift_fields(&database, acme).await);
    assert_eq!(
        listed,
        [("rating".into(), "string".into(), 1, at(40), at(40))],
        "the mapping claims it now"
    );
    let done = pipeline::replay::run_next(&database.service, &bus)
        .await
        .unwrap()
        .expect("the promotion requested a rebuild");
    assert_eq!(
        (done.request_id, done.kind.as_str(), done.status.as_str()),
        (promotion.rebuild_request_id, "rebuild", "done")
    );
    for (id, colour) in [("d1", "red"), ("d2", "blue")] {
        let rebuilt = device(&database, acme, id).await;
        assert_eq!(rebuilt.columns.get("model"), Some(&json!(colour)), "{id}");
        assert!(!rebuilt.extras.contains_key("colour"), "{id}: {rebuilt:?}");
    }
    assert_eq!(
        device(&database, acme, "d1").await.extras.get("rating"),
        Some(&json!("four"))
    );
    assert_eq!(
        summary(&drift_fields(&database, acme).await),
        [("rating".into(), "string".into(), 1, at(40), at(40))],
        "the rebuild recounts: the dismissal holds, the promoted field is gone"
    );
    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "select field_name, json_type, row_count from pipeline.drift_fields \
         where tenant_id = $1 order by 1, 2",
    )
    .bind(acme.as_uuid())
    .fetch_all(&mut test_database.service().await)
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            ("rating".into(), "number".into(), 2),
            ("rating".into(), "string".into(), 1),
        ],
        "recounted exactly from bronze, the dismissed row kept"
    );
}
