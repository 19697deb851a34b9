//! The bus on NATS JetStream: one file-storage stream with a subject per partition
//! (`<prefix>.<partition>`), and one durable pull consumer per (group, partition), since
//! nats-server 2.9 allows only one filter subject per consumer.
//!
//! Taking over a partition: a new consumer of (group, partition) creates the next generation of
//! the durable consumer (`<group>-p<partition>-g<n>`), starting right after what the previous
//! generation had acked without a gap, and then deletes the older generations. So whatever the previous
//! consumer had received but not acked is delivered again at once and in order, instead of
//! after its ack wait and behind newer messages. A crash between the two steps leaves two
//! generations; the next takeover continues from the newest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{AckKind, Acker, PublishMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use domain::{EventId, TenantId};
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::{
    BusError, Consumer, Delivery, Message, NatsConfig, PartitionLag, PublishReceipt, check_group,
    partition_of, select_partitions,
};

/// The header carrying the message's tenant.
const TENANT_HEADER: &str = "Tributary-Tenant";
/// At most this many publishes of one call await their PubAck at once.
const PUBLISH_WINDOW: usize = 1_024;
/// Messages a partition's pull requests ask for at once.
const PULL_BATCH: usize = 256;
/// How long a pull request waits on the server before the client sends a fresh one: also the
/// longest a partition can stall if the server lost the request (it restarted).
const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Deliveries buffered between the partitions' readers and `next_batch`.
const CHANNEL_CAPACITY: usize = 1_024;
/// Acks awaiting the server's confirmation at once.
const ACK_CONCURRENCY: usize = 128;
/// Unacked deliveries the server hands one durable consumer before it waits for acks.
const MAX_ACK_PENDING: i64 = 10_000;

/// The bus on a NATS JetStream server or cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsBus {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    jetstream: Context,
    config: NatsConfig,
    partitions: u32,
}

impl NatsBus {
    /// Connects and creates the stream, or updates its settings to `config`.
    pub async fn connect(config: &NatsConfig, partitions: u32) -> Result<Self, BusError> {
        if partitions == 0 {
            return Err(BusError::Config("a bus has at least one partition".into()));
        }
        let servers: Vec<&str> = config.servers.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name("tributary")
            .connect(servers)
            .await
            .map_err(|error| BusError::nats("connect", true, error))?;
        let jetstream = jetstream::new(client);
        if config.replicas < 3 {
            tracing::warn!(
                replicas = config.replicas,
                "nats bus stream has fewer than 3 replicas: fine for development, not production"
            );
        }
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.*", config.subject_prefix)],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            max_age: config.max_age,
            ..Default::default()
        };
        jetstream
            .create_or_update_stream(stream_config)
            .await
            .map_err(|error| BusError::nats("stream create or update", true, error))?;
        Ok(Self {
            shared: Arc::new(Shared {
                jetstream,
                config: config.clone(),
                partitions,
            }),
        })
    }

    async fn take_over(
        &self,
        stream: &stream::Stream,
        existing: &[String],
        group: &str,
        partition: u32,
    ) -> Result<PullConsumer, BusError> {
        let prefix = format!("{group}-p{partition}-g");
        let generations = generations(existing, group, partition);
        let (generation, deliver_policy) = match generations.last() {
            None => (0, DeliverPolicy::All),
            Some((generation, name)) => {
                let mut previous: PullConsumer = stream
                    .get_consumer(name)
                    .await
                    .map_err(|error| BusError::nats("consumer info", true, error))?;
                let info = previous
                    .info()
                    .await
                    .map_err(|error| BusError::nats("consumer info", true, error))?;
                let start_sequence = done_up_to(info) + 1;
                (
                    generation + 1,
                    DeliverPolicy::ByStartSequence { start_sequence },
                )
            }
        };
        let name = format!("{prefix}{generation}");
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.shared.config.ack_wait,
                filter_subject: self.shared.config.subject(partition),
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::nats("consumer create", true, error))?;
        for (_, old) in &generations {
            stream
                .delete_consumer(old)
                .await
                .map_err(|error| BusError::nats("consumer delete", true, error))?;
        }
        tracing::debug!(consumer = %name, partition, "nats bus partition taken over");
        Ok(consumer)
    }
}

impl crate::Bus for NatsBus {
    type Consumer = NatsConsumer;

    fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    async fn publish(&self, messages: &[Message]) -> Result<PublishReceipt, BusError> {
        crate::traced_publish("nats", messages, self.publish_all(messages)).await
    }
    async fn consumer(
        &self,
        group: &str,
        partitions: Option<Vec<u32>>,
    ) -> Result<NatsConsumer, BusError> {
        check_group(group)?;
        let partitions = select_partitions(partitions, self.shared.partitions)?;
        let (stream, existing) = self.stream_and_consumers().await?;
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let mut readers = JoinSet::new();
        for partition in partitions {
            let consumer = self.take_over(&stream, &existing, group, partition).await?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .expires(PULL_EXPIRY)
                .messages()
                .await
                .map_err(|error| BusError::nats("pull", true, error))?;
            readers.spawn(read_partition(partition, messages, sender.clone()));
        }
        Ok(NatsConsumer {
            group: group.to_owned(),
            receiver,
            _readers: readers,
            ackers: HashMap::new(),
            pending_error: None,
        })
    }

    async fn lag(&self, groups: &[&str]) -> Result<Vec<PartitionLag>, BusError> {
        let (stream, existing) = self.stream_and_consumers().await?;
        let mut lags = Vec::new();
        for group in groups {
            for partition in 0..self.shared.partitions {
                // The newest generation is the one consuming (older ones are deleted at a
                // takeover, but one may linger after a crash mid-takeover).
                let Some((_, name)) = generations(&existing, group, partition).pop() else {
                    continue;
                };
                let mut consumer: PullConsumer = stream
                    .get_consumer(name)
                    .await
                    .map_err(|error| BusError::nats("consumer info", true, error))?;
                let info = consumer
                    .info()
                    .await
                    .map_err(|error| BusError::nats("consumer info", true, error))?;
                lags.push(PartitionLag {
                    group: (*group).to_owned(),
                    partition,
                    behind: info.num_pending + info.num_ack_pending as u64,
                });
            }
        }
        Ok(lags)
    }
}

/// The consumers of `group` on `partition` in `existing`, by generation, oldest first.
fn generations<'a>(existing: &'a [String], group: &str, partition: u32) -> Vec<(u64, &'a str)> {
    let prefix = format!("{group}-p{partition}-g");
    let mut generations: Vec<(u64, &str)> = existing
        .iter()
        .filter_map(|name| {
            let generation = name.strip_prefix(&prefix)?;
            if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((generation.parse().ok()?, name.as_str()))
        })
        .collect();
    generations.sort_unstable();
    generations
}

impl NatsBus {
    /// The stream and the names of its durable consumers.
    async fn stream_and_consumers(&self) -> Result<(stream::Stream, Vec<String>), BusError> {
        let stream = self
            .shared
            .jetstream
            .get_stream(&self.shared.config.stream)
            .await
            .map_err(|error| BusError::nats("stream lookup", true, error))?;
        let existing: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|error| BusError::nats("consumer list", true, error))?;
        Ok((stream, existing))
    }

    /// Publishes `messages` and waits for every acknowledgement: [`crate::Bus::publish`]
    /// without its span.
    async fn publish_all(&self, messages: &[Message]) -> Result<PublishReceipt, BusError> {
        let mut duplicates = vec![false; messages.len()];
        let mut acks = FuturesUnordered::new();
        for (index, message) in messages.iter().enumerate() {
            while acks.len() >= PUBLISH_WINDOW {
                await_ack(acks.next().await, &mut duplicates)?;
            }
            let mut headers = HeaderMap::new();
            headers.insert(TENANT_HEADER, message.tenant.to_string().as_str());
            let publish = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(headers)
                .message_id(message.id.to_string());
            let subject = self
                .shared
                .config
                .subject(partition_of(message.tenant, self.shared.partitions));
            let ack = self
                .shared
                .jetstream
                .send_publish(subject, publish)
                .await
                .map_err(publish_error)?;
            acks.push(async move { (index, ack.into_future().await) });
        }
        while !acks.is_empty() {
            await_ack(acks.next().await, &mut duplicates)?;
        }
        Ok(PublishReceipt::new(duplicates))
    }
}

/// The stream sequence up to which a durable consumer has nothing left to deliver: everything of
/// its subject at or below was acked. The server's ack floor alone is not enough: it stays 0 for
/// a consumer created at a start sequence until its first in-order ack, and it lags behind the
/// last delivery when nothing is pending.
fn done_up_to(info: &jetstream::consumer::Info) -> u64 {
    let started_after = match info.config.deliver_policy {
        DeliverPolicy::ByStartSequence { start_sequence } => start_sequence.saturating_sub(1),
        _ => 0,
    };
    let all_delivered_acked = if info.num_ack_pending == 0 {
        info.delivered.stream_sequence
    } else {
        0
    };
    info.ack_floor
        .stream_sequence
        .max(started_after)
        .max(all_delivered_acked)
}

