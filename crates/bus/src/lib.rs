//! The stream bus between the edge and the pipeline's consumers: the [`Bus`] and [`Consumer`]
//! traits with their contract, an embedded implementation on the platform's PostgreSQL
//! ([`EmbeddedBus`], nothing else to run) and one on NATS JetStream ([`NatsBus`]), chosen at run
//! time from one setting ([`BusConfig`], [`AnyBus`]).
//!
//! Messages are partitioned by tenant ([`partition_of`]), so one tenant's events keep their
//! order while partitions are consumed in parallel. Both implementations pass the same
//! conformance suite (`tests/bus`). docs/bus.md describes the contract, both implementations
//! and the durability settings a production NATS deployment needs.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use domain::{EventId, TenantId};

mod any;
pub mod bronze;
mod config;
mod embedded;
mod error;
pub mod lag;
mod nats;

pub use any::{AnyBus, AnyConsumer};
pub use config::{Backend, BusConfig, DEFAULT_PARTITIONS, NatsConfig};
#[cfg(feature = "testing")]
pub use embedded::AppendHook;
pub use embedded::{EmbeddedBus, EmbeddedConsumer};
pub use error::BusError;
pub use nats::{NatsBus, NatsConsumer};

/// One event on the bus. The payload is opaque to the bus; the tenant decides the partition and
/// the id is what duplicates are recognised by.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub tenant: TenantId,
    pub id: EventId,
    pub payload: Bytes,
}

// The payload carries customer data: never print it.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    pub partition: u32,
    /// The message's place in its partition: increasing in append order within the partition
    /// (not necessarily contiguous). Only meaningful together with `partition`.
    pub position: u64,
}

/// The partition of `tenant` on a bus of `partitions` partitions. Stable forever (it decides
/// where a tenant's events are ordered): FNV-1a 64 over the 16 bytes of the tenant's UUID, modulo
/// `partitions`.
///
/// # Panics
///
/// If `partitions` is 0; [`BusConfig`] never allows that.
pub fn partition_of(tenant: TenantId, partitions: u32) -> u32 {
    assert!(partitions > 0, "a bus has at least one partition");
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in tenant.as_uuid().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash % u64::from(partitions)) as u32
}

/// What a successful publish says about each message, in the order they were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReceipt {
    duplicate: Vec<bool>,
}

impl PublishReceipt {
    pub fn new(duplicate: Vec<bool>) -> Self {
        Self { duplicate }
    }

    /// For each message, whether the bus already had it.
    pub fn duplicates(&self) -> impl Iterator<Item = bool> + '_ {
        self.duplicate.iter().copied()
    }

    /// How many messages were new.
    pub fn appended(&self) -> usize {
        self.duplicate
            .iter()
            .filter(|duplicate| !**duplicate)
            .count()
    }
}

/// A durable, partitioned, at-least-once message bus.
///
/// The contract every implementation keeps (and the conformance suite in `tests/bus` checks):
///
/// - **Partitioning.** A message goes to partition [`partition_of`]`(tenant, partitions())`, so
///   all of a tenant's messages share one partition and its order.
/// - **Durability.** [`Bus::publish`] returns `Ok` only when every message of the call is durable:
///   it survives `kill -9` of any process and a restart.
/// - **Order.** Within a partition, consumers receive messages in the order they were appended;
///   messages of one `publish` call keep their order within each partition. Concurrent publishers
///   are ordered by whoever appended first.
/// - **Duplicates.** Publishing is idempotent by message id within the bus's duplicate window: a
///   re-publish of an id still in the window adds nothing. Beyond the window (or across
///   partitions) duplicates are possible, and delivery is at-least-once anyway, so consumers must
///   dedupe by message id.
/// - **Groups.** Every consumer group receives every message, independently of other groups.
pub trait Bus: Send + Sync {
    type Consumer: Consumer;

    /// How many partitions the bus has. Fixed for the life of the bus's storage.
    fn partitions(&self) -> u32;

    /// Appends `messages`. Returns `Ok` only when every message is durable (survives `kill -9` of
    /// any process and a restart). Idempotent by message id within the bus's duplicate window (a
    /// re-publish of the same id in the window adds nothing); beyond it duplicates are possible
    /// and consumers must dedupe. On `Err`, some of the messages may have been appended:
    /// publishing the same messages again is the way to retry.
    /// The receipt says, per message, whether the bus already had it (a duplicate within the
    /// window, or repeated within the call): the edge reports that to the agent.
    fn publish(
        &self,
        messages: &[Message],
    ) -> impl Future<Output = Result<PublishReceipt, BusError>> + Send;

