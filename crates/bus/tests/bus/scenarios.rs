//! The contract of `bus::Bus` and `bus::Consumer` as scenarios, each generic over the
//! implementation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bus::{Bus, Consumer, Delivery, Message, partition_of};
use domain::TenantId;
use uuid::Uuid;

use crate::harness::{
    DEADLINE, Harness, PARTITIONS, Rng, assert_nothing_more, assert_ordered, delivered_ids, ids,
    message, receive, receive_all_of, seq_of, tenant_in_partition,
};

/// Each tenant's messages arrive in the order they were published, in the tenant's partition;
/// a consumer of some partitions receives exactly those partitions' messages.
pub async fn order_is_preserved_per_tenant(mut harness: impl Harness) {
    let bus = harness.bus().await;
    assert_eq!(bus.partitions(), PARTITIONS);
    // Two tenants share partition 0, so their messages interleave in one partition.
    let tenants = [
        tenant_in_partition(0),
        tenant_in_partition(0),
        tenant_in_partition(1),
        tenant_in_partition(2),
        tenant_in_partition(3),
    ];
    let mut published = Vec::new();
    for call in 0..10u64 {
        let mut batch = Vec::new();
        for seq in call * 10..call * 10 + 10 {
            for tenant in &tenants {
                batch.push(message(*tenant, seq));
            }
        }
        bus.publish(&batch).await.expect("publish");
        published.extend(batch);
    }

    let mut consumer = bus.consumer("order", None).await.expect("consumer");
    let received = receive(&mut consumer, published.len(), true, "all partitions").await;
    assert_ordered(&received, "all partitions");
    assert_eq!(delivered_ids(&received), ids(&published));
    for tenant in &tenants {
        let seqs: Vec<u64> = received
            .iter()
            .filter(|delivery| delivery.message.tenant == *tenant)
            .map(seq_of)
            .collect();
        assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "tenant {tenant}");
    }
    // The payload and tenant arrive as published.
    let by_id: HashMap<Uuid, &Message> = published
        .iter()
        .map(|message| (*message.id.as_uuid(), message))
        .collect();
    for delivery in &received {
        assert_eq!(&delivery.message, by_id[delivery.message.id.as_uuid()]);
    }

    let mut partition_zero = bus
        .consumer("order-p0", Some(vec![0]))
        .await
        .expect("consumer of partition 0");
    let expected: Vec<&Message> = published
        .iter()
        .filter(|message| partition_of(message.tenant, PARTITIONS) == 0)
        .collect();
    let received = receive(&mut partition_zero, expected.len(), true, "partition 0").await;
    assert_ordered(&received, "partition 0");
    assert_eq!(delivered_ids(&received), ids(expected));
    assert_nothing_more(&mut partition_zero, "partition 0").await;
}

/// Two groups each receive every message, whatever the other acks.
pub async fn groups_receive_everything_independently(mut harness: impl Harness) {
    let bus = harness.bus().await;
    let tenants: Vec<TenantId> = (0..5).map(|_| TenantId::new_random()).collect();
    let first: Vec<Message> = (0..200)
        .map(|seq| message(tenants[seq as usize % tenants.len()], seq))
        .collect();
    bus.publish(&first).await.expect("publish");

    let mut bronze = bus.consumer("bronze", None).await.expect("consumer");
    let mut analytics = bus.consumer("analytics", None).await.expect("consumer");
    let received = receive(&mut bronze, first.len(), true, "bronze").await;
    assert_eq!(delivered_ids(&received), ids(&first), "bronze");
    // The other group has acked nothing and still receives everything.
    let received = receive(&mut analytics, first.len(), false, "analytics").await;
    assert_eq!(delivered_ids(&received), ids(&first), "analytics");
    analytics.ack(&received).await.expect("ack");

    let second: Vec<Message> = (200..250)
        .map(|seq| message(tenants[seq as usize % tenants.len()], seq))
        .collect();
    bus.publish(&second).await.expect("publish");
    for (consumer, group) in [(&mut bronze, "bronze"), (&mut analytics, "analytics")] {
        let received = receive(consumer, second.len(), true, group).await;
        assert_eq!(delivered_ids(&received), ids(&second), "{group}");
        assert_nothing_more(consumer, group).await;
    }
}