/// Records whether the server saw the message as a duplicate (within its duplicate window).
fn await_ack(
    ack: Option<(
        usize,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    )>,
    duplicates: &mut [bool],
) -> Result<(), BusError> {
    match ack {
        None => Ok(()),
        Some((index, Ok(ack))) => {
            duplicates[index] = ack.duplicate;
            Ok(())
        }
        Some((_, Err(error))) => Err(publish_error(error)),
    }
}

fn publish_error(error: jetstream::context::PublishError) -> BusError {
    let retryable = !matches!(
        error.kind(),
        PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
    );
    BusError::nats("publish", retryable, error)
}

type Received = Result<(Delivery, Acker), BusError>;

/// A consumer of the NATS bus: one reader task per partition feeding one channel.
pub struct NatsConsumer {
    group: String,
    receiver: mpsc::Receiver<Received>,
    /// Aborted when the consumer is dropped.
    _readers: JoinSet<()>,
    ackers: HashMap<(u32, u64), Acker>,
    /// An error that arrived after deliveries already taken into a batch; returned next.
    pending_error: Option<BusError>,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("group", &self.group)
            .field("unacked", &self.ackers.len())
            .finish_non_exhaustive()
    }
}

/// Forwards one partition's messages, in order, until the consumer is dropped.
async fn read_partition(
    partition: u32,
    mut messages: pull::Stream,
    sender: mpsc::Sender<Received>,
) {
    // A message redelivered after its ack wait while this consumer still holds it (the
    // application is slow) is not handed out twice, and never out of order.
    let mut forwarded_up_to = 0u64;
    while let Some(item) = messages.next().await {
        let received = match item {
            Ok(message) => match decode(partition, message) {
                Ok(Some((delivery, acker))) => {
                    if delivery.position <= forwarded_up_to {
                        continue;
                    }
                    forwarded_up_to = delivery.position;
                    Ok((delivery, acker))
                }
                Ok(None) => continue,
                Err(error) => Err(error),
            },
            Err(error) => {
                use async_nats::jetstream::consumer::pull::MessagesErrorKind;
                match error.kind() {
                    // The stream re-sends its pull request; nothing is lost.
                    MessagesErrorKind::MissingHeartbeat => {
                        tracing::debug!(partition, "nats bus pull heartbeat missed");
                        continue;
                    }
                    MessagesErrorKind::ConsumerDeleted => {
                        let _ = sender.send(Err(BusError::nats("pull", false, error))).await;
                        return;
                    }
                    _ => Err(BusError::nats("pull", true, error)),
                }
            }
        };
        if sender.send(received).await.is_err() {
            return;
        }
    }
    let _ = sender.send(Err(BusError::ConsumerStopped)).await;
}

/// The delivery and its acker; `None` for a message the bus did not publish (no id or tenant
/// header), which is terminated so it is not delivered again, and logged.
fn decode(
    partition: u32,
    message: jetstream::Message,
) -> Result<Option<(Delivery, Acker)>, BusError> {
    let position = message
        .info()
        .map_err(|error| BusError::nats("message info", false, error))?
        .stream_sequence;
    let header = |name: &str| -> Option<Uuid> {
        let value = message.headers.as_ref()?.get(name)?;
        Uuid::parse_str(value.as_str()).ok()
    };
    let (id, tenant) = match (
        header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
        header(TENANT_HEADER),
    ) {
        (Some(id), Some(tenant)) => (id, tenant),
        _ => {
            tracing::error!(
                partition,
                position,
                "nats bus message without id or tenant, terminated"
            );
            let (_, acker) = message.split();
            tokio::spawn(async move {
                if let Err(error) = acker.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "nats bus could not terminate a malformed message");
                }
            });
            return Ok(None);
        }
    };
    let payload: Bytes = message.payload.clone();
    let (_, acker) = message.split();
    Ok(Some((
        Delivery {
            message: Message {
                tenant: TenantId::from_uuid(tenant),
                id: EventId::from_uuid(id),
                payload,
            },
            partition,
            position,
        },
        acker,
    )))
}

