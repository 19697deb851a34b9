//! What only the NATS bus has: the stream's settings, durable consumers per (group,
//! partition), and messages on its subjects that it did not publish.

use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use bus::{AnyBus, Bus, BusConfig, Message, NatsBus};
use futures_util::TryStreamExt;
use test_support::TestDatabase;

use crate::harness::{
    Harness, NatsHarness, PARTITIONS, assert_nothing_more, delivered_ids, ids, message, receive,
    tenant_in_partition,
};

async fn jetstream(harness: &NatsHarness) -> async_nats::jetstream::Context {
    let servers = harness.config().servers.clone();
    let client = async_nats::connect(servers).await.expect("connect");
    async_nats::jetstream::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_file_backed_and_follows_the_configuration() {
    let harness = NatsHarness::new(false).await;
    let mut config = harness.config().clone();
    config.duplicate_window = Duration::from_secs(300);
    NatsBus::connect(&config, PARTITIONS)
        .await
        .expect("connect");
    let jetstream = jetstream(&harness).await;
    let mut stream = jetstream.get_stream(&config.stream).await.expect("stream");
    let info = stream.info().await.expect("stream info").config.clone();
    assert_eq!(info.storage, StorageType::File);
    assert_eq!(info.duplicate_window, Duration::from_secs(300));
    assert_eq!(info.num_replicas, 1);
    assert_eq!(info.subjects, vec![format!("{}.*", config.subject_prefix)]);

    // Connecting with other settings updates the stream.
    config.duplicate_window = Duration::from_secs(60);
    NatsBus::connect(&config, PARTITIONS)
        .await
        .expect("connect again");
    let info = stream.info().await.expect("stream info").config.clone();
    assert_eq!(info.duplicate_window, Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_leaves_one_durable_consumer_per_partition() {
    let mut harness = NatsHarness::new(false).await;
    let bus = harness.bus().await;
    let published: Vec<Message> = (0..8)
        .map(|seq| message(tenant_in_partition(1), seq))
        .collect();
    bus.publish(&published).await.expect("publish");
    for round in 0..3 {
        let mut consumer = bus.consumer("takeover", None).await.expect("consumer");
        // Take everything, ack nothing: every round receives it all again.
        let received = receive(&mut consumer, published.len(), false, "takeover").await;
        assert_eq!(delivered_ids(&received), ids(&published), "round {round}");
    }
    let jetstream = jetstream(&harness).await;
    let stream = jetstream
        .get_stream(&harness.config().stream)
        .await
        .expect("stream");
    let mut names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .expect("consumer names");
    names.sort();
    let expected: Vec<String> = (0..PARTITIONS)
        .map(|partition| format!("takeover-p{partition}-g2"))
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_bus_did_not_publish_is_skipped() {
    let mut harness = NatsHarness::new(false).await;
    let bus = harness.bus().await;
    let tenant = tenant_in_partition(2);
    let jetstream = jetstream(&harness).await;
    jetstream
        .publish(harness.config().subject(2), "no headers".into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    let published = vec![message(tenant, 1)];
    bus.publish(&published).await.expect("publish");
    let mut consumer = bus
        .consumer("strict", Some(vec![2]))
        .await
        .expect("consumer");
    let received = receive(&mut consumer, 1, true, "strict").await;
    assert_eq!(delivered_ids(&received), ids(&published));
    assert_nothing_more(&mut consumer, "strict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_string_opens_the_nats_bus() {
    let harness = NatsHarness::new(false).await;
    let database = TestDatabase::new().await.connect().await;
    let nats = harness.config();
    let setting = format!(
        "{}?partitions=8&stream={}&subjects={}&duplicate_window=90s&ack_wait=10s",
        nats.servers, nats.stream, nats.subject_prefix
    );
    let config: BusConfig = setting.parse().expect("setting");
    let bus = AnyBus::connect(&config, &database.service)
        .await
        .expect("connect");
    assert!(matches!(bus, AnyBus::Nats(_)));
    assert_eq!(bus.partitions(), 8);
    let published = vec![message(domain::TenantId::new_random(), 1)];
    bus.publish(&published).await.expect("publish");
    let mut consumer = bus.consumer("any", None).await.expect("consumer");
    let received = receive(&mut consumer, 1, true, "any bus").await;
    assert_eq!(delivered_ids(&received), ids(&published));
    assert_eq!(
        received[0].partition,
        bus::partition_of(published[0].tenant, 8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_retryable_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let config = bus::NatsConfig::new(format!("nats://127.0.0.1:{port}"));
    let error = NatsBus::connect(&config, PARTITIONS)
        .await
        .expect_err("nothing listens there");
    assert!(error.is_retryable(), "{error:?}");
}
