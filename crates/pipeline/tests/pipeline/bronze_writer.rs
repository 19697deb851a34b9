//! The bronze writer stores every event once, however often it is delivered.

use std::time::Duration;

use bus::Bus;
use domain::SourceId;
use test_support::TestDatabase;

use crate::support::{envelope, message, start_bronze_writer, tenant, wait_for_bronze};

#[tokio::test]
async fn every_event_lands_once_even_when_published_again_long_after() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    let _writer = start_bronze_writer(&database, bus.clone());
    let (acme, globex) = (
        tenant(&database, "Acme").await,
        tenant(&database, "Globex").await,
    );
    let source = SourceId::new_random();

    let envelopes: Vec<_> = (0..300)
        .map(|n| {
            envelope(
                if n % 3 == 0 { globex } else { acme },
                source,
                n,
                time::Duration::hours(i64::from(n % 50)),
                "devices",
            )
        })
        .collect();
    let messages: Vec<_> = envelopes.iter().map(message).collect();
    bus.publish(&messages).await.unwrap();
    wait_for_bronze(&database, acme, 200).await;
    wait_for_bronze(&database, globex, 100).await;

    // The same events again under other bus message ids, as after the bus's duplicate window:
    // the bus cannot tell, bronze must.
    let request = uuid::Uuid::new_v4();
    let again: Vec<_> = envelopes
        .iter()
        .map(|envelope| bus::Message {
            id: envelope.event.event_id.for_replay(&request),
            ..message(envelope)
        })
        .collect();
    bus.publish(&again).await.unwrap();
    let marker = envelope(acme, source, 10_000, time::Duration::ZERO, "devices");
    bus.publish(&[message(&marker)]).await.unwrap();
    wait_for_bronze(&database, acme, 201).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(count, 201, "re-delivered events added rows");
    let ids = store::service::bronze::tenant_event_ids(&database.service, acme)
        .await
        .unwrap();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(ids.len(), distinct.len());
}

#[tokio::test]
async fn what_bronze_refuses_goes_to_the_tenants_dlq_and_the_rest_of_the_batch_lands() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let good: Vec<_> = (0..5)
        .map(|n| envelope(acme, source, n, time::Duration::ZERO, "devices"))
        .collect();
    // PostgreSQL's jsonb cannot hold U+0000 (the edge refuses it; a foreign publisher might not).
    let mut poison = envelope(acme, source, 99, time::Duration::ZERO, "devices");
    poison
        .event
        .after
        .as_mut()
        .unwrap()
        .insert("name".into(), serde_json::json!("a\u{0}b"));
    let mut messages: Vec<_> = good.iter().map(message).collect();
    messages.insert(2, message(&poison));
    messages.push(bus::Message {
        tenant: acme,
        id: domain::EventId::from_uuid(uuid::Uuid::now_v7()),
        payload: bytes::Bytes::from_static(b"not json"),
    });
    bus.publish(&messages).await.unwrap();
    let _writer = start_bronze_writer(&database, bus.clone());
    wait_for_bronze(&database, acme, 5).await;

    let mut admin = test_database.admin().await;
    let letters: Vec<(String, i32, bool)> = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let letters: Vec<(String, i32, bool)> = sqlx::query_as(
                "select reason_code, attempts, message is not null from pipeline.dlq \
                 where tenant_id = $1 order by reason_code",
            )
            .bind(acme.as_uuid())
            .fetch_all(&mut admin)
            .await
            .unwrap();
            if letters.len() == 2 || std::time::Instant::now() > deadline {
                break letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        letters,
        [
            ("bronze_rejected".to_owned(), 1, true),
            ("undecodable_message".to_owned(), 1, true)
        ]
    );
}
