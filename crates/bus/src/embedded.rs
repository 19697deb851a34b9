//! The embedded bus: a partitioned log in the platform's PostgreSQL (`store::bus_log`), so a
//! deployment needs nothing but its database.
//!
//! Appends lock each touched partition's head row until commit, so positions within a partition
//! commit in order and a consumer reading `position > checkpoint` never skips a late commit
//! (docs/bus.md, and the gap test of the conformance suite). Consumers wait with
//! `LISTEN`/`NOTIFY`, falling back to a short poll, and keep each group's progress in
//! `pipeline.checkpoints`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use domain::{EventId, TenantId};
use store::ServiceDb;
use store::service::bus_log::{self, AppendTx, BusListener, LogRow};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use crate::bronze::StoredEvent;
use crate::{
    BusError, Consumer, Delivery, Message, PartitionLag, PublishReceipt, check_group, partition_of,
    select_partitions,
};

/// How long a waiting consumer trusts notifications before reading anyway (a notification sent
/// while the listener was reconnecting is lost).
const POLL_FALLBACK: Duration = Duration::from_secs(1);
/// The fewest and the most rows read from one partition at once.
const READ_LIMIT: (usize, usize) = (64, 1_000);
/// The framing version byte of a message whose bytes the log holds.
const FRAME_V1: u8 = 1;
/// The framing version byte of an event the log keeps in bronze: the frame holds its tenant and
/// its event time, which with the row's event id are its bronze key.
const FRAME_IN_BRONZE: u8 = 2;

/// Called inside every append transaction, after the rows are inserted and before the commit:
/// the conformance suite sleeps here to widen the window in which a late commit could be missed.
#[cfg(feature = "testing")]
pub type AppendHook = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// The bus on the platform database. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    database: ServiceDb,
    partitions: u32,
    waker: Waker,
    group_commit: std::sync::Arc<GroupCommit>,
    #[cfg(feature = "testing")]
    append_hook: Option<AppendHook>,
}

/// The edge's publishes waiting to be appended, committed together: while one append
/// transaction commits, the batches that arrive queue here, and the next leader appends them all
/// in one transaction (one flush, one `COPY` into bronze) instead of one each. A batch never
/// waits for a timer, only for the transaction before it.
#[derive(Default)]
struct GroupCommit {
    waiting: std::sync::Mutex<Vec<Publish>>,
    /// Held by the one append of the waiting batches under way.
    leader: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A batch waiting in [`GroupCommit`], and where its receipt goes.
struct Publish {
    events: Vec<StoredEvent>,
    answer: tokio::sync::oneshot::Sender<Result<PublishReceipt, BusError>>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBus {
    /// Opens the log in `database` (creating its partitions on first use). Refuses a partition
    /// count different from the one the log was created with.
    pub async fn open(database: ServiceDb, partitions: u32) -> Result<Self, BusError> {
        if partitions == 0 {
            return Err(BusError::Config("a bus has at least one partition".into()));
        }
        let existing = bus_log::ensure_partitions(&database, partitions).await?;
        if existing != 0 && existing != partitions {
            return Err(BusError::PartitionCountMismatch {
                existing,
                configured: partitions,
            });
        }
        Ok(Self {
            waker: Waker::spawn(database.clone()),
            group_commit: Default::default(),
            database,
            partitions,
            #[cfg(feature = "testing")]
            append_hook: None,
        })
    }

    /// Runs `hook` inside every append transaction before it commits (tests only).
    #[cfg(feature = "testing")]
    pub fn with_append_hook(mut self, hook: AppendHook) -> Self {
        self.append_hook = Some(hook);
        self
    }

    /// Deletes the log entries every consumer group has acked, but for the last `margin`
    /// positions of each partition below its slowest group's checkpoint. `margin` is the
    /// duplicate window, counted in positions: an id is recognised as a duplicate for as long as
    /// its entry is in the log. Returns how many entries were deleted. A group that stops
    /// consuming holds its partitions' entries back until it resumes (its lag shows it:
    /// [`crate::Bus::lag`]).
    pub async fn prune(&self, margin: u64) -> Result<u64, BusError> {
        Ok(bus_log::prune(&self.database, margin).await?)
    }

    /// The last position of every partition: a group whose checkpoints reach them has consumed
    /// everything appended before this call.
    pub async fn heads(&self) -> Result<Vec<(u32, u64)>, BusError> {
        Ok(bus_log::heads(&self.database).await?)
    }

    /// Whether `group` has consumed up to `heads` ([`EmbeddedBus::heads`]) on every partition it
    /// has consumed (true for a group that never consumed).
    pub async fn has_consumed(&self, group: &str, heads: &[(u32, u64)]) -> Result<bool, BusError> {
        Ok(bus_log::has_consumed(&self.database, group, heads).await?)
    }

    /// Forgets `group`'s checkpoints, for a consumer that will not run again: they no longer
    /// hold back pruning or count as lag.
    pub async fn forget_group(&self, group: &str) -> Result<(), BusError> {
        check_group(group)?;
        Ok(bus_log::forget_group(&self.database, group).await?)
    }
}

/// Wakes waiting consumers after appends commit, one notification for however many appends
/// committed while the previous one was being sent (docs/bus.md, "Consumers").
#[derive(Clone)]
struct Waker {
    pending: tokio::sync::mpsc::Sender<()>,
}

impl Waker {
    /// Starts the task that sends the notifications; it ends with the last clone of the bus.
    fn spawn(database: ServiceDb) -> Self {
        let (pending, mut wake) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while wake.recv().await.is_some() {
                if let Err(error) = bus_log::wake_consumers(&database).await {
                    // Consumers still read at least every POLL_FALLBACK.
                    tracing::debug!(%error, "waking the bus's consumers failed");
                }
            }
        });
        Self { pending }
    }

