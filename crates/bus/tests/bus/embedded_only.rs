//! What only the embedded bus has: pruning, a fixed partition count, and tables only the
//! service role can reach.

use bus::{AnyBus, Bus, BusConfig, BusError, Consumer, EmbeddedBus, Message};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Row};

use crate::harness::{
    EmbeddedHarness, Harness, PARTITIONS, assert_nothing_more, delivered_ids, ids, message,
    receive, tenant_in_partition,
};

#[tokio::test]
async fn prune_removes_only_what_every_group_has_acked() {
    let mut harness = EmbeddedHarness::new().await;
    let bus = harness.bus().await;
    let tenant = tenant_in_partition(0);
    let published: Vec<Message> = (0..10).map(|seq| message(tenant, seq)).collect();
    bus.publish(&published).await.expect("publish");

    let mut eager = bus.consumer("eager", None).await.expect("consumer");
    receive(&mut eager, 10, true, "eager").await;
    let mut slow = bus.consumer("slow", None).await.expect("consumer");
    let received = receive(&mut slow, 10, false, "slow").await;
    slow.ack(&received[..4]).await.expect("ack");

    assert_eq!(
        bus.prune(4).await.expect("prune"),
        0,
        "the last positions below the slowest checkpoint are kept as the duplicate window"
    );
    assert_eq!(
        bus.prune(1).await.expect("prune"),
        3,
        "below the window, what both groups acked goes"
    );
    // A re-publish of an id still in the window is recognised.
    let receipt = bus.publish(&published[3..4]).await.expect("publish");
    assert_eq!(receipt.appended(), 0, "position 4 is still in the log");
    assert_eq!(bus.prune(0).await.expect("prune"), 1);
    drop(slow);
    let mut slow = bus.consumer("slow", None).await.expect("consumer");
    let rest = receive(&mut slow, 6, true, "slow after pruning").await;
    assert_eq!(delivered_ids(&rest), ids(&published[4..]));
    assert_eq!(bus.prune(0).await.expect("prune"), 6);
    assert_eq!(bus.prune(0).await.expect("prune"), 0);

    // Beyond the window a re-published id is new again: consumers must dedupe.
    bus.publish(&published[..1]).await.expect("publish");
    let again = receive(&mut eager, 1, true, "eager, re-published").await;
    assert_eq!(delivered_ids(&again), ids(&published[..1]));
    assert_nothing_more(&mut eager, "eager").await;
}

/// Retention by position never drops what a group has not checkpointed: groups acking at
/// different paces over several partitions, pruned without a window after every round, each
/// still receive every message after their checkpoint when they start again.
#[tokio::test]
async fn pruning_never_drops_what_a_group_has_not_checkpointed() {
    let mut harness = EmbeddedHarness::new().await;
    let bus = harness.bus().await;
    let tenants: Vec<_> = (0..PARTITIONS).map(tenant_in_partition).collect();
    let groups = ["fast", "medium", "slow"];
    let mut consumers = Vec::new();
    for group in groups {
        consumers.push(bus.consumer(group, None).await.expect("consumer"));
    }
    let mut rng = crate::harness::Rng::new(7);
    let mut published: Vec<Message> = Vec::new();
    let mut acked: Vec<std::collections::BTreeSet<uuid::Uuid>> = vec![Default::default(); 3];
    for round in 0..6u64 {
        let batch: Vec<Message> = (0..40)
            .map(|seq| {
                message(
                    tenants[rng.below(PARTITIONS as u64) as usize],
                    round * 40 + seq,
                )
            })
            .collect();
        bus.publish(&batch).await.expect("publish");
        published.extend(batch);
        for (index, consumer) in consumers.iter_mut().enumerate() {
            // fast acks everything, medium about half, slow nothing until the end.
            let take = match index {
                0 => 40,
                1 => 20,
                _ => 0,
            };
            if take > 0 {
                let received = receive(consumer, take, true, groups[index]).await;
                acked[index].extend(delivered_ids(&received));
            }
        }
        bus.prune(0).await.expect("prune");
    }
    for (index, (group, old)) in groups.iter().zip(consumers).enumerate() {
        // A new consumer of the group starts from its checkpoint: it must find in the log
        // every message it has not received, whatever pruning removed meanwhile.
        drop(old);
        let mut consumer = bus.consumer(group, None).await.expect("consumer");
        let missing: std::collections::BTreeSet<uuid::Uuid> =
            ids(&published).difference(&acked[index]).copied().collect();
        crate::harness::receive_all_of(&mut consumer, &missing, group).await;
    }
}