    /// Publishes the events of an ingest batch: [`Bus::publish`] of their envelopes, the message
    /// id being the event id, with the same contract. A bus that [keeps bronze](Bus::keeps_bronze)
    /// also writes each new event to bronze in the transaction that makes it durable, and keeps
    /// only the event's place in its log: when this returns, the events are in bronze.
    fn publish_events(
        &self,
        events: Vec<bronze::StoredEvent>,
    ) -> impl Future<Output = Result<PublishReceipt, BusError>> + Send {
        async move {
            let messages = events
                .iter()
                .map(bronze::StoredEvent::message)
                .collect::<Result<Vec<_>, _>>()?;
            self.publish(&messages).await
        }
    }

    /// Whether [`Bus::publish_events`] writes bronze itself (the embedded bus, whose log is
    /// bronze): the platform then runs no bronze writer on this bus.
    fn keeps_bronze(&self) -> bool {
        false
    }

    /// A consumer of `group` over the given partitions (`None` = all). Each group has its own
    /// checkpoints. There must be at most one active consumer per (group, partition): a new
    /// consumer of a partition takes over from the previous one, which must have been dropped
    /// (or its process ended) first. Group names are 1 to 64 of `A-Z a-z 0-9 _ -`.
    fn consumer(
        &self,
        group: &str,
        partitions: Option<Vec<u32>>,
    ) -> impl Future<Output = Result<Self::Consumer, BusError>> + Send;

    /// How far each of `groups` is behind on each partition it has consumed: messages appended
    /// that the group has not acked. A group that never had a consumer on a partition is left
    /// out. Cheap enough to ask every second.
    fn lag(
        &self,
        groups: &[&str],
    ) -> impl Future<Output = Result<Vec<PartitionLag>, BusError>> + Send;
}

/// How far one consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub partition: u32,
    /// Messages appended and not yet acked by the group. The embedded bus counts positions,
    /// which re-published duplicates also consume, so its figure is an upper bound.
    pub behind: u64,
}

/// One consumer-group member reading some partitions of a [`Bus`].
pub trait Consumer: Send {
    /// Up to `max` deliveries, waiting at most `wait` for the first. Order is preserved within a
    /// partition. Delivery is at-least-once: what was delivered but not acked is delivered again
    /// to the next consumer of the group (after this one is dropped) — implementations must
    /// tolerate duplicates. Cancel-safe: dropping the future loses nothing.
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Delivery>, BusError>> + Send;

    /// The deliveries are processed; the group never receives them again (except after a crash
    /// before ack returns; and after a crash of the server itself: a single-replica NATS stream
    /// writes consumer state to disk shortly after confirming an ack, and the embedded bus
    /// commits a checkpoint without waiting for its flush: docs/bus.md).
    /// Acks may come in any order. A group's progress in a partition is kept as "everything up
    /// to here": if a consumer ends while an earlier delivery of the partition is still unacked,
    /// the next consumer receives that delivery again together with the later ones, acked or
    /// not. Acking a delivery this consumer did not hand out, or acking twice, is a no-op.
    fn ack(&mut self, deliveries: &[Delivery])
    -> impl Future<Output = Result<(), BusError>> + Send;
}

/// Runs a publish inside the span that names its batch (see [`batch_fields`]) and logs what
/// it appended, so an ingest batch can be followed from the edge onto the bus.
pub(crate) async fn traced_publish(
    backend: &'static str,
    messages: &[Message],
    publish: impl Future<Output = Result<PublishReceipt, BusError>>,
) -> Result<PublishReceipt, BusError> {
    let named = messages.iter().map(|message| (message.id, message.tenant));
    traced_publish_of(backend, named, messages.len(), publish).await
}

/// [`traced_publish`] of messages given by `(id, tenant)`.
pub(crate) async fn traced_publish_of(
    backend: &'static str,
    named: impl Iterator<Item = (EventId, TenantId)>,
    count: usize,
    publish: impl Future<Output = Result<PublishReceipt, BusError>>,
) -> Result<PublishReceipt, BusError> {
    use tracing::Instrument;
    let (batch, tenant, tenants) = batch_fields(named);
    let span = tracing::debug_span!(
        "bus_publish",
        backend,
        batch = batch.map(tracing::field::display),
        tenant = tenant.map(tracing::field::display),
        tenants,
        messages = count
    );
    async move {
        let receipt = publish.await?;
        tracing::debug!(appended = receipt.appended(), "batch published");
        Ok(receipt)
    }
    .instrument(span)
    .await
}