    /// Asks for a notification; coalesces with one already asked for and not yet sent.
    fn wake(&self) {
        let _ = self.pending.try_send(());
    }
}

impl crate::Bus for EmbeddedBus {
    type Consumer = EmbeddedConsumer;

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn publish(&self, messages: &[Message]) -> Result<PublishReceipt, BusError> {
        crate::traced_publish("embedded", messages, self.append(messages)).await
    }

    async fn publish_events(&self, events: Vec<StoredEvent>) -> Result<PublishReceipt, BusError> {
        let named: Vec<_> = events
            .iter()
            .map(|event| (event.row.event_id, event.row.tenant))
            .collect();
        let count = events.len();
        crate::traced_publish_of(
            "embedded",
            named.into_iter(),
            count,
            self.group_commit(events),
        )
        .await
    }

    fn keeps_bronze(&self) -> bool {
        true
    }

    async fn consumer(
        &self,
        group: &str,
        partitions: Option<Vec<u32>>,
    ) -> Result<EmbeddedConsumer, BusError> {
        check_group(group)?;
        let partitions = select_partitions(partitions, self.partitions)?;
        let checkpoints = bus_log::register_group(&self.database, group, &partitions).await?;
        let states = checkpoints
            .into_iter()
            .map(|(partition, checkpoint)| (partition, PartitionState::new(checkpoint)))
            .collect();
        Ok(EmbeddedConsumer {
            database: self.database.clone(),
            group: group.to_owned(),
            states,
            listener: None,
            next_partition: 0,
        })
    }

    async fn lag(&self, groups: &[&str]) -> Result<Vec<PartitionLag>, BusError> {
        Ok(bus_log::lag(&self.database, groups)
            .await?
            .into_iter()
            .map(|lag| PartitionLag {
                group: lag.group,
                partition: lag.partition,
                behind: lag.behind,
            })
            .collect())
    }
}

