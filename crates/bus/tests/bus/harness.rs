//! Both implementations behind one test interface, and the helpers the scenarios share.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Consumer, Delivery, EmbeddedBus, Message, NatsBus, NatsConfig, partition_of};
use bytes::Bytes;
use domain::{EventId, TenantId};
use test_support::TestDatabase;
use test_support::nats::{NatsServer, TestNats};
use tokio::time::Instant;
use uuid::Uuid;

/// Small, so that consumers of all partitions and of some are both exercised.
pub const PARTITIONS: u32 = 4;
/// How long a scenario waits for what it expects before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How long a scenario waits to be sure nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(1_500);

/// One implementation under test, with storage that outlives any one bus handle.
pub trait Harness: Send {
    type Bus: Bus + Clone + 'static;

    /// Whether a group's acks survive a crash of the bus's storage once `ack` returned. The
    /// embedded bus commits them; a single NATS server writes consumer state to disk shortly
    /// after acking, so a `kill -9` of the server may deliver recently acked messages again
    /// (never lose any). docs/bus.md says how a NATS cluster avoids that.
    const ACKS_SURVIVE_A_STORAGE_CRASH: bool;

    /// A new handle (new connections) on the bus's storage.
    async fn bus(&mut self) -> Self::Bus;

    /// Ends every process that is not storage and restarts what can be: the NATS server is
    /// killed with SIGKILL and started again on the same store directory. The embedded bus's
    /// storage is the test's PostgreSQL, shared by the tests of this process, so there a restart
    /// is a new bus handle over new connections.
    async fn restart(&mut self);

    /// A handle whose appends hold their partitions' locks for a random few milliseconds
    /// before committing (embedded), widening the window in which a late commit could be
    /// skipped. NATS orders appends in the server, so there it is a plain handle.
    async fn slow_append_bus(&mut self, seed: u64) -> Self::Bus;
}

/// The embedded bus on a fresh migrated database, as the service role.
pub struct EmbeddedHarness {
    database: TestDatabase,
}

impl EmbeddedHarness {
    pub async fn new() -> Self {
        Self {
            database: TestDatabase::new().await,
        }
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }
}

impl Harness for EmbeddedHarness {
    type Bus = EmbeddedBus;
    const ACKS_SURVIVE_A_STORAGE_CRASH: bool = true;

    async fn bus(&mut self) -> EmbeddedBus {
        EmbeddedBus::open(self.database.connect().await.service, PARTITIONS)
            .await
            .expect("open the embedded bus")
    }

    async fn restart(&mut self) {}

    async fn slow_append_bus(&mut self, seed: u64) -> EmbeddedBus {
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let hook: bus::AppendHook = Arc::new(move || {
            let millis = rng.lock().expect("rng").below(4);
            Box::pin(tokio::time::sleep(Duration::from_millis(millis)))
        });
        self.bus().await.with_append_hook(hook)
    }
}

/// The NATS bus on a stream of its own, on a private server (or the shared one).
pub struct NatsHarness {
    server: Option<NatsServer>,
    _shared: Option<TestNats>,
    config: NatsConfig,
}

impl NatsHarness {
    /// `restartable`: a private server this test may kill, never the shared one.
    pub async fn new(restartable: bool) -> Self {
        let (server, shared, url) = if restartable {
            let server = tokio::task::block_in_place(NatsServer::start);
            let url = server.url();
            (Some(server), None, url)
        } else {
            let shared = tokio::task::block_in_place(TestNats::start);
            let url = shared.url().to_owned();
            (None, Some(shared), url)
        };
        // A stream and subjects of its own, so tests can share a server.
        let unique = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut config = NatsConfig::new(url);
        config.stream = format!("T{unique}");
        config.subject_prefix = format!("t{unique}.events");
        Self {
            server,
            _shared: shared,
            config,
        }
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }
}

impl Harness for NatsHarness {
    type Bus = NatsBus;
    const ACKS_SURVIVE_A_STORAGE_CRASH: bool = false;

    async fn bus(&mut self) -> NatsBus {
        NatsBus::connect(&self.config, PARTITIONS)
            .await
            .expect("connect to NATS and create the stream")
    }

    async fn restart(&mut self) {
        let server = self
            .server
            .as_mut()
            .expect("a restart scenario runs on a private server");
        tokio::task::block_in_place(|| server.restart());
    }

    async fn slow_append_bus(&mut self, _seed: u64) -> NatsBus {
        self.bus().await
    }
}

