//! Replay of dead letters once their cause is fixed, and of bronze ranges through the bus.

use std::time::Duration;

use bus::{Bus, Consumer};
use domain::{Role, SourceId, TenantId, UserId};
use store::replay::ReplayKind;
use store::{Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::support::{envelope, message, start_bronze_writer, tenant, wait_for_bronze};

/// A cause of dead letters that can be fixed: bronze refuses events of the `quarantine` table
/// until the constraint is dropped.
async fn quarantine(admin: &mut sqlx::PgConnection) {
    sqlx::raw_sql(
        "alter table bronze.cdc_events add constraint no_quarantine \
         check (table_name <> 'quarantine')",
    )
    .execute(admin)
    .await
    .unwrap();
}

async fn request(database: &Database, tenant: TenantId, kind: ReplayKind) -> uuid::Uuid {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: UserId::new_random(),
            role: Role::Admin,
        },
    )
    .await
    .unwrap();
    let id = store::replay::request(&mut tx, &kind).await.unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn dead_letters_replay_exactly_once_after_the_cause_is_fixed() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    // A cause that can be fixed: bronze temporarily refuses events of one table.
    let mut admin = test_database.admin().await;
    quarantine(&mut admin).await;
    let messages: Vec<_> = (0..6)
        .map(|n| {
            envelope(
                acme,
                source,
                n,
                time::Duration::ZERO,
                if n % 2 == 0 { "quarantine" } else { "devices" },
            )
        })
        .map(|envelope| message(&envelope))
        .collect();
    bus.publish(&messages).await.unwrap();
    let writer = start_bronze_writer(&database, bus.clone());
    wait_for_bronze(&database, acme, 3).await;
    drop(writer);

    // Still broken: the replay fails and counts another attempt.
    let first = request(&database, acme, ReplayKind::DeadLetters).await;
    let outcome = pipeline::replay::run_request(&database.service, &bus, acme, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            outcome.status.as_str(),
            outcome.events_replayed,
            outcome.events_failed
        ),
        ("done", 0, 3)
    );
    // An operator of the tenant sees them, with the first and the latest failure.
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: acme,
            user: UserId::new_random(),
            role: Role::Operator,
        },
    )
    .await
    .unwrap();
    let letters = store::dlq::list(&mut tx, 100).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(letters.len(), 3);
    for letter in &letters {
        assert_eq!(
            (letter.attempts, letter.reason_code.as_str()),
            (2, "bronze_rejected")
        );
        assert!(letter.last_failed_at > letter.created_at, "{letter:?}");
        assert!(letter.replayed_at.is_none());
    }

    // Fixed: the replay lands each dead letter once; replaying again does nothing.
    sqlx::raw_sql("alter table bronze.cdc_events drop constraint no_quarantine")
        .execute(&mut admin)
        .await
        .unwrap();
    let second = request(&database, acme, ReplayKind::DeadLetters).await;
    let outcome = pipeline::replay::run_request(&database.service, &bus, acme, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((outcome.events_replayed, outcome.events_failed), (3, 0));
    let third = request(&database, acme, ReplayKind::DeadLetters).await;
    let outcome = pipeline::replay::run_request(&database.service, &bus, acme, third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((outcome.events_replayed, outcome.events_failed), (0, 0));
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(count, 6);
    let ids = store::service::bronze::tenant_event_ids(&database.service, acme)
        .await
        .unwrap();
    let expected: std::collections::BTreeSet<_> = messages
        .iter()
        .map(|message| *message.id.as_uuid())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<std::collections::BTreeSet<_>>(),
        expected
    );

    // Requests are audited, and a request is carried out once.
    assert!(
        pipeline::replay::run_request(&database.service, &bus, acme, first)
            .await
            .unwrap()
            .is_none()
    );
    let reports = store::service::audit::verify(&database.service, Some(acme))
        .await
        .unwrap();
    assert!(reports[0].is_intact());
    assert!(
        reports[0].entries >= 4,
        "tenant.create + three replay.request"
    );
}