impl EmbeddedBus {
    /// Appends `messages` in one transaction: [`crate::Bus::publish`] without its span.
    async fn append(&self, messages: &[Message]) -> Result<PublishReceipt, BusError> {
        let mut seen = HashSet::with_capacity(messages.len());
        let mut frames = Vec::with_capacity(messages.len());
        for message in messages {
            // A repeated id within the call adds nothing, as a re-publish would.
            if seen.insert(message.id) {
                frames.push((
                    partition_of(message.tenant, self.partitions),
                    *message.id.as_uuid(),
                    encode(message),
                ));
            }
        }
        if frames.is_empty() {
            return Ok(PublishReceipt::new(Vec::new()));
        }
        let rows = log_rows(&frames);
        let mut tx = AppendTx::begin(&self.database).await?;
        let appended = tx.append(&rows).await?;
        self.commit(
            tx,
            rows.len(),
            appended,
            messages.iter().map(|message| message.id),
        )
        .await
    }

    /// Appends `events` together with the batches waiting beside them ([`GroupCommit`]).
    async fn group_commit(&self, events: Vec<StoredEvent>) -> Result<PublishReceipt, BusError> {
        let (answer, mut receipt) = tokio::sync::oneshot::channel();
        let group = &self.group_commit;
        lock(&group.waiting).push(Publish { events, answer });
        loop {
            let leading = tokio::select! {
                biased;
                received = &mut receipt => {
                    return received.unwrap_or_else(|_| {
                        Err(BusError::Event("the append of this batch was abandoned".into()))
                    });
                }
                leading = group.leader.clone().lock_owned() => leading,
            };
            let waiting = std::mem::take(&mut *lock(&group.waiting));
            // Empty: this batch was appended by the leader before, whose answer is waiting.
            if waiting.is_empty() {
                continue;
            }
            // A task of its own, holding the lead: the caller that leads may be dropped (its
            // client went away), and the batches of the others it took must still be appended
            // and answered.
            let bus = self.clone();
            let appending = tokio::spawn(async move {
                bus.append_group(waiting).await;
                drop(leading);
            });
            let _ = appending.await;
        }
    }

    /// Appends the waiting batches in one transaction and answers each; if that fails, each
    /// again alone, so that a batch the database refuses fails alone.
    async fn append_group(&self, waiting: Vec<Publish>) {
        if let [_] = waiting.as_slice() {
            let Publish { events, answer } = waiting.into_iter().next().expect("one batch");
            let _ = answer.send(self.append_events(&events).await);
            return;
        }
        let mut events =
            Vec::with_capacity(waiting.iter().map(|publish| publish.events.len()).sum());
        let mut answers = Vec::with_capacity(waiting.len());
        for publish in waiting {
            answers.push((
                events.len()..events.len() + publish.events.len(),
                publish.answer,
            ));
            events.extend(publish.events);
        }
        metrics::histogram!("tributary_bus_group_commit_batches").record(answers.len() as f64);
        match self.append_events(&events).await {
            Ok(receipt) => {
                let duplicates: Vec<bool> = receipt.duplicates().collect();
                for (range, answer) in answers {
                    let _ = answer.send(Ok(PublishReceipt::new(duplicates[range].to_vec())));
                }
            }
            Err(error) => {
                tracing::debug!(%error, batches = answers.len(), "a grouped append failed; appending its batches one by one");
                for (range, answer) in answers {
                    let _ = answer.send(self.append_events(&events[range]).await);
                }
            }
        }
    }