/// What a dropped consumer received but did not ack goes to the group's next consumer, in
/// order, and what it acked does not.
pub async fn unacked_deliveries_go_to_the_next_consumer(mut harness: impl Harness) {
    let bus = harness.bus().await;
    let tenants = [
        tenant_in_partition(0),
        tenant_in_partition(1),
        tenant_in_partition(1),
    ];
    let published: Vec<Message> = (0..60)
        .map(|seq| message(tenants[seq as usize % tenants.len()], seq))
        .collect();
    bus.publish(&published).await.expect("publish");

    let mut first = bus.consumer("redeliver", None).await.expect("consumer");
    let received = receive(&mut first, published.len(), false, "first consumer").await;
    // Ack the first half of what each partition delivered; keep the rest unacked.
    let mut by_partition: BTreeMap<u32, Vec<Delivery>> = BTreeMap::new();
    for delivery in received {
        by_partition
            .entry(delivery.partition)
            .or_default()
            .push(delivery);
    }
    let mut unacked = Vec::new();
    for deliveries in by_partition.values() {
        let (acked, rest) = deliveries.split_at(deliveries.len() / 2);
        first.ack(acked).await.expect("ack");
        unacked.extend(rest.iter().map(|delivery| delivery.message.clone()));
    }
    drop(first);

    let mut second = bus.consumer("redeliver", None).await.expect("consumer");
    let received = receive(&mut second, unacked.len(), true, "second consumer").await;
    assert_eq!(delivered_ids(&received), ids(&unacked));
    assert_ordered(&received, "second consumer");
    assert_nothing_more(&mut second, "second consumer").await;
}

/// Once acked, a delivery is not received again by the group, even when the acks came out of
/// order; what is published later is.
pub async fn acked_deliveries_are_not_delivered_again(mut harness: impl Harness) {
    let bus = harness.bus().await;
    let tenants = [tenant_in_partition(2), tenant_in_partition(3)];
    let published: Vec<Message> = (0..30)
        .map(|seq| message(tenants[seq as usize % 2], seq))
        .collect();
    bus.publish(&published).await.expect("publish");

    let mut first = bus.consumer("acked", None).await.expect("consumer");
    let received = receive(&mut first, published.len(), false, "first consumer").await;
    // Newest first, a few singly, then the rest at once.
    let mut reversed = received.clone();
    reversed.reverse();
    for delivery in &reversed[..5] {
        first
            .ack(std::slice::from_ref(delivery))
            .await
            .expect("ack");
    }
    first.ack(&reversed[5..]).await.expect("ack");
    // Acking again is harmless.
    first.ack(&received[..3]).await.expect("ack twice");
    drop(first);

    // Takeovers that receive nothing keep the group's progress too.
    for takeover in 0..2 {
        let mut idle = bus.consumer("acked", None).await.expect("consumer");
        assert_nothing_more(&mut idle, &format!("takeover {takeover}")).await;
    }
    let mut second = bus.consumer("acked", None).await.expect("consumer");
    let later: Vec<Message> = (30..40)
        .map(|seq| message(tenants[seq as usize % 2], seq))
        .collect();
    bus.publish(&later).await.expect("publish");
    let received = receive(&mut second, later.len(), true, "second consumer").await;
    assert_eq!(delivered_ids(&received), ids(&later));
    assert_nothing_more(&mut second, "second consumer").await;
}

