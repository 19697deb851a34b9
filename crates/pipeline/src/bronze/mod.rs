//! The bronze writer: every event from the bus into `bronze.cdc_events`, as is (already masked
//! at the edge), idempotent by event id, so a redelivered or re-sent event never adds a row.
//! It decodes and inserts; the consumer runner ([`crate::runner`]) does the rest.

mod decode;

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Delivery};
use store::ServiceDb;
use store::service::bronze::BronzeRow;

use crate::runner::{self, Applier, Origin, Prepared, Refusal};

pub use bus::bronze::envelope_of;

/// The bronze writer's consumer group.
pub const GROUP: &str = "bronze";

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct BronzeConfig {
    pub batch_size: usize,
    pub wait: Duration,
}

impl Default for BronzeConfig {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            wait: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BronzeError {
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Consumes until `shutdown`; a batch in flight when it fires is finished and acked, or left
/// unacked to be redelivered, never half-applied.
pub async fn run<B: Bus>(
    database: ServiceDb,
    bus: B,
    config: BronzeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BronzeError> {
    let batching = runner::Batching {
        batch_size: config.batch_size,
        wait: config.wait,
    };
    runner::run(&bus, &BronzeWriter::new(&database), batching, shutdown).await?;
    Ok(())
}

/// The bronze writer on a bus that keeps bronze itself (the embedded bus, whose edge writes
/// bronze in the transaction that acks: [`bus::Bus::publish_events`]): it only drains what was
/// appended, before there was such a bus, for a writer to store — everything up to the log's
/// head when this starts — and then forgets its consumer group, so that the group no longer
/// holds back the log's pruning or shows as lag. Returns at once when there is nothing to
/// drain; returns early, leaving the group, when `shutdown` completes first.
pub async fn drain(
    database: ServiceDb,
    bus: bus::EmbeddedBus,
    config: BronzeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BronzeError> {
    let heads = bus.heads().await?;
    if !bus.has_consumed(GROUP, &heads).await? {
        tracing::info!("draining what the bus log holds for the bronze writer");
        let drained = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match bus.has_consumed(GROUP, &heads).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "reading the bronze writer's progress failed")
                    }
                }
            }
        };
        let stop = async {
            tokio::select! {
                () = shutdown => {}
                () = drained => {}
            }
        };
        run(database, bus.clone(), config, stop).await?;
        if !bus.has_consumed(GROUP, &heads).await? {
            return Ok(());
        }
        tracing::info!("the bronze writer's backlog is drained");
    }
    bus.forget_group(GROUP).await?;
    Ok(())
}

/// What writing a batch did besides storing: the events sent to the dead-letter queue.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    pub dead_lettered: Vec<domain::EventId>,
}

/// Writes one batch: all at once, or — when the database refuses the batch for a reason that is
/// not transient — event by event, sending the ones it refuses to their tenant's DLQ.
pub async fn write(
    database: &ServiceDb,
    deliveries: &[Delivery],
) -> Result<WriteOutcome, store::StoreError> {
    let outcome = runner::apply_batch(&BronzeWriter::new(database), deliveries).await?;
    Ok(WriteOutcome {
        dead_lettered: outcome.dead_lettered,
    })
}

/// The bronze writer as the runner drives it: a batch's events are decoded into rows and
/// inserted with one statement.
pub(crate) struct BronzeWriter<'a> {
    database: &'a ServiceDb,
}

impl<'a> BronzeWriter<'a> {
    pub(crate) fn new(database: &'a ServiceDb) -> Self {
        Self { database }
    }
}

impl Applier for BronzeWriter<'_> {
    type Work = BronzeRow;

    const GROUP: &'static str = GROUP;
    const REJECTED: &'static str = "bronze_rejected";
    // While one batch is written, the next is read: the database and the bus work at once.
    const READ_AHEAD: bool = true;
    const TRANSACTIONS: usize = 1;

    fn database(&self) -> &ServiceDb {
        self.database
    }

    async fn prepare(
        &self,
        deliveries: &[Delivery],
    ) -> Result<Prepared<BronzeRow>, store::StoreError> {
        let mut prepared = Prepared::with_capacity(deliveries.len());
        for delivery in deliveries {
            match decode::decode(delivery) {
                Ok(row) => {
                    let origin = Origin {
                        tenant: row.tenant,
                        source: row.source,
                        event_id: row.event_id,
                        message: delivery.message.payload.clone(),
                    };
                    prepared.push(row, origin);
                }
                Err(reason) => {
                    // Only a foreign writer on the bus could produce this; keep it, never drop it.
                    tracing::error!(
                        partition = delivery.partition,
                        position = delivery.position,
                        "undecodable bus message sent to the dead-letter queue"
                    );
                    prepared
                        .refused
                        .push(Refusal::undecodable(delivery, reason));
                }
            }
        }
        Ok(prepared)
    }

    async fn apply(&self, rows: &[BronzeRow]) -> Result<(), store::StoreError> {
        let inserted = store::service::bronze::insert(self.database, rows).await?;
        metrics::counter!("tributary_bronze_events_written_total").increment(inserted);
        metrics::counter!("tributary_bronze_events_duplicate_total")
            .increment(rows.len() as u64 - inserted);
        Ok(())
    }
}