    /// Appends the events' places in one transaction, and writes the new ones to bronze in the
    /// same transaction.
    async fn append_events(&self, events: &[StoredEvent]) -> Result<PublishReceipt, BusError> {
        let mut seen = HashSet::with_capacity(events.len());
        let mut frames = Vec::with_capacity(events.len());
        let mut unique = Vec::with_capacity(events.len());
        for event in events {
            let row = &event.row;
            // A repeated id within the call adds nothing, as a re-publish would.
            if seen.insert(row.event_id) {
                frames.push((
                    partition_of(row.tenant, self.partitions),
                    *row.event_id.as_uuid(),
                    encode_in_bronze(row.tenant, row.event_time)?,
                ));
                unique.push(row);
            }
        }
        if frames.is_empty() {
            return Ok(PublishReceipt::new(Vec::new()));
        }
        // Outside the transaction: a missing day's partition is created by a statement of its
        // own, which then takes no lock the appends would queue behind.
        store::service::bronze::prepare_days(&self.database, &unique).await?;
        let rows = log_rows(&frames);
        let mut tx = AppendTx::begin(&self.database).await?;
        let appended = tx.append(&rows).await?;
        // What the log already had (a re-sent batch) is in bronze already: it was written with
        // its place.
        let new: HashSet<&Uuid> = appended.iter().collect();
        let stored: Vec<_> = unique
            .into_iter()
            .filter(|row| new.contains(row.event_id.as_uuid()))
            .collect();
        let written = tx.store_bronze(&stored).await?;
        metrics::counter!("tributary_bronze_events_written_total").increment(written);
        metrics::counter!("tributary_bronze_events_duplicate_total")
            .increment(stored.len() as u64 - written);
        self.commit(
            tx,
            rows.len(),
            appended,
            events.iter().map(|event| event.row.event_id),
        )
        .await
    }

    /// Commits an append and says, for each published id in order, whether it was a duplicate.
    async fn commit(
        &self,
        tx: AppendTx,
        rows: usize,
        appended: Vec<Uuid>,
        published: impl Iterator<Item = EventId>,
    ) -> Result<PublishReceipt, BusError> {
        #[cfg(feature = "testing")]
        if let Some(hook) = &self.append_hook {
            hook().await;
        }
        tx.commit().await?;
        if !appended.is_empty() {
            self.waker.wake();
        }
        tracing::debug!(
            messages = rows,
            appended = appended.len(),
            "embedded bus publish committed"
        );
        // In message order: new the first time an id was appended by this call, a duplicate
        // otherwise (already in the log, or repeated within the call).
        let mut appended: HashSet<Uuid> = appended.into_iter().collect();
        Ok(PublishReceipt::new(
            published.map(|id| !appended.remove(id.as_uuid())).collect(),
        ))
    }
}

/// A consumer of the embedded bus. Progress is saved on ack; dropping it loses nothing.
pub struct EmbeddedConsumer {
    database: ServiceDb,
    group: String,
    states: BTreeMap<u32, PartitionState>,
    /// Created at the first wait, then kept.
    listener: Option<BusListener>,
    /// Where the next batch starts taking from, so no partition starves the others.
    next_partition: usize,
}

