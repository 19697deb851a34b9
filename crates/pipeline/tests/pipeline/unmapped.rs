//! Tables nobody mapped: their events are not failures. They stay in bronze, counted per table
//! for the workspace's admins, and a rebuild applies them once the table is mapped.

use std::collections::BTreeMap;

use bus::Delivery;
use domain::{SourceId, TenantId};
use protocol::Op::Insert;
use serde_json::json;
use store::Database;
use test_support::TestDatabase;

use crate::materializer::{base_time, checksums, delivery, event, map_gadgets_as_devices};
use crate::support::{admin_tx, message, start_bronze_writer, tenant, wait_for_bronze};
use crate::truncate::{devices, truncate};

async fn unmapped_tables(
    database: &Database,
    tenant: TenantId,
) -> Vec<store::read_models::UnmappedTable> {
    let mut tx = admin_tx(database, tenant).await;
    let tables = store::read_models::list_unmapped_tables(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tables
}

async fn dead_letters(test_database: &TestDatabase, tenant: TenantId) -> i64 {
    sqlx::query_scalar("select count(*) from pipeline.dlq where tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut test_database.service().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn unmapped_events_are_counted_not_dead_lettered_and_a_rebuild_applies_them_once_mapped() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let source = SourceId::new_random();
    let gadget = |lsn: u64| {
        event(
            acme,
            source,
            Insert,
            "gadgets",
            lsn,
            json!({ "gid": format!("g{lsn}") }),
            Some(json!({ "gid": format!("g{lsn}"), "label": "x" })),
            &[],
        )
    };
    let envelopes = [
        gadget(10),
        truncate(acme, source, "gadgets", 20),
        gadget(30),
        event(
            acme,
            source,
            Insert,
            "devices",
            40,
            json!({ "device_id": "d1" }),
            Some(json!({ "device_id": "d1", "name": "mapped by convention" })),
            &[],
        ),
    ];
    let published: Vec<bus::Message> = envelopes.iter().map(message).collect();
    bus::Bus::publish(&bus, &published).await.unwrap();
    let writer = start_bronze_writer(&database, bus.clone());
    wait_for_bronze(&database, acme, 4).await;
    drop(writer);

    let deliveries: Vec<Delivery> = envelopes.iter().map(delivery).collect();
    let outcome = pipeline::materializer::apply(&database.service, &deliveries)
        .await
        .unwrap();
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
    assert_eq!(dead_letters(&test_database, acme).await, 0);
    let listed = unmapped_tables(&database, acme).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let gadgets = &listed[0];
    assert_eq!(
        (
            gadgets.source_id,
            gadgets.schema_name.as_str(),
            gadgets.table_name.as_str(),
            gadgets.events
        ),
        (*source.as_uuid(), "public", "gadgets", 3)
    );
    assert_eq!(
        (gadgets.first_seen_at, gadgets.last_seen_at),
        (
            base_time() + time::Duration::milliseconds(10),
            base_time() + time::Duration::milliseconds(30)
        )
    );
    assert!(
        unmapped_tables(&database, globex).await.is_empty(),
        "another workspace sees none of them"
    );
    assert_eq!(
        devices(&test_database, acme)
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["d1"],
        "nothing of the unmapped table reached the read models"
    );

    // Mapped: the table leaves the list, and a rebuild applies its events, the truncate too.
    map_gadgets_as_devices(&database, acme, source).await;
    assert!(unmapped_tables(&database, acme).await.is_empty());
    let rebuilt = pipeline::materializer::rebuild(&database.service, acme)
        .await
        .unwrap();
    assert_eq!((rebuilt.events, rebuilt.dead_lettered), (4, 0));
    let truncated_at = base_time() + time::Duration::milliseconds(20);
    let seen = devices(&test_database, acme).await;
    assert_eq!(
        seen,
        BTreeMap::from([
            (
                "d1".to_owned(),
                (Some("mapped by convention".to_owned()), 40, None)
            ),
            ("g10".to_owned(), (None, 20, Some(truncated_at))),
            ("g30".to_owned(), (Some("x".to_owned()), 30, None)),
        ])
    );
    let stored: i64 =
        sqlx::query_scalar("select count(*) from pipeline.unmapped_tables where tenant_id = $1")
            .bind(acme.as_uuid())
            .fetch_one(&mut test_database.service().await)
            .await
            .unwrap();
    assert_eq!(
        stored, 0,
        "the rebuild recounts what is still unmapped: nothing"
    );

    // Exactly once: a second rebuild and a redelivery of the batch change nothing.
    let after_rebuild = checksums(&database, acme).await;
    pipeline::materializer::rebuild(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(checksums(&database, acme).await, after_rebuild);
    let again = pipeline::materializer::apply(&database.service, &deliveries)
        .await
        .unwrap();
    assert!(again.dead_lettered.is_empty());
    assert_eq!(checksums(&database, acme).await, after_rebuild);
    assert_eq!(dead_letters(&test_database, acme).await, 0);
}
