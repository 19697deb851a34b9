//! What only the embedded bus has: pruning, a fixed partition count, and tables only the
//! service role can reach.

use bus::{AnyBus, Bus, BusConfig, BusError, Consumer, EmbeddedBus, Message};
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