impl std::fmt::Debug for EmbeddedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedConsumer")
            .field("group", &self.group)
            .field("partitions", &self.states.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One partition as a consumer sees it.
#[derive(Debug, Default)]
struct PartitionState {
    /// Everything at or below is acked and saved.
    checkpoint: u64,
    /// The highest position read from the log (delivered or buffered).
    read_up_to: u64,
    /// The highest position handed out.
    delivered_up_to: u64,
    /// Read but not yet handed out, in order.
    buffered: VecDeque<Buffered>,
    /// Handed out, not yet acked.
    in_flight: BTreeSet<u64>,
    /// Positions of events gone from bronze were passed over since the checkpoint was saved:
    /// once nothing is in flight, the checkpoint is saved past them even if no ack comes.
    passed_over: bool,
}

/// A row read from the log and not yet handed out.
#[derive(Debug)]
enum Buffered {
    Delivery(Delivery),
    /// An event no longer in bronze: its position is passed over as if delivered and acked.
    Gone(u64),
}

impl PartitionState {
    fn new(checkpoint: u64) -> Self {
        Self {
            checkpoint,
            read_up_to: checkpoint,
            delivered_up_to: checkpoint,
            ..Self::default()
        }
    }

    /// The highest position at or below which everything handed out is acked. Positions have
    /// gaps but never fill in later, so everything below the lowest unacked one is done.
    fn ackable_checkpoint(&self) -> u64 {
        let contiguous = match self.in_flight.first() {
            Some(lowest_unacked) => lowest_unacked - 1,
            None => self.delivered_up_to,
        };
        contiguous.max(self.checkpoint)
    }
}

impl EmbeddedConsumer {
    /// Reads the next rows of every partition whose buffer is empty, about `max` of each.
    async fn fill_buffers(&mut self, max: usize) -> Result<(), BusError> {
        let after: Vec<(u32, u64)> = self
            .states
            .iter()
            .filter(|(_, state)| state.buffered.is_empty())
            .map(|(partition, state)| (*partition, state.read_up_to))
            .collect();
        if after.is_empty() {
            return Ok(());
        }
        let limit = max.clamp(READ_LIMIT.0, READ_LIMIT.1) as u32;
        let mut frames = Vec::new();
        let mut in_bronze = Vec::new();
        for row in bus_log::read(&self.database, &after, limit).await? {
            let frame = decode(row)?;
            if let Frame::InBronze { key, .. } = &frame {
                in_bronze.push(*key);
            }
            frames.push(frame);
        }
        let mut stored = rebuild_from_bronze(&self.database, &in_bronze).await?;
        // Events gone from bronze, by partition: (how many, first and last position), logged
        // once per read rather than once per event (a deleted tenant's backlog is many).
        let mut gone: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
        for frame in frames {
            let (partition, position) = frame.place();
            let state = self
                .states
                .get_mut(&partition)
                .expect("read only asks for this consumer's partitions");
            state.read_up_to = state.read_up_to.max(position);
            let delivery = match frame {
                Frame::Message(delivery) => delivery,
                Frame::InBronze {
                    key,
                    partition,
                    position,
                } => match stored.remove(&(key.0, key.1)) {
                    Some(payload) => Delivery {
                        message: Message {
                            tenant: key.0,
                            id: key.1,
                            payload,
                        },
                        partition,
                        position,
                    },
                    None => {
                        // Deleted from bronze since (its tenant's retention ran ahead of this
                        // group, or the tenant was deleted): there is nothing left to deliver.
                        let entry = gone.entry(partition).or_insert((0, position, position));
                        entry.0 += 1;
                        entry.2 = position;
                        state.buffered.push_back(Buffered::Gone(position));
                        continue;
                    }
                },
            };
            state.buffered.push_back(Buffered::Delivery(delivery));
        }
        for (partition, (events, first, last)) in gone {
            metrics::counter!("tributary_bus_events_gone_total").increment(events);
            tracing::warn!(
                group = self.group,
                partition,
                events,
                first_position = first,
                last_position = last,
                "events of the log are no longer in bronze; skipped"
            );
        }
        Ok(())
    }
}

/// The messages of events kept in bronze, by (tenant, event id): each read from its bronze row
/// and rebuilt as the envelope the edge published ([`crate::bronze::envelope_json_of`]).
async fn rebuild_from_bronze(
    database: &ServiceDb,
    keys: &[(TenantId, EventId, OffsetDateTime)],
) -> Result<HashMap<(TenantId, EventId), Bytes>, BusError> {
    let rows = store::service::bronze::rows_by_key(database, keys).await?;
    let mut messages = HashMap::with_capacity(rows.len());
    for row in rows {
        let payload = crate::bronze::envelope_json_of(&row).map_err(BusError::Event)?;
        messages.insert((row.tenant, row.event_id), Bytes::from(payload));
    }
    Ok(messages)
}

impl EmbeddedConsumer {
    /// Saves the checkpoint of every partition whose passed-over positions no ack will cover
    /// (nothing of it is in flight): without this a partition ending in events gone from bronze
    /// would show them as lag, and hold back pruning, until its next event.
    async fn save_passed_over(&mut self) -> Result<(), BusError> {
        let settled: Vec<(u32, u64)> = self
            .states
            .iter()
            .filter(|(_, state)| state.passed_over && state.in_flight.is_empty())
            .map(|(partition, state)| (*partition, state.ackable_checkpoint()))
            .filter(|(partition, checkpoint)| *checkpoint > self.states[partition].checkpoint)
            .collect();
        if settled.is_empty() {
            return Ok(());
        }
        bus_log::save_checkpoints(&self.database, &self.group, &settled).await?;
        for (partition, checkpoint) in settled {
            if let Some(state) = self.states.get_mut(&partition) {
                state.checkpoint = checkpoint;
                state.passed_over = false;
            }
        }
        Ok(())
    }
}

/// Takes up to `max` buffered deliveries, round robin over partitions starting at
/// `next_partition`, and marks them in flight.
fn take_round_robin(
    states: &mut BTreeMap<u32, PartitionState>,
    next_partition: &mut usize,
    max: usize,
) -> Vec<Delivery> {
    let mut batch = Vec::new();
    let partitions: Vec<u32> = states.keys().copied().collect();
    if partitions.is_empty() {
        return batch;
    }
    let mut idle_rounds = 0;
    let mut index = *next_partition % partitions.len();
    while batch.len() < max && idle_rounds < partitions.len() {
        let state = states
            .get_mut(&partitions[index])
            .expect("a partition of this consumer");
        match state.buffered.pop_front() {
            Some(Buffered::Delivery(delivery)) => {
                idle_rounds = 0;
                state.delivered_up_to = delivery.position;
                state.in_flight.insert(delivery.position);
                batch.push(delivery);
            }
            Some(Buffered::Gone(position)) => {
                idle_rounds = 0;
                state.delivered_up_to = position;
                state.passed_over = true;
            }
            None => idle_rounds += 1,
        }
        index = (index + 1) % partitions.len();
    }
    *next_partition = index;
    batch
}

impl Consumer for EmbeddedConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            self.fill_buffers(max).await?;
            let batch = take_round_robin(&mut self.states, &mut self.next_partition, max);
            self.save_passed_over().await?;
            if !batch.is_empty() {
                crate::log_delivered(&self.group, &batch);
                return Ok(batch);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(batch);
            }
            match &mut self.listener {
                // Listen first, then read again: an append committed in between is seen by the
                // read, one committed after it by the listener.
                None => self.listener = Some(bus_log::listen(&self.database).await?),
                Some(listener) => {
                    listener.wait((deadline - now).min(POLL_FALLBACK)).await?;
                }
            }
        }
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        let mut acked = Vec::new();
        for delivery in deliveries {
            if let Some(state) = self.states.get_mut(&delivery.partition)
                && state.in_flight.remove(&delivery.position)
            {
                acked.push((delivery.partition, delivery.position));
            }
        }
        let mut advanced: Vec<(u32, u64)> = Vec::new();
        for (partition, _) in &acked {
            let state = &self.states[partition];
            let checkpoint = state.ackable_checkpoint();
            if checkpoint > state.checkpoint && !advanced.iter().any(|(p, _)| p == partition) {
                advanced.push((*partition, checkpoint));
            }
        }
        if advanced.is_empty() {
            return Ok(());
        }
        if let Err(error) = bus_log::save_checkpoints(&self.database, &self.group, &advanced).await
        {
            // Not saved: the deliveries stay unacked, so acking them again is the retry.
            for (partition, position) in acked {
                if let Some(state) = self.states.get_mut(&partition) {
                    state.in_flight.insert(position);
                }
            }
            return Err(error.into());
        }
        for (partition, checkpoint) in advanced {
            if let Some(state) = self.states.get_mut(&partition) {
                state.checkpoint = checkpoint;
            }
        }
        Ok(())
    }
}

