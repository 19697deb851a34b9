//! The one loop every bus consumer of the pipeline runs: reading (ahead, when the consumer
//! wants it), retrying with backoff, shutting down between batches, applying a batch whole and
//! then event by event, dead letters, and acknowledging. A consumer brings only its decoding and
//! applying, as an [`Applier`].

mod batch;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bus::{Bus, BusError, Consumer, Delivery};
use domain::{EventId, SourceId, TenantId};
use store::ServiceDb;
use tracing::Instrument;

pub use batch::{BatchOutcome, apply_batch, dead_letter};

/// What a consumer of the bus does with a batch: decode and check it ([`Applier::prepare`]),
/// and apply what it prepared ([`Applier::apply`]). [`run`] does the rest.
///
/// The contract the runner relies on, which every implementation keeps:
///
/// - **Idempotent by event id.** Applying an event again gives the state of applying it once.
///   Delivery is at-least-once, and a batch whose transaction committed but whose ack was lost
///   (a crash, a failed ack) is delivered again whole, to this consumer or to the next one.
/// - **Order-independent.** Events may be applied in any order across batches: a redelivered
///   batch comes after later ones, a replay long after, and with read-ahead the next batch is
///   already read while this one is applied.
/// - **All or nothing per call.** [`Applier::apply`] commits every work it is given in one
///   transaction, or none: the runner retries a failed call as is, or calls it once per work to
///   find the ones the database refuses alone.
/// - **Acknowledged only once durable.** The runner acks a batch only after every `apply` call
///   committed and the batch's dead letters are recorded; until then it stays unacked and is
///   delivered again after a crash.
pub trait Applier: Send + Sync {
    /// One event, decoded and checked, ready to apply.
    type Work: Send + Sync;

    /// The consumer group on the bus; also the consumer's name in the DLQ, metrics and logs.
    const GROUP: &'static str;

    /// The reason code of an event the database refused alone.
    const REJECTED: &'static str;

    /// Whether the next batch is read from the bus while this one is applied.
    const READ_AHEAD: bool;

    /// How many transactions a batch's works are applied in at once, each holding whole tenants
    /// (see [`batch::split_by_tenant`]).
    const TRANSACTIONS: usize;

    /// The database dead letters are recorded in.
    fn database(&self) -> &ServiceDb;

    /// Decodes and checks a batch. Events that can never be applied come back as refusals (the
    /// runner records them as dead letters), never as an error: an error means the batch could
    /// not be prepared now and is tried again.
    fn prepare(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<Prepared<Self::Work>, store::StoreError>> + Send;

    /// Applies `works` in one transaction: all of them, or none.
    fn apply(
        &self,
        works: &[Self::Work],
    ) -> impl Future<Output = Result<(), store::StoreError>> + Send;

    /// Counts what a batch applied, once its works committed (before its dead letters are
    /// recorded).
    fn count(&self, outcome: &BatchOutcome) {
        let _ = outcome;
    }
}

/// Where a work came from: what its dead letter names, should the database refuse it alone.
#[derive(Debug, Clone)]
pub struct Origin {
    pub tenant: TenantId,
    pub source: SourceId,
    pub event_id: EventId,
    /// The exact bus message, which a replay of the dead letter re-drives.
    pub message: bytes::Bytes,
}

impl Origin {
    /// The refusal of this origin's event, for `reason_code` and `reason`.
    pub fn refused(self, reason_code: &'static str, reason: String) -> Refusal {
        Refusal {
            tenant: self.tenant,
            event_id: self.event_id,
            source: Some(self.source),
            reason_code,
            reason,
            message: self.message,
        }
    }
}

/// An event a consumer cannot apply, to record in its tenant's DLQ.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub tenant: TenantId,
    pub event_id: EventId,
    /// `None` when the message could not be decoded far enough to say.
    pub source: Option<SourceId>,
    pub reason_code: &'static str,
    /// Names columns and types, never a customer's value.
    pub reason: String,
    pub message: bytes::Bytes,
}

impl Refusal {
    /// A bus message that is not an event of its tenant (only a foreign writer on the bus could
    /// produce one; it is kept, never dropped).
    pub fn undecodable(delivery: &Delivery, reason: String) -> Self {
        Self {
            tenant: delivery.message.tenant,
            event_id: delivery.message.id,
            source: None,
            reason_code: "undecodable_message",
            reason,
            message: delivery.message.payload.clone(),
        }
    }
}

