//! On the embedded bus, bronze is the log: the edge's events are written to bronze in the
//! transaction that makes them durable, the log keeps only their place, and consumers receive
//! each event rebuilt from its bronze row exactly as it was published.

use std::time::Duration;

use bus::bronze::StoredEvent;
use bus::{Bus, Consumer};
use domain::SourceId;
use sqlx::Row;
use test_support::TestDatabase;

use crate::support::{envelope, tenant};

/// Receives `expected` deliveries from `consumer` and acks them, failing after 30 s.
async fn receive_all(consumer: &mut impl Consumer, expected: usize) -> Vec<bus::Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut received = Vec::new();
    while received.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {expected} deliveries",
            received.len()
        );
        let batch = consumer
            .next_batch(expected - received.len(), Duration::from_millis(200))
            .await
            .unwrap();
        consumer.ack(&batch).await.unwrap();
        received.extend(batch);
    }
    received
}

#[tokio::test]
async fn the_edges_events_are_written_to_bronze_with_their_place_and_delivered_as_published() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    assert!(bus.keeps_bronze());
    let (acme, globex) = (
        tenant(&database, "Acme").await,
        tenant(&database, "Globex").await,
    );
    let source = SourceId::new_random();
    let mut published: Vec<protocol::Envelope> = (0..300)
        .map(|n| {
            let mut envelope = envelope(
                if n % 3 == 0 { globex } else { acme },
                source,
                n,
                // Several days: several of bronze's daily partitions.
                time::Duration::hours(i64::from(n % 80)),
                "devices",
            );
            // Nanoseconds the bronze key truncates to microseconds.
            envelope.event.event_time += time::Duration::nanoseconds(i64::from(n) * 1_001);
            envelope
        })
        .collect();
    // What jsonb alone would change (a negative zero), and the optional parts of an event.
    let special = &mut published[1].event;
    special
        .after
        .as_mut()
        .unwrap()
        .insert("reading".into(), serde_json::json!(-0.0));
    special.op = protocol::Op::Update;
    special.unchanged = vec!["notes".into()];
    special.types = std::sync::Arc::new(
        [("id".to_owned(), "integer".to_owned())]
            .into_iter()
            .collect(),
    );
    let events: Vec<StoredEvent> = published
        .iter()
        .cloned()
        .map(|envelope| StoredEvent::new(envelope).unwrap())
        .collect();

    let receipt = bus.publish_events(events.clone()).await.unwrap();
    assert_eq!(receipt.appended(), 300);
    // In bronze when the publish returns: no bronze writer runs here.
    for (tenant, expected) in [(acme, 200), (globex, 100)] {
        let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
            .await
            .unwrap();
        assert_eq!(count, expected);
    }
    let mut service = test_database.service().await;
    let log = sqlx::query(
        "select count(*) as entries, max(octet_length(message)) as widest from pipeline.bus_log",
    )
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert_eq!(log.get::<i64, _>("entries"), 300);
    assert_eq!(
        log.get::<i32, _>("widest"),
        25,
        "the log keeps each event's place, not its bytes"
    );

    // Consumers receive every event, in order per tenant, as it was published.
    let mut reader = bus.consumer("reader", None).await.unwrap();
    let received = receive_all(&mut reader, 300).await;
    let mut expected_order: Vec<_> = published.iter().map(|e| e.event.event_id).collect();
    let mut received_order: Vec<_> = received.iter().map(|d| d.message.id).collect();
    for tenant in [acme, globex] {
        let of = |ids: &mut Vec<domain::EventId>, source: &[protocol::Envelope]| {
            ids.retain(|id| {
                source
                    .iter()
                    .any(|e| e.event.event_id == *id && e.tenant_id == tenant)
            });
            ids.clone()
        };
        let mut expected_ids = expected_order.clone();
        let mut received_ids = received_order.clone();
        assert_eq!(
            of(&mut received_ids, &published),
            of(&mut expected_ids, &published),
            "a tenant's order"
        );
    }
    expected_order.sort();
    received_order.sort();
    assert_eq!(received_order, expected_order);
    for delivery in &received {
        let envelope: protocol::Envelope =
            serde_json::from_slice(&delivery.message.payload).unwrap();
        let original = published
            .iter()
            .find(|e| e.event.event_id == delivery.message.id)
            .unwrap();
        let mut wanted = original.clone();
        let time = wanted.event.event_time;
        wanted.event.event_time = time
            .replace_nanosecond(time.nanosecond() / 1_000 * 1_000)
            .unwrap();
        assert_eq!(envelope, wanted, "event {}", delivery.message.id);
        assert_eq!(delivery.message.tenant, original.tenant_id);
    }
    let negative_zero = received
        .iter()
        .find(|d| d.message.id == published[1].event.event_id)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&negative_zero.message.payload).contains("-0.0"),
        "a negative zero survives bronze"
    );

    // The same batch again (an agent that did not read the answer): nothing is added anywhere,
    // and the events count once in their source's usage.
    let again = bus.publish_events(events).await.unwrap();
    assert_eq!(again.appended(), 0);
    assert!(again.duplicates().all(|duplicate| duplicate));
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(count, 200);
    let counted: i64 = sqlx::query_scalar(
        "select sum(events)::bigint from control.tenant_usage where tenant_id = $1",
    )
    .bind(acme.as_uuid())
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert_eq!(counted, 200);

    // An event deleted from bronze before a group read it (its tenant's retention ran ahead of
    // the group) is skipped; the group goes on with the rest.
    let gone = published[5].event.event_id;
    sqlx::query("delete from bronze.cdc_events where event_id = $1")
        .bind(gone.as_uuid())
        .execute(&mut service)
        .await
        .unwrap();
    let mut late = bus.consumer("late", None).await.unwrap();
    let received = receive_all(&mut late, 299).await;
    assert!(received.iter().all(|d| d.message.id != gone));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = late
        .next_batch(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(more.is_empty(), "{} deliveries more", more.len());

    // Every event gone (say the tenants were deleted): a new group receives nothing, and its
    // checkpoints still move past them, so they show as no lag and hold back no pruning.
    sqlx::query("delete from bronze.cdc_events")
        .execute(&mut service)
        .await
        .unwrap();
    let mut after = bus.consumer("after-deletion", None).await.unwrap();
    let nothing = after
        .next_batch(500, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(nothing.is_empty(), "{} deliveries", nothing.len());
    // As far behind as the group that received everything (the positions the re-published
    // batch consumed without a row count for both: the embedded lag is an upper bound).
    let lag = |group: &'static str| {
        let bus = bus.clone();
        async move {
            bus.lag(&[group])
                .await
                .unwrap()
                .into_iter()
                .map(|partition| (partition.partition, partition.behind))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(lag("after-deletion").await, lag("late").await);
}

/// What a bronze writer had not yet consumed when the embedded bus started keeping bronze
/// itself (messages appended with their bytes) is drained into bronze, after which the writer's
/// group is forgotten: it no longer holds back pruning or shows as lag.
#[tokio::test]
async fn the_bronze_writers_backlog_is_drained_and_its_group_forgotten() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    // Drains with a shutdown that never comes, failing after `limit`.
    let drain = async |limit: u64, what: &str| {
        let config = pipeline::bronze::BronzeConfig {
            batch_size: 50,
            wait: Duration::from_millis(50),
        };
        tokio::time::timeout(
            Duration::from_secs(limit),
            pipeline::bronze::drain(
                database.service.clone(),
                bus.clone(),
                config,
                std::future::pending(),
            ),
        )
        .await
        .expect(what)
        .unwrap();
    };
    drain(10, "nothing to drain: returns at once").await;

    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let backlog: Vec<_> = (0..120)
        .map(|n| {
            envelope(
                acme,
                source,
                n,
                time::Duration::minutes(i64::from(n)),
                "devices",
            )
        })
        .collect();
    // A writer that consumed part of what was published with its bytes, then stopped.
    let mut earlier = bus.consumer(pipeline::bronze::GROUP, None).await.unwrap();
    bus.publish(
        &backlog[..20]
            .iter()
            .map(crate::support::message)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    pipeline::bronze::write(&database.service, &receive_all(&mut earlier, 20).await)
        .await
        .unwrap();
    drop(earlier);
    bus.publish(
        &backlog[20..]
            .iter()
            .map(crate::support::message)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // Events the edge published since, kept in bronze by the bus.
    let kept: Vec<_> = (200..230)
        .map(|n| StoredEvent::new(envelope(acme, source, n, time::Duration::ZERO, "devices")))
        .collect::<Result<_, _>>()
        .unwrap();
    bus.publish_events(kept).await.unwrap();

    drain(30, "the backlog drains").await;
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(count, 150, "the backlog and the kept events, each once");
    let lag = bus.lag(&[pipeline::bronze::GROUP]).await.unwrap();
    assert!(lag.is_empty(), "the drained group is forgotten: {lag:?}");
    // Pruning is no longer held back by it.
    let mut reader = bus.consumer("reader", None).await.unwrap();
    receive_all(&mut reader, 150).await;
    assert_eq!(bus.prune(0).await.unwrap(), 150);
}