/// `[version][tenant uuid, 16 bytes][payload]`: the tenant travels inside the stored bytes, so
/// the log table needs no tenant column (migration 0006 says why it must not have one).
fn encode(message: &Message) -> Vec<u8> {
    let mut frame = Vec::with_capacity(17 + message.payload.len());
    frame.push(FRAME_V1);
    frame.extend_from_slice(message.tenant.as_uuid().as_bytes());
    frame.extend_from_slice(&message.payload);
    frame
}

/// `[2][tenant uuid, 16 bytes][event time, Unix microseconds, 8 bytes big-endian]`: an event
/// kept in bronze, named by its bronze key (with the row's event id).
fn encode_in_bronze(tenant: TenantId, event_time: OffsetDateTime) -> Result<Vec<u8>, BusError> {
    let micros = i64::try_from(event_time.unix_timestamp_nanos() / 1_000)
        .map_err(|_| BusError::Event("an event time outside the storable range".into()))?;
    let mut frame = Vec::with_capacity(25);
    frame.push(FRAME_IN_BRONZE);
    frame.extend_from_slice(tenant.as_uuid().as_bytes());
    frame.extend_from_slice(&micros.to_be_bytes());
    Ok(frame)
}

/// Frames as [`AppendTx::append`] takes them.
fn log_rows(frames: &[(u32, Uuid, Vec<u8>)]) -> Vec<(u32, Uuid, &[u8])> {
    frames
        .iter()
        .map(|(partition, id, frame)| (*partition, *id, frame.as_slice()))
        .collect()
}