/// Logs a batch a consumer of `group` is handed, in a span that names it like a published one.
pub(crate) fn log_delivered(group: &str, deliveries: &[Delivery]) {
    if deliveries.is_empty() {
        return;
    }
    let (batch, tenant, tenants) = batch_fields(
        deliveries
            .iter()
            .map(|delivery| (delivery.message.id, delivery.message.tenant)),
    );
    tracing::debug_span!(
        "bus_deliver",
        group,
        batch = batch.map(tracing::field::display),
        tenant = tenant.map(tracing::field::display),
        tenants,
        deliveries = deliveries.len()
    )
    .in_scope(|| tracing::debug!("batch delivered"));
}

/// How the logs name a batch of messages: by its first message's id (`batch`, the id the edge
/// gives the ingest batch it published), its tenant when it has only one, and how many tenants
/// it has. Ids and counts only: a payload is never logged.
fn batch_fields(
    messages: impl Iterator<Item = (EventId, TenantId)>,
) -> (Option<EventId>, Option<TenantId>, usize) {
    let mut batch = None;
    let mut tenants: Vec<TenantId> = Vec::new();
    for (id, tenant) in messages {
        batch.get_or_insert(id);
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    let tenant = match tenants.as_slice() {
        [only] => Some(*only),
        _ => None,
    };
    (batch, tenant, tenants.len())
}

/// Checks a consumer-group name: 1 to 64 of `A-Z a-z 0-9 _ -` (a NATS durable-name token and a
/// `pipeline.checkpoints` key alike).
pub(crate) fn check_group(group: &str) -> Result<(), BusError> {
    let valid = !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(BusError::InvalidGroup(group.chars().take(80).collect()))
    }
}

/// The sorted, deduplicated partitions a consumer reads: all, or the given ones if in range.
pub(crate) fn select_partitions(
    partitions: Option<Vec<u32>>,
    count: u32,
) -> Result<Vec<u32>, BusError> {
    let mut selected = partitions.unwrap_or_else(|| (0..count).collect());
    selected.sort_unstable();
    selected.dedup();
    if let Some(partition) = selected.iter().find(|partition| **partition >= count) {
        return Err(BusError::InvalidPartition {
            partition: *partition,
            partitions: count,
        });
    }
    if selected.is_empty() {
        return Err(BusError::Config(
            "a consumer needs at least one partition".into(),
        ));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn tenant(text: &str) -> TenantId {
        TenantId::from_uuid(Uuid::parse_str(text).unwrap())
    }

    #[test]
    fn partition_of_is_fnv1a_64_of_the_uuid_bytes() {
        // Computed independently (Python: FNV-1a 64 over uuid.UUID(text).bytes, modulo the
        // partition count). A tenant's partition must never change: these must keep passing.
        let vectors: &[(&str, u32, u32)] = &[
            ("00000000-0000-0000-0000-000000000000", 16, 5), // hash 0x88201fb960ff6465
            ("00000000-0000-0000-0000-000000000000", 7, 0),
            ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 16, 10), // hash 0xf929d81311da233a
            ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 1000, 738),
            ("123e4567-e89b-12d3-a456-426614174000", 16, 0), // hash 0x7f0c9ad0139933e0
            ("123e4567-e89b-12d3-a456-426614174000", 3, 0),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", 16, 5), // hash 0xd6607508f5a1e855
            ("01890a5d-ac96-774b-bcce-b302099a8057", 16, 3), // hash 0x3fc1159c6b8a02f3
            ("01890a5d-ac96-774b-bcce-b302099a8057", 64, 51),
        ];
        for (text, partitions, expected) in vectors {
            assert_eq!(
                partition_of(tenant(text), *partitions),
                *expected,
                "{text} over {partitions}"
            );
        }
    }

    #[test]
    fn every_partition_is_in_range() {
        for _ in 0..1000 {
            let tenant = TenantId::new_random();
            assert!(partition_of(tenant, 16) < 16);
            assert_eq!(partition_of(tenant, 1), 0);
        }
    }

    #[test]
    fn group_names_are_checked() {
        for good in ["bronze", "bronze-writer_2", "A", &"x".repeat(64)] {
            check_group(good).unwrap();
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "ü", &"x".repeat(65)] {
            assert!(check_group(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions_are_selected_sorted_and_in_range() {
        assert_eq!(select_partitions(None, 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            select_partitions(Some(vec![2, 0, 2]), 3).unwrap(),
            vec![0, 2]
        );
        assert!(matches!(
            select_partitions(Some(vec![3]), 3),
            Err(BusError::InvalidPartition {
                partition: 3,
                partitions: 3
            })
        ));
        assert!(select_partitions(Some(vec![]), 3).is_err());
    }
}