impl Consumer for NatsConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let first = match tokio::time::timeout(wait, self.receiver.recv()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(None) => return Err(BusError::ConsumerStopped),
            Ok(Some(received)) => received?,
        };
        let mut batch = Vec::with_capacity(max.min(PULL_BATCH));
        let mut keep = |(delivery, acker): (Delivery, Acker), batch: &mut Vec<Delivery>| {
            self.ackers
                .insert((delivery.partition, delivery.position), acker);
            batch.push(delivery);
        };
        keep(first, &mut batch);
        while batch.len() < max {
            match self.receiver.try_recv() {
                Ok(Ok(received)) => keep(received, &mut batch),
                Ok(Err(error)) => {
                    self.pending_error = Some(error);
                    break;
                }
                Err(_) => break,
            }
        }
        crate::log_delivered(&self.group, &batch);
        Ok(batch)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        let mut pending: Vec<((u32, u64), Acker)> = deliveries
            .iter()
            .filter_map(|delivery| {
                let key = (delivery.partition, delivery.position);
                self.ackers.remove(&key).map(|acker| (key, acker))
            })
            .collect();
        pending.sort_by_key(|(key, _)| *key);
        // Per partition, every ack but the last is sent without waiting, then the last is a
        // double ack, which returns once the server has recorded it. The server handles a
        // consumer's acks in the order they arrive on this connection, so when the last is
        // confirmed the earlier ones are recorded too: one round trip per partition and batch
        // instead of one per message.
        let mut confirm: Vec<((u32, u64), Acker)> = Vec::new();
        let mut first_error = None;
        let mut failed = Vec::new();
        let mut messages = pending.into_iter().peekable();
        while let Some((key, acker)) = messages.next() {
            let last_of_partition = messages
                .peek()
                .is_none_or(|((partition, _), _)| *partition != key.0);
            if last_of_partition {
                confirm.push((key, acker));
            } else if let Err(error) = acker.ack().await {
                failed.push((key, acker));
                first_error.get_or_insert(error);
            }
        }
        let mut results = futures_util::stream::iter(confirm)
            .map(|(key, acker)| async move {
                let result = acker.double_ack_with(AckKind::Ack).await;
                (key, acker, result)
            })
            .buffer_unordered(ACK_CONCURRENCY);
        while let Some((key, acker, result)) = results.next().await {
            if let Err(error) = result {
                failed.push((key, acker));
                first_error.get_or_insert(error);
            }
        }
        drop(results);
        // Keep what failed, so that the caller can ack it again.
        self.ackers.extend(failed);
        match first_error {
            None => Ok(()),
            Some(error) => Err(BusError::nats("ack", true, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::consumer::Info;

    use super::*;

    /// Consumer info as the server sends it; `start` is a `by_start_sequence` start, if any.
    fn info(start: Option<u64>, ack_floor: u64, delivered: u64, num_ack_pending: usize) -> Info {
        let config = match start {
            Some(start) => serde_json::json!({
                "deliver_policy": "by_start_sequence", "opt_start_seq": start,
                "ack_policy": "explicit", "replay_policy": "instant"
            }),
            None => serde_json::json!({
                "deliver_policy": "all", "ack_policy": "explicit", "replay_policy": "instant"
            }),
        };
        serde_json::from_value(serde_json::json!({
            "stream_name": "S",
            "name": "g-p0-g1",
            "created": "2025-01-01T00:00:00Z",
            "config": config,
            "delivered": { "consumer_seq": delivered, "stream_seq": delivered },
            "ack_floor": { "consumer_seq": ack_floor, "stream_seq": ack_floor },
            "num_ack_pending": num_ack_pending,
            "num_redelivered": 0,
            "num_waiting": 0,
            "num_pending": 0
        }))
        .expect("consumer info")
    }

    #[test]
    fn a_takeover_resumes_after_what_is_done() {
        // Partly acked: resume after the ack floor.
        assert_eq!(done_up_to(&info(None, 7, 12, 3)), 7);
        // Everything delivered is acked, the floor lagging behind.
        assert_eq!(done_up_to(&info(None, 7, 12, 0)), 12);
        // Created at sequence 31, nothing delivered or acked yet.
        assert_eq!(done_up_to(&info(Some(31), 0, 0, 0)), 30);
        // Created at 31, delivered up to 40, acked out of order so the floor never moved.
        assert_eq!(done_up_to(&info(Some(31), 0, 40, 2)), 30);
        // A new group has done nothing.
        assert_eq!(done_up_to(&info(None, 0, 0, 0)), 0);
    }
}