/// Locks a mutex whose holders never panic while holding it (a poisoned one is still usable).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A row of the log, decoded.
#[derive(Debug)]
enum Frame {
    /// A message whose bytes the log holds.
    Message(Delivery),
    /// An event kept in bronze under `key` (tenant, event id, event time).
    InBronze {
        key: (TenantId, EventId, OffsetDateTime),
        partition: u32,
        position: u64,
    },
}

impl Frame {
    fn place(&self) -> (u32, u64) {
        match self {
            Frame::Message(delivery) => (delivery.partition, delivery.position),
            Frame::InBronze {
                partition,
                position,
                ..
            } => (*partition, *position),
        }
    }
}

fn decode(row: LogRow) -> Result<Frame, BusError> {
    let malformed = |reason| BusError::Malformed {
        partition: row.partition,
        position: row.position,
        reason,
    };
    let (version, rest) = row
        .message
        .split_first()
        .ok_or_else(|| malformed("empty frame"))?;
    let tenant: [u8; 16] = rest
        .get(..16)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed("frame shorter than its tenant id"))?;
    let tenant = TenantId::from_uuid(Uuid::from_bytes(tenant));
    let id = EventId::from_uuid(row.event_id);
    match *version {
        FRAME_V1 => Ok(Frame::Message(Delivery {
            message: Message {
                tenant,
                id,
                payload: Bytes::copy_from_slice(&rest[16..]),
            },
            partition: row.partition,
            position: row.position,
        })),
        FRAME_IN_BRONZE => {
            let micros: [u8; 8] = rest[16..]
                .try_into()
                .map_err(|_| malformed("a bronze frame is 25 bytes"))?;
            let event_time = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(i64::from_be_bytes(micros)) * 1_000,
            )
            .map_err(|_| malformed("an event time out of range"))?;
            Ok(Frame::InBronze {
                key: (tenant, id, event_time),
                partition: row.partition,
                position: row.position,
            })
        }
        _ => Err(malformed("unknown frame version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(partition: u32, position: u64) -> Delivery {
        Delivery {
            message: Message {
                tenant: TenantId::new_random(),
                id: EventId::from_uuid(Uuid::new_v4()),
                payload: Bytes::from_static(b"x"),
            },
            partition,
            position,
        }
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let message = Message {
            tenant: TenantId::new_random(),
            id: EventId::from_uuid(Uuid::new_v4()),
            payload: Bytes::from_static(b"{\"op\":\"insert\"}"),
        };
        let row = LogRow {
            partition: 3,
            position: 9,
            event_id: *message.id.as_uuid(),
            message: encode(&message),
        };
        let Frame::Message(delivery) = decode(row.clone()).unwrap() else {
            panic!("a message frame");
        };
        assert_eq!(delivery.message, message);
        assert_eq!((delivery.partition, delivery.position), (3, 9));

        // An event kept in bronze: its frame names its bronze key, to the microsecond.
        let event_time =
            OffsetDateTime::from_unix_timestamp_nanos(1_767_225_600_123_456_000).unwrap();
        let frame = encode_in_bronze(message.tenant, event_time).unwrap();
        assert_eq!(frame.len(), 25);
        let Frame::InBronze { key, .. } = decode(LogRow {
            message: frame.clone(),
            ..row.clone()
        })
        .unwrap() else {
            panic!("a bronze frame");
        };
        assert_eq!(key, (message.tenant, message.id, event_time));
        let truncated = decode(LogRow {
            message: frame[..24].to_vec(),
            ..row.clone()
        });
        assert!(
            matches!(truncated, Err(BusError::Malformed { .. })),
            "{truncated:?}"
        );

        for bad in [vec![], vec![2u8; 40], vec![1u8; 10]] {
            let error = decode(LogRow {
                message: bad,
                ..row.clone()
            })
            .unwrap_err();
            assert!(
                matches!(error, BusError::Malformed { position: 9, .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn the_checkpoint_stops_below_the_lowest_unacked_delivery() {
        let mut state = PartitionState::new(10);
        // Delivered 12, 15, 16 (positions have gaps where duplicates were skipped).
        for position in [12, 15, 16] {
            state.delivered_up_to = position;
            state.in_flight.insert(position);
        }
        assert_eq!(state.ackable_checkpoint(), 11);
        state.in_flight.remove(&16);
        assert_eq!(state.ackable_checkpoint(), 11, "12 is still unacked");
        state.in_flight.remove(&12);
        assert_eq!(state.ackable_checkpoint(), 14, "15 is still unacked");
        state.in_flight.remove(&15);
        assert_eq!(state.ackable_checkpoint(), 16);
    }

    #[test]
    fn an_event_gone_from_bronze_is_passed_over_as_if_acked() {
        let mut states = BTreeMap::new();
        let mut state = PartitionState::new(0);
        state.buffered.push_back(Buffered::Delivery(delivery(0, 1)));
        state.buffered.push_back(Buffered::Gone(2));
        state.buffered.push_back(Buffered::Delivery(delivery(0, 3)));
        state.buffered.push_back(Buffered::Gone(4));
        states.insert(0, state);
        let mut next_partition = 0;
        let batch = take_round_robin(&mut states, &mut next_partition, 10);
        let taken: Vec<u64> = batch.iter().map(|d| d.position).collect();
        assert_eq!(taken, vec![1, 3]);
        let state = states.get_mut(&0).unwrap();
        assert!(state.passed_over);
        assert_eq!(state.ackable_checkpoint(), 0, "1 is still unacked");
        state.in_flight.remove(&1);
        assert_eq!(state.ackable_checkpoint(), 2, "3 is still unacked");
        state.in_flight.remove(&3);
        assert_eq!(
            state.ackable_checkpoint(),
            4,
            "the trailing gone event is passed over"
        );
    }

    #[test]
    fn batches_take_round_robin_over_partitions() {
        let mut states = BTreeMap::new();
        for partition in 0..3 {
            let mut state = PartitionState::new(0);
            for position in 1..=3 {
                state
                    .buffered
                    .push_back(Buffered::Delivery(delivery(partition, position)));
            }
            states.insert(partition, state);
        }
        let mut next_partition = 0;
        let first = take_round_robin(&mut states, &mut next_partition, 4);
        let taken: Vec<(u32, u64)> = first.iter().map(|d| (d.partition, d.position)).collect();
        assert_eq!(taken, vec![(0, 1), (1, 1), (2, 1), (0, 2)]);
        let rest = take_round_robin(&mut states, &mut next_partition, 100);
        assert_eq!(rest.len(), 5);
        // Within each partition, order is kept.
        for partition in 0..3 {
            let positions: Vec<u64> = first
                .iter()
                .chain(&rest)
                .filter(|d| d.partition == partition)
                .map(|d| d.position)
                .collect();
            assert_eq!(positions, vec![1, 2, 3]);
        }
    }
}
