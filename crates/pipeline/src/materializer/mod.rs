//! The tenant materializer: every event from the bus into the tenant read models
//! (`analytics.sites/devices/sessions`, typed extras, `metrics_min`), by the tenant's mapping,
//! as the service role. Applying is idempotent and order-independent (see [`state`]), so
//! redelivery, duplicates and replays converge; events it cannot apply go to the tenant's DLQ
//! with a reason code. [`rebuild`] re-materializes a tenant from bronze. It decodes and applies;
//! the consumer runner ([`crate::runner`]) does the rest. docs/materializer.md.

mod batch;
mod decode;
pub mod mapping;
pub mod state;

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Delivery};
use bytes::Bytes;
use domain::TenantId;
use store::ServiceDb;
use store::service::read_models::MaterializeTx;

use crate::runner::{self, Applier, BatchOutcome, Prepared, Refusal};
use batch::{Work, apply_in};

/// The materializer's consumer group.
pub const GROUP: &str = "materializer";

/// Reason codes of the materializer's dead letters.
pub mod reason {
    /// The bus message is not an event envelope.
    pub const UNDECODABLE: &str = "undecodable_message";
    /// The stored mapping is invalid, or two of the event's columns feed one typed column.
    pub const MAPPING_CONFLICT: &str = "mapping_conflict";
    /// The event lacks the entity id (or it is not a string or integer of 1 to 500 characters).
    pub const MISSING_KEY: &str = "missing_key";
    /// A value cannot be converted to the type of the typed column it feeds.
    pub const UNCOERCIBLE_TYPE: &str = "uncoercible_type";
    /// A reading lacks its entity, metric key, value or time.
    pub const INVALID_READING: &str = "invalid_reading";
    /// A field name is empty or longer than 500 characters, or a value holds a NUL character
    /// (PostgreSQL text cannot).
    pub const UNSTORABLE_FIELD: &str = "unstorable_field";
    /// The database refused the event alone.
    pub const REJECTED: &str = "materializer_rejected";
}

/// How the materializer batches.
#[derive(Debug, Clone)]
pub struct MaterializerConfig {
    pub batch_size: usize,
    pub wait: Duration,
}

impl Default for MaterializerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            wait: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MaterializerError {
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("a stored event cannot be read back: {0}")]
    Corrupt(String),
}

/// Consumes until `shutdown`; a batch in flight when it fires is finished and acked, or left
/// unacked to be redelivered, never half-applied.
pub async fn run<B: Bus>(
    database: ServiceDb,
    bus: B,
    config: MaterializerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MaterializerError> {
    let batching = runner::Batching {
        batch_size: config.batch_size,
        wait: config.wait,
    };
    runner::run(&bus, &Materializer::new(&database), batching, shutdown).await?;
    Ok(())
}

/// What applying a batch did.
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: Vec<domain::EventId>,
}

/// Applies one batch, in two transactions of whole tenants at once; events it cannot apply go to
/// their tenant's DLQ (after the transactions commit), the batch's other events are applied.
pub async fn apply(
    database: &ServiceDb,
    deliveries: &[Delivery],
) -> Result<ApplyOutcome, store::StoreError> {
    let outcome = runner::apply_batch(&Materializer::new(database), deliveries).await?;
    Ok(ApplyOutcome {
        applied: outcome.applied,
        skipped: outcome.skipped,
        dead_lettered: outcome.dead_lettered,
    })
}

/// The materializer as the runner drives it: a batch's events are decoded and checked against
/// their tenants' mappings, then applied with a few set-based statements per transaction.
pub(crate) struct Materializer<'a> {
    database: &'a ServiceDb,
}

impl<'a> Materializer<'a> {
    pub(crate) fn new(database: &'a ServiceDb) -> Self {
        Self { database }
    }
}

impl Applier for Materializer<'_> {
    type Work = Work;

    const GROUP: &'static str = GROUP;
    const REJECTED: &'static str = reason::REJECTED;
    // The next batch is read and decoded while this one is written: order-independent applying
    // allows it (see `runner::Applier`).
    const READ_AHEAD: bool = true;
    // A batch's time is almost all spent in the database, statement after statement; a second
    // transaction of other tenants puts a second database core to work (docs/materializer.md).
    const TRANSACTIONS: usize = 2;

    fn database(&self) -> &ServiceDb {
        self.database
    }

    async fn prepare(&self, deliveries: &[Delivery]) -> Result<Prepared<Work>, store::StoreError> {
        let mut undecodable = Vec::new();
        let mut envelopes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match decode::decode(delivery) {
                Ok(envelope) => envelopes.push((envelope, delivery.message.payload.clone())),
                Err(reason) => undecodable.push(Refusal::undecodable(delivery, reason)),
            }
        }
        let mut prepared = decode::prepare_all(self.database, envelopes).await?;
        undecodable.append(&mut prepared.refused);
        prepared.refused = undecodable;
        Ok(prepared)
    }

    async fn apply(&self, works: &[Work]) -> Result<(), store::StoreError> {
        let tenants: Vec<TenantId> = works.iter().map(Work::tenant).collect();
        let mut tx = MaterializeTx::begin(self.database, &tenants).await?;
        apply_in(&mut tx, works).await?;
        tx.commit().await
    }

    fn count(&self, outcome: &BatchOutcome) {
        metrics::counter!("tributary_materializer_events_total", "outcome" => "applied")
            .increment(outcome.applied);
        metrics::counter!("tributary_materializer_events_total", "outcome" => "skipped")
            .increment(outcome.skipped);
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub events: i64,
    pub dead_lettered: i64,
}

/// Re-materializes `tenant` from bronze in one transaction: its read models are deleted and
/// every bronze event applied again, so readers see the old models until the new ones are
/// complete. Other tenants' rows are not touched; their consumers only wait for this tenant's
/// lock if they have events of it.
pub async fn rebuild(
    database: &ServiceDb,
    tenant: TenantId,
) -> Result<RebuildOutcome, MaterializerError> {
    const PAGE: i64 = 2000;
    let from = time::OffsetDateTime::UNIX_EPOCH;
    let to = time::OffsetDateTime::now_utc() + time::Duration::days(36_500);
    let mut outcome = RebuildOutcome::default();
    let mut refused = Vec::new();
    let mut tx = MaterializeTx::begin(database, &[tenant]).await?;
    tx.clear_tenant(tenant).await?;
    let mut after = None;
    loop {
        let rows = store::service::bronze::events_in_range(database, tenant, from, to, after, PAGE)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some((last.event_time, last.event_id));
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in &rows {
            let envelope =
                crate::bronze::envelope_of(row, None).map_err(MaterializerError::Corrupt)?;
            let message = serde_json::to_vec(&envelope)
                .map_err(|error| MaterializerError::Corrupt(error.to_string()))?;
            envelopes.push((envelope, Bytes::from(message)));
        }
        outcome.events += envelopes.len() as i64;
        let prepared = decode::prepare_all(database, envelopes).await?;
        refused.extend(prepared.refused);
        apply_in(&mut tx, &prepared.works).await?;
    }
    tx.commit().await?;
    outcome.dead_lettered = refused.len() as i64;
    for refusal in refused {
        runner::dead_letter(database, GROUP, refusal).await?;
    }
    tracing::info!(tenant = %tenant, events = outcome.events,
        dead_lettered = outcome.dead_lettered, "rebuild finished");
    Ok(outcome)
}
