//! The bronze writer: every event from the bus into `bronze.cdc_events`, as is (already masked
//! at the edge), idempotent by event id, so a redelivered or re-sent event never adds a row.

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Consumer, Delivery};
use store::Database;
use store::bronze::BronzeRow;
use store::dlq::DeadLetter;

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
    database: Database,
    bus: B,
    config: BronzeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BronzeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut consumer = bus.consumer(GROUP, None).await?;
    // While one batch is written, the next is read: the database and the bus work at once.
    let mut written: Option<Vec<Delivery>> = None;
    loop {
        let next = match written.take() {
            None => {
                tokio::select! {
                    batch = consumer.next_batch(config.batch_size, config.wait) => batch,
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Some(deliveries) => {
                let (stored, next) = tokio::join!(
                    write_until_stored(&database, &deliveries, &mut shutdown),
                    consumer.next_batch(config.batch_size, config.wait),
                );
                if !stored {
                    return Ok(());
                }
                consumer.ack(&deliveries).await?;
                next
            }
        };
        match next {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(deliveries) => written = Some(deliveries),
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, "reading the bus failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Writes a batch, retrying until it is stored. The batch stays unacked until then: a consumer
/// that cannot write waits and tries again (its lag shows it) rather than dying or skipping
/// events. Returns false if `shutdown` came first (the batch is then left for redelivery).
async fn write_until_stored(
    database: &Database,
    deliveries: &[Delivery],
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match write(database, deliveries).await {
            Ok(_) => return true,
            Err(error) => {
                if error.is_retryable() {
                    tracing::warn!(%error, "writing bronze failed; retrying the batch");
                } else {
                    tracing::error!(error = %error, source = ?std::error::Error::source(&error),
                        "writing bronze failed for a reason that is not transient; retrying the batch");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.as_mut() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What writing a batch did besides storing: the events sent to the dead-letter queue.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    pub dead_lettered: Vec<domain::EventId>,
}

/// Writes one batch: all at once, or — when the database refuses the batch for a reason that is
/// not transient — event by event, sending the ones it refuses to their tenant's DLQ.
pub async fn write(
    database: &Database,
    deliveries: &[Delivery],
) -> Result<WriteOutcome, store::StoreError> {
    let mut outcome = WriteOutcome::default();
    let mut rows = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match decode(delivery) {
            Ok(row) => rows.push((row, delivery)),
            Err(reason) => {
                // Only a foreign writer on the bus could produce this; keep it, never drop it.
                tracing::error!(
                    partition = delivery.partition,
                    position = delivery.position,
                    "undecodable bus message sent to the dead-letter queue"
                );
                dead_letter(database, delivery, None, "undecodable_message", reason).await?;
                outcome.dead_lettered.push(delivery.message.id);
            }
        }
    }
    let batch: Vec<BronzeRow> = rows.iter().map(|(row, _)| row.clone()).collect();
    match store::bronze::insert(database, &batch).await {
        Ok(inserted) => {
            metrics::counter!("tributary_bronze_events_written_total").increment(inserted);
            metrics::counter!("tributary_bronze_events_duplicate_total")
                .increment(batch.len() as u64 - inserted);
            Ok(outcome)
        }
        Err(error) if error.is_retryable() => Err(error),
        Err(error) => {
            tracing::warn!(%error, events = rows.len(), "bronze refused a batch; writing its events one by one");
            for (row, delivery) in &rows {
                match store::bronze::insert(database, std::slice::from_ref(row)).await {
                    Ok(_) => {}
                    Err(error) if error.is_retryable() => return Err(error),
                    Err(error) => {
                        let reason = format!(
                            "the database refused the event (SQLSTATE {})",
                            error.sqlstate().unwrap_or_default()
                        );
                        dead_letter(
                            database,
                            delivery,
                            Some(row.source),
                            "bronze_rejected",
                            reason,
                        )
                        .await?;
                        outcome.dead_lettered.push(row.event_id);
                    }
                }
            }
            Ok(outcome)
        }
    }
}

async fn dead_letter(
    database: &Database,
    delivery: &Delivery,
    source: Option<domain::SourceId>,
    reason_code: &'static str,
    reason: String,
) -> Result<(), store::StoreError> {
    let payload = &delivery.message.payload;
    let letter = DeadLetter {
        tenant: delivery.message.tenant,
        consumer: GROUP,
        event_id: delivery.message.id,
        source: source.unwrap_or_else(|| domain::SourceId::from_uuid(uuid::Uuid::nil())),
        reason_code,
        reason,
        event: serde_json::from_slice(payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
        }),
        message: payload.to_vec(),
    };
    store::dlq::record(database, &letter).await?;
    metrics::counter!("tributary_dlq_events_total", "consumer" => GROUP, "reason" => reason_code)
        .increment(1);
    Ok(())
}

fn decode(delivery: &Delivery) -> Result<BronzeRow, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    if envelope.tenant_id != delivery.message.tenant {
        return Err("the envelope names another tenant than the bus message".into());
    }
    let event = &envelope.event;
    // PostgreSQL keeps microseconds; truncating here (rather than letting each write path round
    // or truncate its own way) keeps (tenant, event id, event time) one key whatever the path.
    let event_time = event
        .event_time
        .replace_nanosecond(event.event_time.nanosecond() / 1_000 * 1_000)
        .map_err(|error| error.to_string())?;
    Ok(BronzeRow {
        tenant: envelope.tenant_id,
        event_id: event.event_id,
        event_time,
        source: envelope.source_id,
        op: event.op.as_str().to_owned(),
        schema_name: event.schema.clone(),
        table_name: event.table.clone(),
        lsn: i64::try_from(event.lsn.0).map_err(|_| "LSN beyond 2^63".to_owned())?,
        seq: i32::try_from(event.seq).map_err(|_| "sequence beyond 2^31".to_owned())?,
        xid: event.xid.and_then(|xid| i64::try_from(xid).ok()),
        payload: bronze_payload(event)?,
    })
}

/// What bronze keeps of an event beyond its columns: its row images, and the unchanged columns
/// and source types when it has them.
fn bronze_payload(event: &protocol::ChangeEvent) -> Result<String, String> {
    let mut payload = serde_json::json!({
        "key": event.key,
        "after": event.after,
        "before": event.before,
    });
    if !event.unchanged.is_empty() {
        payload["unchanged"] = serde_json::json!(event.unchanged);
    }
    if !event.types.is_empty() {
        payload["types"] = serde_json::json!(event.types);
    }
    serde_json::to_string(&payload).map_err(|error| error.to_string())
}

/// The envelope of an event read back from bronze: the inverse of what the writer stores.
pub fn envelope_of(
    row: &BronzeRow,
    replay: Option<uuid::Uuid>,
) -> Result<protocol::Envelope, String> {
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(|error| error.to_string())?;
    let object = |field: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        payload
            .get(field)
            .and_then(|value| value.as_object())
            .cloned()
    };
    Ok(protocol::Envelope {
        tenant_id: row.tenant,
        source_id: row.source,
        event: protocol::ChangeEvent {
            event_id: row.event_id,
            op: row
                .op
                .parse()
                .map_err(|_| format!("unknown op {:?}", row.op))?,
            schema: row.schema_name.clone(),
            table: row.table_name.clone(),
            lsn: domain::Lsn(u64::try_from(row.lsn).map_err(|_| "negative LSN".to_owned())?),
            seq: u32::try_from(row.seq).map_err(|_| "negative sequence".to_owned())?,
            xid: row.xid.and_then(|xid| u64::try_from(xid).ok()),
            event_time: row.event_time,
            key: object("key").unwrap_or_default(),
            after: object("after"),
            before: object("before"),
            unchanged: payload
                .get("unchanged")
                .and_then(|value| serde_json::from_value(value.clone()).ok())
                .unwrap_or_default(),
            types: payload
                .get("types")
                .and_then(|value| serde_json::from_value(value.clone()).ok())
                .unwrap_or_default(),
        },
        replay,
    })
}