#[tokio::test]
async fn a_partition_without_any_group_keeps_everything() {
    let mut harness = EmbeddedHarness::new().await;
    let bus = harness.bus().await;
    let published: Vec<Message> = (0..5)
        .map(|seq| message(tenant_in_partition(1), seq))
        .collect();
    bus.publish(&published).await.expect("publish");
    // A group registered only on partition 0 says nothing about partition 1.
    let _zero = bus.consumer("zero", Some(vec![0])).await.expect("consumer");
    assert_eq!(bus.prune(0).await.expect("prune"), 0);
    let mut late = bus.consumer("late", Some(vec![1])).await.expect("consumer");
    let received = receive(&mut late, 5, true, "late group").await;
    assert_eq!(delivered_ids(&received), ids(&published));
}

#[tokio::test]
async fn a_different_partition_count_is_refused() {
    let mut harness = EmbeddedHarness::new().await;
    let _bus = harness.bus().await;
    let database = harness.database().connect().await;
    let error = EmbeddedBus::open(database.service.clone(), PARTITIONS * 2)
        .await
        .expect_err("a second partition count");
    assert!(
        matches!(
            error,
            BusError::PartitionCountMismatch {
                existing: PARTITIONS,
                configured
            } if configured == PARTITIONS * 2
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    EmbeddedBus::open(database.service.clone(), PARTITIONS)
        .await
        .expect("the same count again");
}

#[tokio::test]
async fn the_default_setting_opens_the_embedded_bus() {
    let harness = EmbeddedHarness::new().await;
    let database = harness.database().connect().await;
    let config: BusConfig = "embedded".parse().expect("setting");
    let bus = AnyBus::connect(&config, &database.service)
        .await
        .expect("connect");
    assert!(matches!(bus, AnyBus::Embedded(_)));
    assert_eq!(bus.partitions(), 16);
    let published = vec![message(domain::TenantId::new_random(), 1)];
    bus.publish(&published).await.expect("publish");
    let mut consumer = bus.consumer("any", None).await.expect("consumer");
    let received = receive(&mut consumer, 1, true, "any bus").await;
    assert_eq!(delivered_ids(&received), ids(&published));
    assert_eq!(
        received[0].partition,
        bus::partition_of(published[0].tenant, 16)
    );
}

/// The bus tables mix tenants, so no request role may reach them; the catalog lint checks RLS
/// and policies, this checks the grants.
#[tokio::test]
async fn only_the_service_role_can_reach_the_bus_tables() {
    let harness = EmbeddedHarness::new().await;
    let mut admin = harness.database().admin().await;
    for table in ["pipeline.bus_log", "pipeline.bus_partition_head"] {
        for role in store::catalog::REQUEST_ROLES {
            let row = sqlx::query(
                "select has_table_privilege($1, $2::regclass, 'select') as s, \
                        has_table_privilege($1, $2::regclass, 'insert') as i, \
                        has_table_privilege($1, $2::regclass, 'update') as u, \
                        has_table_privilege($1, $2::regclass, 'delete') as d",
            )
            .bind(role)
            .bind(table)
            .fetch_one(&mut admin)
            .await
            .expect("privileges");
            for privilege in ["s", "i", "u", "d"] {
                let granted: bool = row.get(privilege);
                assert!(!granted, "{role} has {privilege} on {table}");
            }
        }
        let readable: bool =
            sqlx::query_scalar("select has_table_privilege('tributary_service', $1, 'select')")
                .bind(table)
                .fetch_one(&mut admin)
                .await
                .expect("privilege");
        assert!(readable, "the service role cannot read {table}");
    }
    // And as the request path's login, even after switching to a tenant role.
    let mut app = sqlx::PgConnection::connect_with(&harness.database().settings().app_options())
        .await
        .expect("connect as the app role");
    let error = sqlx::query("select count(*) from pipeline.bus_log")
        .execute(&mut app)
        .await
        .expect_err("the app role reads the bus log");
    assert_eq!(sqlstate(&error), "42501", "{error:?}");
    sqlx::raw_sql("begin; set local role tributary_tenant_owner")
        .execute(&mut app)
        .await
        .expect("switch to a tenant role");
    let error = sqlx::query("select count(*) from pipeline.bus_log")
        .execute(&mut app)
        .await
        .expect_err("a tenant owner reads the bus log");
    assert_eq!(sqlstate(&error), "42501", "{error:?}");
}

fn sqlstate(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .map(|code| code.into_owned())
            .unwrap_or_default(),
        other => format!("not a database error: {other}"),
    }
}

/// The edge's batches that arrive while an append commits are appended together in the next
/// transaction, each answered with its own receipt; a batch the database refuses fails alone;
/// a caller that goes away while it leads an append does not take the others' batches with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arriving_during_a_commit_are_appended_together_and_a_refused_one_fails_alone() {
    use bus::bronze::StoredEvent;
    use domain::{Plan, SourceId, TenantAttributes};

    let harness = EmbeddedHarness::new().await;
    let database = harness.database().connect().await;
    let attributes = TenantAttributes::parse("Acme", Plan::Team, "energy", "eu").unwrap();
    let tenant =
        store::control::create_tenant(&database.app, store::Actor::Cli("test".into()), &attributes)
            .await
            .unwrap()
            .tenant_id;
    // The next append holds its transaction open a while, so the others queue behind it.
    // How many of the next appends hold their transaction open a while.
    let slow = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hook: bus::AppendHook = {
        let slow = slow.clone();
        Arc::new(move || {
            let wait = slow
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |left| left.checked_sub(1),
                )
                .is_ok();
            Box::pin(tokio::time::sleep(Duration::from_millis(if wait {
                300
            } else {
                0
            })))
        })
    };
    let bus = EmbeddedBus::open(database.service.clone(), PARTITIONS)
        .await
        .unwrap()
        .with_append_hook(hook);
    let source = SourceId::new_random();
    let event = |n: u32, note: &str| {
        let lsn = domain::Lsn(0x1_0000_0000 + u64::from(n) * 64);
        let event_time = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
        StoredEvent::new(protocol::Envelope {
            tenant_id: tenant,
            source_id: source,
            event: protocol::ChangeEvent {
                event_id: domain::EventId::derive(source, millis, lsn, 0),
                op: protocol::Op::Insert,
                schema: "public".into(),
                table: "devices".into(),
                lsn,
                seq: 0,
                xid: None,
                event_time,
                key: serde_json::json!({ "id": n }).as_object().unwrap().clone(),
                after: Some(
                    serde_json::json!({ "id": n, "note": note })
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                before: None,
                unchanged: Vec::new(),
                types: Default::default(),
            },
            replay: None,
        })
        .unwrap()
    };
    let batch = |from: u32| {
        (from..from + 50)
            .map(|n| event(n, "ok"))
            .collect::<Vec<_>>()
    };
    let publish = |events: Vec<StoredEvent>| {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish_events(events).await })
    };

    // A slow append, and seven batches queued behind it; one repeats ten events of another.
    slow.store(1, std::sync::atomic::Ordering::SeqCst);
    let leader = publish(batch(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued: Vec<_> = (1..=6u32).map(|index| publish(batch(index * 50))).collect();
    let mut repeating = batch(1000);
    repeating.extend(batch(50).into_iter().take(10));
    let repeating = publish(repeating);
    assert_eq!(leader.await.unwrap().unwrap().appended(), 50);
    for task in queued {
        assert_eq!(task.await.unwrap().unwrap().appended(), 50);
    }
    let duplicates: Vec<bool> = repeating.await.unwrap().unwrap().duplicates().collect();
    assert_eq!(duplicates[..50], [false; 50]);
    // Appended in the same transaction as batch 50's own publish, or after it: a duplicate.
    assert_eq!(duplicates[50..], [true; 10]);
    let mut service = harness.database().service().await;
    let transactions = async |service: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("select count(distinct xmin::text) from bronze.cdc_events")
            .fetch_one(service)
            .await
            .unwrap()
    };
    assert_eq!(
        transactions(&mut service).await,
        2,
        "the slow append, then the seven batches queued behind it together"
    );

    // A group holding a batch with a value jsonb cannot store (U+0000, which the edge's
    // decoding refuses; here it reaches the bus): it fails alone, the others are appended.
    slow.store(1, std::sync::atomic::Ordering::SeqCst);
    let leader = publish(batch(3000));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut poisoned = batch(4000);
    poisoned[7] = event(4007, "a\u{0}b");
    let refused = publish(poisoned);
    let accepted: Vec<_> = [5000, 6000].map(|from| publish(batch(from))).into();
    assert_eq!(leader.await.unwrap().unwrap().appended(), 50);
    assert!(refused.await.unwrap().is_err(), "the refused batch fails");
    for task in accepted {
        assert_eq!(task.await.unwrap().unwrap().appended(), 50);
    }
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
        .await
        .unwrap();
    assert_eq!(
        count,
        8 * 50 + 3 * 50,
        "every accepted batch once, nothing of the refused one"
    );

    // The caller leading a grouped append goes away (its client disconnected) while it
    // appends: the append goes on, and the batch it took from another caller is answered.
    slow.store(2, std::sync::atomic::Ordering::SeqCst);
    let first = publish(batch(7000));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let leaving = publish(batch(8000));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let staying = publish(batch(9000));
    assert_eq!(first.await.unwrap().unwrap().appended(), 50);
    // `leaving` queued first, so it leads the append of both batches, which now sleeps.
    tokio::time::sleep(Duration::from_millis(100)).await;
    leaving.abort();
    assert_eq!(staying.await.unwrap().unwrap().appended(), 50);
    let (count, _) = store::service::bronze::tenant_fingerprint(&database.service, tenant)
        .await
        .unwrap();
    assert_eq!(
        count,
        8 * 50 + 3 * 50 + 3 * 50,
        "the leaving caller's batch too"
    );
}