/// A publish that returned Ok survives a restart, and so does a group's progress.
pub async fn nothing_is_lost_across_a_restart<H: Harness>(mut harness: H) {
    let bus = harness.bus().await;
    let tenants: Vec<TenantId> = (0..6).map(|_| TenantId::new_random()).collect();
    let mut published = Vec::new();
    for call in 0..5u64 {
        let batch: Vec<Message> = (call * 20..call * 20 + 20)
            .map(|seq| message(tenants[seq as usize % tenants.len()], seq))
            .collect();
        bus.publish(&batch).await.expect("publish");
        published.extend(batch);
    }
    let mut consumer = bus.consumer("survivor", None).await.expect("consumer");
    let consumed = receive(&mut consumer, 30, true, "before the restart").await;
    drop(consumer);
    drop(bus);

    harness.restart().await;

    let bus = harness.bus().await;
    let mut consumer = bus.consumer("survivor", None).await.expect("consumer");
    let consumed_ids = delivered_ids(&consumed);
    let remaining: BTreeSet<Uuid> = ids(&published).difference(&consumed_ids).copied().collect();
    let received = receive_all_of(&mut consumer, &remaining, "after the restart").await;
    let repeated: Vec<Uuid> = delivered_ids(&received)
        .intersection(&consumed_ids)
        .copied()
        .collect();
    if H::ACKS_SURVIVE_A_STORAGE_CRASH {
        assert!(
            repeated.is_empty(),
            "acked before the restart, delivered again after it: {repeated:?}"
        );
    }
    assert_ordered(&received, "after the restart");
    assert_nothing_more(&mut consumer, "after the restart").await;

    let mut newcomer = bus.consumer("newcomer", None).await.expect("consumer");
    let received = receive(&mut newcomer, published.len(), true, "a new group").await;
    assert_eq!(delivered_ids(&received), ids(&published));
    assert_ordered(&received, "a new group");
}

/// Re-publishing ids within the duplicate window adds nothing, within one call or across calls.
pub async fn republishing_within_the_window_adds_nothing(mut harness: impl Harness) {
    let bus = harness.bus().await;
    let tenants = [TenantId::new_random(), TenantId::new_random()];
    let original: Vec<Message> = (0..20)
        .map(|seq| message(tenants[seq as usize % 2], seq))
        .collect();
    bus.publish(&original).await.expect("publish");
    bus.publish(&original).await.expect("publish again");
    let fresh: Vec<Message> = (20..25)
        .map(|seq| message(tenants[seq as usize % 2], seq))
        .collect();
    let mut mixed: Vec<Message> = original[..5].to_vec();
    mixed.extend(fresh.iter().cloned());
    mixed.push(fresh[0].clone());
    bus.publish(&mixed).await.expect("publish a mix");

    let mut consumer = bus.consumer("dedupe", None).await.expect("consumer");
    let expected = original.len() + fresh.len();
    let received = receive(&mut consumer, expected, true, "deduplicated").await;
    let mut all = ids(&original);
    all.extend(ids(&fresh));
    assert_eq!(delivered_ids(&received), all);
    assert_eq!(received.len(), all.len(), "a duplicate was delivered");
    assert_nothing_more(&mut consumer, "deduplicated").await;
}