#[tokio::test]
async fn a_bronze_range_is_republished_for_downstream_consumers_without_adding_bronze_rows() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let source = SourceId::new_random();
    let mut envelopes: Vec<_> = (0..20)
        .map(|n| {
            envelope(
                acme,
                source,
                n,
                time::Duration::hours(i64::from(n)),
                "devices",
            )
        })
        .collect();
    envelopes.push(envelope(
        globex,
        source,
        500,
        time::Duration::hours(1),
        "devices",
    ));
    bus.publish(&envelopes.iter().map(message).collect::<Vec<_>>())
        .await
        .unwrap();
    let _writer = start_bronze_writer(&database, bus.clone());
    wait_for_bronze(&database, acme, 20).await;

    // A downstream consumer that has already seen everything.
    let mut downstream = bus.consumer("downstream", None).await.unwrap();
    let mut seen = 0;
    while seen < 21 {
        let batch = downstream
            .next_batch(100, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            !batch.is_empty(),
            "the downstream consumer stalled at {seen}"
        );
        seen += batch.len();
        downstream.ack(&batch).await.unwrap();
    }

    // Replay the last 10 hours (events 0..=9, committed 0 to 9 hours ago) of Acme only.
    let now = time::OffsetDateTime::now_utc();
    let request_id = request(
        &database,
        acme,
        ReplayKind::Range {
            from: now - time::Duration::minutes(9 * 60 + 30),
            to: now + time::Duration::minutes(1),
        },
    )
    .await;
    let outcome = pipeline::replay::run_request(&database.service, &bus, acme, request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (outcome.status.as_str(), outcome.events_replayed),
        ("done", 10)
    );

    let mut replayed = Vec::new();
    while replayed.len() < 10 {
        let batch = downstream
            .next_batch(100, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            !batch.is_empty(),
            "replayed events did not reach the downstream consumer"
        );
        downstream.ack(&batch).await.unwrap();
        for delivery in batch {
            let envelope: protocol::Envelope =
                serde_json::from_slice(&delivery.message.payload).unwrap();
            assert_eq!(envelope.tenant_id, acme);
            assert_eq!(envelope.replay, Some(request_id));
            assert_ne!(
                delivery.message.id, envelope.event.event_id,
                "replays travel under their own ids"
            );
            assert!(
                envelopes
                    .iter()
                    .any(|original| original.event == envelope.event),
                "the event came back unchanged"
            );
            replayed.push(envelope.event.event_id);
        }
    }
    replayed.sort();
    replayed.dedup();
    assert_eq!(replayed.len(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, acme)
        .await
        .unwrap();
    assert_eq!(
        count, 20,
        "the bronze writer saw the replays and added nothing"
    );
}

#[tokio::test]
async fn a_dlq_replay_goes_past_a_full_page_of_letters_that_fail_again() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let bus = bus::EmbeddedBus::open(database.service.clone(), 4)
        .await
        .unwrap();
    let acme = tenant(&database, "Acme").await;
    let source = SourceId::new_random();
    let mut admin = test_database.admin().await;
    quarantine(&mut admin).await;
    // More dead letters than one page (1000), all still failing.
    for n in 0..1003 {
        let envelope = envelope(acme, source, n, time::Duration::ZERO, "quarantine");
        let message = message(&envelope);
        store::service::dlq::record(
            &database.service,
            &store::dlq::DeadLetter {
                tenant: acme,
                consumer: pipeline::bronze::GROUP,
                event_id: envelope.event.event_id,
                source,
                reason_code: "bronze_rejected",
                reason: "refused".into(),
                event: serde_json::to_value(&envelope).unwrap(),
                message: message.payload.to_vec(),
            },
        )
        .await
        .unwrap();
    }
    let request_id = request(&database, acme, ReplayKind::DeadLetters).await;
    let outcome = pipeline::replay::run_request(&database.service, &bus, acme, request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (outcome.events_replayed, outcome.events_failed),
        (0, 1003),
        "every letter was tried once"
    );
}