/// A message whose payload is `seq` in decimal.
pub fn message(tenant: TenantId, seq: u64) -> Message {
    Message {
        tenant,
        id: EventId::from_uuid(Uuid::now_v7()),
        payload: Bytes::from(seq.to_string()),
    }
}

/// The `seq` a [`message`] carries.
pub fn seq_of(delivery: &Delivery) -> u64 {
    std::str::from_utf8(&delivery.message.payload)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("payload of {delivery:?} is not a sequence number"))
}

/// A random tenant whose partition is `partition`.
pub fn tenant_in_partition(partition: u32) -> TenantId {
    loop {
        let tenant = TenantId::new_random();
        if partition_of(tenant, PARTITIONS) == partition {
            return tenant;
        }
    }
}

pub fn ids<'a>(messages: impl IntoIterator<Item = &'a Message>) -> BTreeSet<Uuid> {
    messages
        .into_iter()
        .map(|message| *message.id.as_uuid())
        .collect()
}

pub fn delivered_ids(deliveries: &[Delivery]) -> BTreeSet<Uuid> {
    ids(deliveries.iter().map(|delivery| &delivery.message))
}

/// Receives until `count` deliveries have arrived (never more), acking each batch if `ack`.
pub async fn receive(
    consumer: &mut impl Consumer,
    count: usize,
    ack: bool,
    what: &str,
) -> Vec<Delivery> {
    let deadline = Instant::now() + DEADLINE;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "{what}: received {} of {count} deliveries within {DEADLINE:?}",
            received.len()
        );
        let batch = consumer
            .next_batch(count - received.len(), Duration::from_millis(250))
            .await
            .unwrap_or_else(|error| panic!("{what}: next_batch failed: {error:?}"));
        if ack && !batch.is_empty() {
            consumer
                .ack(&batch)
                .await
                .unwrap_or_else(|error| panic!("{what}: ack failed: {error:?}"));
        }
        received.extend(batch);
    }
    received
}

/// Receives (and acks) until every id of `expected` has arrived, and returns everything received
/// on the way, duplicates and other ids included.
pub async fn receive_all_of(
    consumer: &mut impl Consumer,
    expected: &BTreeSet<Uuid>,
    what: &str,
) -> Vec<Delivery> {
    let deadline = Instant::now() + DEADLINE;
    let mut received = Vec::new();
    let mut missing = expected.clone();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} expected deliveries still missing after {DEADLINE:?}: {missing:?}",
            missing.len(),
            expected.len()
        );
        let batch = consumer
            .next_batch(100, Duration::from_millis(250))
            .await
            .unwrap_or_else(|error| panic!("{what}: next_batch failed: {error:?}"));
        consumer
            .ack(&batch)
            .await
            .unwrap_or_else(|error| panic!("{what}: ack failed: {error:?}"));
        for delivery in &batch {
            missing.remove(delivery.message.id.as_uuid());
        }
        received.extend(batch);
    }
    received
}

/// Fails if anything arrives within [`QUIET`].
pub async fn assert_nothing_more(consumer: &mut impl Consumer, what: &str) {
    let extra = consumer
        .next_batch(100, QUIET)
        .await
        .unwrap_or_else(|error| panic!("{what}: next_batch failed: {error:?}"));
    assert!(
        extra.is_empty(),
        "{what}: expected nothing more, received {} deliveries: {extra:?}",
        extra.len()
    );
}

/// Deliveries are in order within each partition, and each tenant's `seq`s increase.
pub fn assert_ordered(deliveries: &[Delivery], what: &str) {
    let mut last_position = std::collections::HashMap::new();
    let mut last_seq = std::collections::HashMap::new();
    for delivery in deliveries {
        assert_eq!(
            delivery.partition,
            partition_of(delivery.message.tenant, PARTITIONS),
            "{what}: delivery in the wrong partition: {delivery:?}"
        );
        if let Some(previous) = last_position.insert(delivery.partition, delivery.position) {
            assert!(
                delivery.position > previous,
                "{what}: partition {} went from position {previous} to {}",
                delivery.partition,
                delivery.position
            );
        }
        let seq = seq_of(delivery);
        if let Some(previous) = last_seq.insert(delivery.message.tenant, seq) {
            assert!(
                seq > previous,
                "{what}: tenant {} went from seq {previous} to {seq}",
                delivery.message.tenant
            );
        }
    }
}

/// splitmix64: reproducible randomness from a seed, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}