/// Several publishers append concurrently (for the embedded bus, with random sleeps inside
/// their append transactions) while a consumer polls and acks: at the end it has received the
/// union of everything published, for several seeds. A log whose positions could commit out of
/// order would let the consumer skip a late commit.
pub async fn concurrent_publishers_leave_no_gaps(mut harness: impl Harness) {
    for seed in 1..=4u64 {
        let publish_bus = harness.slow_append_bus(seed).await;
        let consume_bus = harness.bus().await;
        // Every publisher has a tenant of its own in partition 0, where they all contend, and
        // one batch in three also touches a shared tenant of partition 1.
        let shared = tenant_in_partition(1);
        let publishing_done = Arc::new(AtomicBool::new(false));
        let mut tenants_of_seed = BTreeSet::from([shared]);
        let mut publishers = tokio::task::JoinSet::new();
        for publisher in 0..4u64 {
            let bus = publish_bus.clone();
            let own = tenant_in_partition(0);
            tenants_of_seed.insert(own);
            let mut rng = Rng::new(seed * 1_000 + publisher);
            publishers.spawn(async move {
                let mut published = Vec::new();
                for round in 0..25u64 {
                    let size = 1 + rng.below(8);
                    let mut batch: Vec<Message> = (0..size)
                        .map(|index| message(own, round * 100 + index))
                        .collect();
                    if rng.below(3) == 0 {
                        batch.push(message(shared, publisher * 10_000 + round));
                    }
                    bus.publish(&batch).await.expect("publish");
                    published.extend(batch);
                    tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
                }
                published
            });
        }

        let consumer_done = publishing_done.clone();
        let group = format!("gaps-{seed}");
        let tenants = tenants_of_seed.clone();
        let consumer = tokio::spawn(async move {
            let mut consumer = consume_bus.consumer(&group, None).await.expect("consumer");
            let mut received = Vec::new();
            // Poll while the publishers run, then until nothing more arrives.
            loop {
                let batch = consumer
                    .next_batch(50, Duration::from_millis(20))
                    .await
                    .expect("next_batch");
                if batch.is_empty() && consumer_done.load(Ordering::SeqCst) {
                    let tail = consumer
                        .next_batch(1_000, Duration::from_millis(500))
                        .await
                        .expect("next_batch");
                    if tail.is_empty() {
                        break;
                    }
                    consumer.ack(&tail).await.expect("ack");
                    received.extend(tail);
                    continue;
                }
                consumer.ack(&batch).await.expect("ack");
                received.extend(batch);
            }
            received
                .into_iter()
                .filter(|delivery| tenants.contains(&delivery.message.tenant))
                .collect::<Vec<Delivery>>()
        });

        let mut published = Vec::new();
        while let Some(result) = publishers.join_next().await {
            published.extend(result.expect("publisher task"));
        }
        publishing_done.store(true, Ordering::SeqCst);
        let received = tokio::time::timeout(DEADLINE, consumer)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: the consumer did not finish in {DEADLINE:?}"))
            .expect("consumer task");

        let published_ids = ids(&published);
        let received_ids = delivered_ids(&received);
        let missing: Vec<&Uuid> = published_ids.difference(&received_ids).collect();
        let unexpected: Vec<&Uuid> = received_ids.difference(&published_ids).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "seed {seed}: {} published, {} received; missing {missing:?}, unexpected {unexpected:?}",
            published_ids.len(),
            received_ids.len()
        );
        assert_eq!(received.len(), published.len(), "seed {seed}: duplicates");
        // Within each publisher's own tenant, the order of publishing is kept.
        let own_tenants: Vec<TenantId> = tenants_of_seed
            .iter()
            .copied()
            .filter(|tenant| *tenant != shared)
            .collect();
        let of_own: Vec<Delivery> = received
            .iter()
            .filter(|delivery| own_tenants.contains(&delivery.message.tenant))
            .cloned()
            .collect();
        crate::harness::assert_ordered(&of_own, &format!("seed {seed}"));
    }
}

/// A group's lag on a partition is what it has not acked there: every message before it reads
/// any, the rest after it acks some, nothing once it acks all. Groups that never consumed are
/// not reported.
pub async fn lag_counts_what_a_group_has_not_acked(mut harness: impl Harness) {
    let bus = harness.bus().await;
    let (zero, one) = (tenant_in_partition(0), tenant_in_partition(1));
    let published: Vec<Message> = (0..10)
        .map(|seq| message(zero, seq))
        .chain((0..5).map(|seq| message(one, seq)))
        .collect();
    bus.publish(&published).await.expect("publish");

    let mut consumer = bus.consumer("lagging", None).await.expect("consumer");
    let received = receive(&mut consumer, published.len(), false, "lagging").await;
    assert_lag(&bus, &[(0, 10), (1, 5), (2, 0), (3, 0)], "nothing acked").await;

    let first_four: Vec<Delivery> = received
        .iter()
        .filter(|delivery| delivery.partition == 0)
        .take(4)
        .cloned()
        .collect();
    consumer.ack(&first_four).await.expect("ack");
    assert_lag(
        &bus,
        &[(0, 6), (1, 5), (2, 0), (3, 0)],
        "four of partition 0 acked",
    )
    .await;

    consumer.ack(&received).await.expect("ack");
    assert_lag(&bus, &[(0, 0), (1, 0), (2, 0), (3, 0)], "all acked").await;
    assert!(
        bus.lag(&["never-consumed"]).await.expect("lag").is_empty(),
        "a group without consumers has no lag to report"
    );
}

/// Waits until the lag of group `lagging` is `expected` (partition, behind) on every partition
/// (a NATS server updates a consumer's counts a moment after an ack is confirmed).
async fn assert_lag(bus: &impl Bus, expected: &[(u32, u64)], what: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let lags = bus.lag(&["lagging"]).await.expect("lag");
        let found: Vec<(u32, u64)> = lags
            .iter()
            .map(|lag| {
                assert_eq!(lag.group, "lagging");
                (lag.partition, lag.behind)
            })
            .collect();
        if found == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: lag {found:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