/// A batch prepared by an [`Applier`]: the works to apply with their origins (in the same
/// order), the events refused, and how many had nothing to apply.
#[derive(Debug)]
pub struct Prepared<W> {
    pub works: Vec<W>,
    pub origins: Vec<Origin>,
    pub refused: Vec<Refusal>,
    pub skipped: u64,
}

impl<W> Prepared<W> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            works: Vec::with_capacity(capacity),
            origins: Vec::with_capacity(capacity),
            refused: Vec::new(),
            skipped: 0,
        }
    }

    pub fn push(&mut self, work: W, origin: Origin) {
        self.works.push(work);
        self.origins.push(origin);
    }
}

/// How a consumer reads the bus.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// The most deliveries in one batch.
    pub batch_size: usize,
    /// How long to wait for the first delivery of a batch.
    pub wait: Duration,
}

/// How long to wait before reading again after the bus failed transiently.
const READ_RETRY: Duration = Duration::from_millis(500);

/// Consumes `applier`'s group of `bus` until `shutdown`. A batch in flight when it fires is
/// finished and acked, or left unacked to be redelivered, never half-applied. Returns an error
/// only if the bus fails in a way retrying cannot fix (or an ack fails): the caller restarts it.
pub async fn run<B: Bus, A: Applier>(
    bus: &B,
    applier: &A,
    batching: Batching,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut consumer = bus.consumer(A::GROUP, None).await?;
    let mut in_hand: Option<Vec<Delivery>> = None;
    loop {
        let next = match in_hand.take() {
            None => {
                tokio::select! {
                    batch = consumer.next_batch(batching.batch_size, batching.wait) => batch,
                    _ = &mut shutdown => return Ok(()),
                }
            }
            // While one batch is applied, the next is read: the database and the bus work at
            // once.
            Some(deliveries) if A::READ_AHEAD => {
                let span = batch_span(A::GROUP, &deliveries);
                let (applied, next) = tokio::join!(
                    apply_until_done(applier, &deliveries, &mut shutdown).instrument(span.clone()),
                    consumer.next_batch(batching.batch_size, batching.wait),
                );
                if !applied {
                    return Ok(());
                }
                consumer.ack(&deliveries).instrument(span).await?;
                next
            }
            Some(deliveries) => {
                let span = batch_span(A::GROUP, &deliveries);
                if !apply_until_done(applier, &deliveries, &mut shutdown)
                    .instrument(span.clone())
                    .await
                {
                    return Ok(());
                }
                consumer.ack(&deliveries).instrument(span).await?;
                continue;
            }
        };
        match next {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(deliveries) => in_hand = Some(deliveries),
            Err(error) if error.is_retryable() => {
                tracing::warn!(consumer = A::GROUP, %error, "reading the bus failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(READ_RETRY) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The span a delivered batch is applied and acked in: the consumer, the batch's first event id
/// (`batch`) and size. The tenants and sources it holds are logged inside it (see
/// [`apply_batch`]); never a customer value.
fn batch_span(group: &'static str, deliveries: &[Delivery]) -> tracing::Span {
    tracing::info_span!(
        "consumer_batch",
        consumer = group,
        batch = deliveries
            .first()
            .map(|delivery| tracing::field::display(delivery.message.id)),
        events = deliveries.len(),
    )
}

/// Applies a batch, retrying with backoff until it is done. The batch stays unacked until then:
/// a consumer that cannot write waits and tries again (its lag shows it) rather than dying or
/// skipping events. Returns false if `shutdown` came first (the batch is then left unacked for
/// redelivery).
async fn apply_until_done<A: Applier>(
    applier: &A,
    deliveries: &[Delivery],
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut backoff = domain::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match apply_batch(applier, deliveries).await {
            Ok(_) => return true,
            Err(error) => {
                if error.is_retryable() {
                    tracing::warn!(consumer = A::GROUP, %error, "applying a batch failed; retrying it");
                } else {
                    tracing::error!(consumer = A::GROUP, %error,
                        source = ?std::error::Error::source(&error),
                        "applying a batch failed for a reason that is not transient; retrying it");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next()) => {}
                    _ = shutdown.as_mut() => return false,
                }
            }
        }
    }
}
